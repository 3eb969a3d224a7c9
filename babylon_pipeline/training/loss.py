"""The GRPO loss, written once: clipped policy ratio × group advantage, optional k3 KL, TRL's aggregations.

Per token t of completion i, with ratio r = exp(logp - old_logp) and advantage A_i:

    loss_t = -min(r · A_i, clip(r, 1 - ε, 1 + ε) · A_i) + β · r · (exp(ref - logp) - (ref - logp) - 1)

old_logp is the recorded behaviour log-prob where there is one, else logp itself, detached (r ≡ 1:
the objective is then a plain group-advantage policy gradient and the loss value depends on the
data only — watch the log-prob gap, not the loss). ref is the base model (adapter disabled). The
k3 KL is weighted by r (TRL 1.16's default `use_bias_correction_kl`, DeepSeek-V3.2): its gradient is
then the unbiased reverse-KL gradient even off-policy; `kl_bias_correction=False` gives plain k3.
Aggregation (TRL 1.16's definitions, checked against `GRPOTrainer._compute_loss` in
tests/test_grpo_loss.py):

    dapo     Σ loss·mask / Σ mask over the micro-batch        (TRL's default)
    grpo     mean over sequences of each sequence's token mean (the GRPO paper)
    dr_grpo  Σ loss·mask / (B · max_completion_len)            (Dr. GRPO: no length bias)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from babylon_pipeline.training.collate import Batch


@dataclass(frozen=True)
class LossOutput:
    loss: torch.Tensor  # scalar, differentiable
    kl: float | None  # mean per-token k3 KL to the base; None when beta is 0 (no reference pass)
    clip_fraction: float  # share of tokens whose ratio the clip cut off (TRL's clip_ratio/region_mean)


def selective_log_softmax(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """log_softmax(logits).gather(index), one sequence at a time in float32: never a (B, T, V) float copy."""
    rows = []
    for row_logits, row_index in zip(logits, index, strict=True):
        row = row_logits.float()
        rows.append(row.gather(-1, row_index.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(row, dim=-1))
    return torch.stack(rows)


def completion_logps(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    """(B, C) log-probs of the completion tokens; logits are computed for the completion positions only."""
    width = batch.completion_ids.size(1)
    logits = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=width + 1, use_cache=False
    ).logits
    return selective_log_softmax(logits[:, :-1], batch.completion_ids)


def grpo_loss(
    logps: torch.Tensor,
    behaviour_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    epsilon: float,
    loss_type: str,
    max_completion_len: int,
    beta: float = 0.0,
    ref_logps: torch.Tensor | None = None,
    kl_bias_correction: bool = True,
) -> LossOutput:
    mask = mask.to(logps.dtype)
    old_logps = torch.where(torch.isnan(behaviour_logps), logps.detach(), behaviour_logps)
    ratio = torch.exp(logps - old_logps)
    advantages = advantages.unsqueeze(1)
    clipped_ratio = torch.clamp(ratio, 1 - epsilon, 1 + epsilon)
    per_token = -torch.min(ratio * advantages, clipped_ratio * advantages)
    per_token_kl = None
    if beta != 0.0:
        if ref_logps is None:
            raise ValueError("beta > 0 needs the reference log-probs")
        delta = ref_logps - logps
        per_token_kl = torch.exp(delta) - delta - 1
        if kl_bias_correction:
            per_token_kl = per_token_kl * ratio
        per_token = per_token + beta * per_token_kl
    loss = _aggregate(per_token * mask, mask, loss_type, max_completion_len)
    with torch.no_grad():
        clipped = ((ratio < 1 - epsilon) & (advantages < 0)) | ((ratio > 1 + epsilon) & (advantages > 0))
        return LossOutput(
            loss=loss,
            kl=None if per_token_kl is None else _masked_mean(per_token_kl, mask),
            clip_fraction=_masked_mean(clipped.to(mask.dtype), mask),
        )


def _aggregate(masked_loss: torch.Tensor, mask: torch.Tensor, loss_type: str, max_completion_len: int) -> torch.Tensor:
    if loss_type == "dapo":
        return masked_loss.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "grpo":
        return (masked_loss.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "dr_grpo":
        return masked_loss.sum() / (masked_loss.size(0) * max_completion_len)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return float((values * mask).sum() / mask.sum().clamp(min=1.0))
