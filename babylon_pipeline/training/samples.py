"""Training samples: every assistant turn, tokenised in the context the agent saw when it produced it.

- Context. The simulator's agents (and Babylon's runtime) see the system prompt plus the current
  observation on every tick, so a turn's context is [latest system message, the user message just
  before it]. Earlier turns of the trajectory are NOT context: they were never in the prompt. A
  production agent that did send a multi-turn history is recorded with its last user prompt only
  (the ART export keeps `userPrompt`), so it is trained in that shortened context too; anything
  else before a Choice (assistant or tool messages) is ignored. Only Choices are trained (ART's rule).
- Tokens. A Choice whose logprobs carry `token_id:<id>` is trained on exactly those ids (what was
  sampled, whatever re-tokenising the text would give) after the prompt rendered with
  `add_generation_prompt=True`; the end marker is appended when the recording lacks it. Otherwise
  the turn is rendered by the chat template and split with its assistant mask.
- Behaviour log-probs. Recorded logprobs are π_old only for token-id recordings sampled at
  temperature 1 without top-p (the trajectory's metadata says how it was sampled; see
  TRAINING_NOTES). A token without one (an appended end marker, or any token of an unusable
  recording) gets NaN, which the loss reads as "ratio 1".
- Length. A prompt keeps the end the sampling policy fed its model (`max_prompt_tokens`, the local
  policy's room: `model.prompt_room`), so each answer is trained in the context it was sampled in and
  its recorded log-probs are those of what is trained. Over `max_seq_len`, the prompt loses more of its
  start and the completion is kept, but an appended end marker (never sampled) goes first; a
  completion that alone does not fit keeps its first tokens (each kept token's log-prob is then
  exact). Counted apart: prompts trimmed (their start dropped, to the room or to fit) and completions
  cut (answers trained on only in part, which the run warns about).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedTokenizerBase

from babylon_pipeline.art.groups import sampled_from_the_policy_itself
from babylon_pipeline.art.turns import is_choice
from babylon_pipeline.model.prompt_room import keep_end
from babylon_pipeline.training.advantages import group_advantages
from babylon_pipeline.training.batch import BatchFormatError
from babylon_pipeline.training.request import GRPOSettings

TOKEN_ID_PREFIX = "token_id:"
NO_LOGPROB = math.nan


@dataclass(frozen=True)
class Sample:
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    behaviour_logprobs: tuple[float, ...]  # one per completion token; NaN where there is none
    advantage: float
    trajectory_id: str
    prompt_tokens_dropped: int  # from the prompt's start
    completion_tokens_cut: int  # from the completion's end


@dataclass(frozen=True)
class SampleCounts:
    groups: int
    trajectories: int
    samples: int
    turns_with_recorded_ids: int
    turns_with_behaviour_logprobs: int
    prompts_trimmed: int  # samples whose prompt lost its start
    prompt_tokens_dropped: int
    completions_cut: int  # samples whose completion lost its end
    completion_tokens_cut: int
    tokens: int  # prompt + completion tokens over all samples
    completion_tokens: int


class ChatEncoder:
    """The tokenizer's chat template, turned into (prompt ids, completion ids) pairs."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.end_id = self.encode_turn([{"role": "user", "content": "?"}], "!")[1][-1]

    def encode_turn(self, context: list[dict[str, str]], content: str) -> tuple[list[int], list[int]]:
        chat = [*context, {"role": "assistant", "content": content}]
        out = self.tokenizer.apply_chat_template(chat, return_assistant_tokens_mask=True, return_dict=True)
        marked = [i for i, flag in enumerate(out["assistant_masks"]) if flag]
        if not marked:
            raise ValueError("the chat template marks no assistant tokens: it needs {% generation %} markers")
        ids = list(out["input_ids"])
        return ids[: marked[0]], ids[marked[0] : marked[-1] + 1]

    def encode_prompt(self, context: list[dict[str, str]]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(context, add_generation_prompt=True, return_dict=True)["input_ids"])


