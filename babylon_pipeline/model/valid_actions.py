"""Does the model write actions the game can read? Sampled on observations it was not trained on.

An answer is valid when the simulator's own parser reads an action out of it (`parse_response`),
exactly the rule a simulated step applies; an answer cut off by `max_new_tokens` counts as what
it is, usually invalid. A valid answer is grounded when it names at least one market, ticker or post
and every one it names is a whole token of the observation (a trade on an invented id parses but the
game rejects it). A HOLD or a post names nothing, so it is valid but not grounded: a policy that only
holds is not "100 % grounded".
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from babylon_pipeline.model.sampling import prompt_ids, sample_completions
from babylon_pipeline.model.transcripts import Turn
from babylon_pipeline.sim.actions import ParsedAction, parse_response


@dataclass(frozen=True)
class ActionCheck:
    sampled: int
    valid: int
    grounded: int
    by_action: dict[str, int] = field(default_factory=dict)  # valid answers by action type
    example: str = ""  # the first valid answer, for people to look at

    @property
    def valid_share(self) -> float:
        return self.valid / self.sampled if self.sampled else 0.0

    @property
    def grounded_share(self) -> float:
        return self.grounded / self.sampled if self.sampled else 0.0


REFERENCES = ("marketId", "ticker", "postId")
# A token is a run of word characters, joined by single '-', ':', '.' or ',' between two of them: the hour
# `2025-11-15T09:00`, a price `13.44` or `$1,000.00` is one token, so an invented id `09`, `13` or `000` is not
# shown by it, while `[M1]`, `[386260166249431684]`, `- NVDA (` and `(reply to P7)` show theirs (not `M` or `P`).
_WORD, _JOIN = "A-Za-z0-9_", "-:.,"
_TOKEN_START = rf"(?<![{_WORD}])(?<![{_WORD}][{_JOIN}])"
_TOKEN_END = rf"(?![{_WORD}])(?![{_JOIN}][{_WORD}])"


def is_grounded(action: ParsedAction, observation: str) -> bool:
    """Names at least one market, ticker or post, and each is a whole token of the observation."""
    named = [str(action.parameters[key]) for key in REFERENCES if key in action.parameters]
    return bool(named) and all(re.search(_TOKEN_START + re.escape(ref) + _TOKEN_END, observation) for ref in named)


def check_actions(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, held_out: Sequence[Turn], *,
                  max_prompt_tokens: int, max_new_tokens: int, temperature: float = 1.0, batch_size: int = 16,
                  seed: int = 0) -> ActionCheck:
    torch.manual_seed(seed)
    kinds: Counter[str] = Counter()
    sampled = grounded = 0
    example = ""
    for start in range(0, len(held_out), batch_size):
        chunk = held_out[start : start + batch_size]
        prompts = [prompt_ids(tokenizer, t.system, t.user, max_prompt_tokens) for t in chunk]
        completions = sample_completions(model, tokenizer, prompts, temperature=temperature,
                                         max_new_tokens=max_new_tokens)
        for turn, completion in zip(chunk, completions, strict=True):
            parsed = parse_response(completion.text)
            sampled += 1
            if isinstance(parsed, ParsedAction):
                kinds[parsed.action_type] += 1
                grounded += is_grounded(parsed, turn.user)
                example = example or completion.text
    return ActionCheck(sampled=sampled, valid=sum(kinds.values()), grounded=grounded,
                       by_action=dict(sorted(kinds.items())), example=example)
