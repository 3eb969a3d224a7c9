"""Samples as padded tensors, in TRL's GRPO layout: prompts padded on the left, completions on the right.

Every completion then starts at the same column, so one forward pass scores all completion tokens
with `logits_to_keep`, and the tensors are exactly what TRL's `_compute_loss` takes (which is how
the loss is checked against it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from babylon_pipeline.training.samples import Sample


@dataclass(frozen=True)
class Batch:
    prompt_ids: torch.Tensor  # (B, P) left-padded
    prompt_mask: torch.Tensor  # (B, P) 1 on tokens
    completion_ids: torch.Tensor  # (B, C) right-padded
    completion_mask: torch.Tensor  # (B, C) 1 on trained tokens
    behaviour_logps: torch.Tensor  # (B, C) float32, NaN where none (padding included)
    advantages: torch.Tensor  # (B,) float32

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def tokens(self) -> int:
        return int(self.prompt_mask.sum() + self.completion_mask.sum())


def collate(samples: Sequence[Sample], pad_id: int, device: torch.device) -> Batch:
    width_p = max(len(s.prompt_ids) for s in samples)
    width_c = max(len(s.completion_ids) for s in samples)
    prompt_ids = [[pad_id] * (width_p - len(s.prompt_ids)) + list(s.prompt_ids) for s in samples]
    prompt_mask = [[0] * (width_p - len(s.prompt_ids)) + [1] * len(s.prompt_ids) for s in samples]
    completion_ids = [list(s.completion_ids) + [pad_id] * (width_c - len(s.completion_ids)) for s in samples]
    completion_mask = [[1] * len(s.completion_ids) + [0] * (width_c - len(s.completion_ids)) for s in samples]
    behaviour = [list(s.behaviour_logprobs) + [math.nan] * (width_c - len(s.completion_ids)) for s in samples]

    def tensor(rows: list, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(rows, dtype=dtype, device=device)

    return Batch(
        prompt_ids=tensor(prompt_ids, torch.long),
        prompt_mask=tensor(prompt_mask, torch.long),
        completion_ids=tensor(completion_ids, torch.long),
        completion_mask=tensor(completion_mask, torch.long),
        behaviour_logps=tensor(behaviour, torch.float32),
        advantages=tensor([s.advantage for s in samples], torch.float32),
    )
