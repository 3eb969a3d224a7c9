"""What a run reports: per-step stats (progress, W&B) and the final result (metadata.json, Pipes)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class StepStats:
    step: int
    total_steps: int
    loss: float
    kl: float | None  # None when beta is 0 (no reference pass)
    clip_fraction: float
    grad_norm: float  # before clipping
    tokens: int  # prompt + completion tokens of the micro-batch
    tokens_per_s: float
    logprob_gap: float | None  # on this micro-batch, before its update

    def describe(self, elapsed_s: float | None = None) -> str:
        """The run log's progress line; with the run's `elapsed_s` so far, an ETA for the remaining steps."""
        eta = "" if elapsed_s is None else f" eta={_clock(self.eta_s(elapsed_s))}"
        return (
            f"step {self.step}/{self.total_steps} loss={self.loss:.5f} kl={_fmt(self.kl)} "
            f"clip={self.clip_fraction:.3f} tok/s={self.tokens_per_s:,.0f} gap={_fmt(self.logprob_gap)}{eta}"
        )

    def eta_s(self, elapsed_s: float) -> float:
        """Seconds left at the mean pace so far (which includes loading: early estimates run high)."""
        return elapsed_s / max(self.step, 1) * max(self.total_steps - self.step, 0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainingResult:
    version: str
    adapter_key: str
    metadata_key: str
    data_hash: str
    steps: int
    final_loss: float
    mean_loss: float
    kl: float | None  # last step's
    clip_fraction: float  # mean over steps
    tokens_per_s: float  # over all training steps
    logprob_gap_before: float | None  # whole batch, before the first step
    logprob_gap_after: float | None  # whole batch, after the last step
    samples: int
    prompts_trimmed: int  # samples whose prompt lost its start (old context)
    prompt_tokens_dropped: int
    completions_cut: int  # samples whose answer was cut: trained on in part only
    completion_tokens_cut: int
    trainable_params: int
    seconds: float
    wandb_run_id: str | None
    wandb_url: str | None
    wandb_dir: str | None
    metadata: dict[str, Any]  # exactly what metadata.json holds


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"
