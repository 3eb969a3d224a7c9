"""`python -m babylon_pipeline.training`: the trainer process Dagster Pipes starts (subprocess or GPU pod).

It imports `dagster_pipes` (no dependencies), never `dagster`. The extras are the request; each
step is logged to the run; the result is reported as the asset's materialization with numeric
metadata and the batch's hash as data version. Any error propagates: Pipes reports it and the
process exits non-zero, so the orchestrator marks the batch failed. SIGTERM is such an error
(`TrainerTerminated`). The process leads its own process group, which is what a later run stops
when this one's orchestrator died (`liveness`).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from dagster_pipes import open_dagster_pipes

from babylon_pipeline.training.liveness import own_process_group
from babylon_pipeline.training.request import TrainingRequest
from babylon_pipeline.training.results import TrainingResult


def pipes_metadata(result: TrainingResult) -> dict[str, dict[str, Any]]:
    """Typed metadata with stable names (the UI plots them across runs); absent values are left out."""
    values = {
        "steps": (result.steps, "int"),
        "final_loss": (result.final_loss, "float"),
        "mean_loss": (result.mean_loss, "float"),
        "kl": (result.kl, "float"),
        "clip_fraction": (result.clip_fraction, "float"),
        "tokens_per_s": (result.tokens_per_s, "float"),
        "logprob_gap_before": (result.logprob_gap_before, "float"),
        "logprob_gap_after": (result.logprob_gap_after, "float"),
        "samples": (result.samples, "int"),
        "prompts_trimmed": (result.prompts_trimmed, "int"),
        "prompt_tokens_dropped": (result.prompt_tokens_dropped, "int"),
        "completions_cut": (result.completions_cut, "int"),
        "completion_tokens_cut": (result.completion_tokens_cut, "int"),
        "trainable_params": (result.trainable_params, "int"),
        "train_seconds": (result.seconds, "float"),
        "version": (result.version, "text"),
        "adapter_key": (result.adapter_key, "text"),
        "metadata_key": (result.metadata_key, "text"),
        "data_hash": (result.data_hash, "text"),
        "wandb_run_id": wandb_run_link(result),
    }
    return {name: {"raw_value": value, "type": kind} for name, (value, kind) in values.items() if value is not None}


class TrainerTerminated(RuntimeError):
    """SIGTERM (a pod being deleted, a run being stopped): raised where the trainer is, so that it exits
    through its normal failure path: nothing registered, `metadata.json` never written, the run folder
    and W&B run closed and removed, the exception reported through Pipes."""


def _terminate(signum: int, _frame: object) -> None:
    raise TrainerTerminated(f"stopped by signal {signum} before it finished; nothing was registered")


def wandb_run_link(result: TrainingResult) -> tuple[str | None, str]:
    """The run's page online (a link in the UI), the offline run's folder otherwise (to `wandb sync`)."""
    if result.wandb_url:
        return result.wandb_url, "url"
    return (result.wandb_dir if result.wandb_run_id else None), "path"


def completions_cut_warning(result: TrainingResult) -> str | None:
    """Cut answers are trained on in part only (a trimmed prompt's old context is not worth a warning)."""
    if not result.completions_cut:
        return None
    return (f"{result.completions_cut} of {result.samples} completions were cut to fit max_seq_len "
            f"({result.completion_tokens_cut} tokens dropped from their ends): raise max_seq_len or shorten answers")


def main() -> None:
    own_process_group()
    signal.signal(signal.SIGTERM, _terminate)
    with open_dagster_pipes() as pipes:
        request = TrainingRequest.from_extras(pipes.extras)
        from babylon_pipeline.training.trainer import run_training  # torch loads only once the request is valid

        pipes.log.info(f"training {request.version} from {request.parent_version or 'a fresh LoRA'} "
                       f"on {request.batch_key} ({request.settings.loss_type}, beta={request.settings.beta})")
        started = time.monotonic()
        result = run_training(request,
                              progress=lambda stats: pipes.log.info(stats.describe(time.monotonic() - started)))
        pipes.log.info(f"{result.version}: {result.steps} steps, log-prob gap {result.logprob_gap_before} -> "
                       f"{result.logprob_gap_after}, adapter at {result.adapter_key}")
        if warning := completions_cut_warning(result):
            pipes.log.warning(warning)
        pipes.report_asset_materialization(metadata=pipes_metadata(result), data_version=result.data_hash)


if __name__ == "__main__":
    main()