def build_samples(
    groups: list[dict[str, Any]], encoder: ChatEncoder, settings: GRPOSettings
) -> tuple[list[Sample], SampleCounts]:
    samples: list[Sample] = []
    with_ids = with_behaviour = trajectories = 0
    for group in groups:
        members = group["trajectories"]
        trajectories += len(members)
        for trajectory, advantage in zip(members, group_advantages([t["reward"] for t in members]), strict=True):
            usable = behaviour_logprobs_usable(trajectory.get("metadata", {}), settings)
            tid = str(trajectory.get("metadata", {}).get("trajectory_id", ""))
            for context, choice in _turns(trajectory["messages_and_choices"], tid):
                prompt, completion, behaviour, appended = _encode(encoder, context, choice, usable)
                with_ids += _recorded(choice) is not None
                with_behaviour += any(not math.isnan(value) for value in behaviour)
                samples.append(_fit(prompt, completion, behaviour, appended, advantage, tid, settings))
    counts = SampleCounts(
        groups=len(groups),
        trajectories=trajectories,
        samples=len(samples),
        turns_with_recorded_ids=with_ids,
        turns_with_behaviour_logprobs=with_behaviour,
        prompts_trimmed=sum(s.prompt_tokens_dropped > 0 for s in samples),
        prompt_tokens_dropped=sum(s.prompt_tokens_dropped for s in samples),
        completions_cut=sum(s.completion_tokens_cut > 0 for s in samples),
        completion_tokens_cut=sum(s.completion_tokens_cut for s in samples),
        tokens=sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples),
        completion_tokens=sum(len(s.completion_ids) for s in samples),
    )
    return samples, counts


def behaviour_logprobs_usable(metadata: Mapping[str, Any], settings: GRPOSettings) -> bool:
    """π_old must be this policy's own sampling distribution: temperature 1, no nucleus cut."""
    if not settings.use_behaviour_logprobs:
        return False
    unmodified = sampled_from_the_policy_itself(metadata)
    return settings.trust_logprobs_without_temperature if unmodified is None else unmodified


def _turns(items: list[Any], trajectory_id: str) -> Iterator[tuple[list[dict[str, str]], dict[str, Any]]]:
    system = user = None
    for item in items:
        if not isinstance(item, dict):
            raise BatchFormatError(f"trajectory {trajectory_id}: a turn is not an object: {item!r:.80}")
        if is_choice(item):
            yield [_message(m, trajectory_id) for m in (system, user) if m is not None], item
        elif item.get("role") == "system":
            system = item
        elif item.get("role") == "user":
            user = item


def _message(message: dict[str, Any], trajectory_id: str) -> dict[str, str]:
    content = message.get("content")
    if not isinstance(content, str):
        raise BatchFormatError(f"trajectory {trajectory_id}: {message.get('role')} content must be text")
    return {"role": message["role"], "content": content}


def _encode(
    encoder: ChatEncoder, context: list[dict[str, str]], choice: dict[str, Any], usable: bool
) -> tuple[list[int], list[int], list[float], bool]:
    """Prompt ids, completion ids, behaviour log-probs, and whether the end marker was appended."""
    recorded = _recorded(choice)
    if recorded is None:
        prompt, completion = encoder.encode_turn(context, (choice.get("message") or {}).get("content") or "")
        return prompt, completion, [NO_LOGPROB] * len(completion), False
    ids, logprobs = recorded
    if any(not 0 <= token < encoder.vocab_size for token in ids):
        raise BatchFormatError(f"recorded token ids outside this tokenizer's vocabulary of {encoder.vocab_size}")
    behaviour = logprobs if usable else [NO_LOGPROB] * len(ids)
    appended = not ids or ids[-1] != encoder.end_id
    if appended:
        ids, behaviour = [*ids, encoder.end_id], [*behaviour, NO_LOGPROB]
    return encoder.encode_prompt(context), ids, behaviour, appended


def _recorded(choice: dict[str, Any]) -> tuple[list[int], list[float]] | None:
    """The sampled token ids and their logprobs, when every token was recorded as `token_id:<id>`."""
    tokens = (choice.get("logprobs") or {}).get("content") or []
    texts = [token.get("token") if isinstance(token, dict) else None for token in tokens]
    if not tokens or not all(isinstance(t, str) and t.startswith(TOKEN_ID_PREFIX) for t in texts):
        return None
    try:
        ids = [int(text[len(TOKEN_ID_PREFIX) :]) for text in texts]
    except ValueError:
        return None
    return ids, [_logprob(token.get("logprob")) for token in tokens]


def _logprob(value: object) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value <= 0
    return float(value) if ok else NO_LOGPROB  # type: ignore[arg-type]


def _fit(prompt: list[int], completion: list[int], behaviour: list[float], appended: bool, advantage: float,
         trajectory_id: str, settings: GRPOSettings) -> Sample:
    max_len = settings.max_seq_len
    seen = keep_end(prompt, settings.max_prompt_tokens)  # what the policy fed its model
    if appended and len(seen) + len(completion) > max_len:  # a token never sampled costs none that was seen
        completion, behaviour = completion[:-1], behaviour[:-1]
    keep = max_len - 1  # at least one prompt token predicts the first completion token
    cut = max(0, len(completion) - keep)
    completion, behaviour = completion[:keep], behaviour[:keep]
    kept = keep_end(seen, max_len - len(completion))
    return Sample(tuple(kept), tuple(completion), tuple(behaviour), advantage, trajectory_id, len(prompt) - len(kept),
                  cut)
