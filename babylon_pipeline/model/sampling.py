"""Sampling completions from a causal LM with the log-prob of every sampled token.

The log-probs are those of the distribution each token was drawn from: log_softmax(logits / T)
over the whole vocabulary (top-k and top-p switched off, which `generate` would otherwise apply by
default), so at T = 1 they are the policy's own and the trainer may use them as behaviour
log-probs. Prompts longer than the policy's room keep their end (`prompt_room`, the rule the trainer
cuts its samples' prompts with).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from babylon_pipeline.model.prompt_room import keep_end


@dataclass(frozen=True)
class Completion:
    text: str  # without the end marker
    token_ids: tuple[int, ...]  # as sampled, the end marker included when it was sampled
    logprobs: tuple[float, ...]  # one per token id
    prompt_tokens: int  # as fed to the model, after truncation


def prompt_ids(tokenizer: PreTrainedTokenizerBase, system: str, user: str, max_prompt_tokens: int) -> list[int]:
    chat = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    ids = list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"])
    return keep_end(ids, max_prompt_tokens)


@torch.no_grad()
def sample_completions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    *,
    temperature: float,
    max_new_tokens: int,
) -> list[Completion]:
    """One completion per prompt, in one batched `generate` (seed torch for a reproducible draw)."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0: the recorded log-probs are of a sampling distribution")
    device = next(model.parameters()).device
    end_id, pad_id = tokenizer.eos_token_id, tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + list(p) for p in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    was_training = model.training
    model.eval()
    try:
        out = model.generate(
            input_ids=input_ids, attention_mask=attention, do_sample=True, temperature=temperature, top_k=0,
            top_p=1.0, max_new_tokens=max_new_tokens, eos_token_id=end_id, pad_token_id=pad_id,
            output_logits=True, return_dict_in_generate=True,
        )
    finally:
        model.train(was_training)
    sampled = out.sequences[:, width:]
    logps = torch.stack([torch.log_softmax(step.float() / temperature, dim=-1) for step in out.logits], dim=1)
    logps = logps.gather(-1, sampled.unsqueeze(-1)).squeeze(-1)
    completions = []
    for row, prompt in enumerate(prompts):
        ids = sampled[row].tolist()
        length = ids.index(end_id) + 1 if end_id in ids else len(ids)
        text = tokenizer.decode(ids[: length - 1] if end_id in ids else ids)
        completions.append(Completion(text, tuple(ids[:length]), tuple(logps[row, :length].tolist()), len(prompt)))
    return completions
