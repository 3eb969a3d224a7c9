"""One GRPO run: batch in, LoRA adapter version out, everything through the object store.

Steps: read and hash the batch, load the base (and the parent adapter, or a fresh LoRA), turn every
assistant turn into a sample with its group-relative advantage, then one AdamW step per micro-batch
(shuffled each epoch, seeded). A non-finite loss or gradient norm stops the run with
`NonFiniteLoss` before that step touches the weights, and nothing is written under models/{version}/.
The adapter files are uploaded first and metadata.json last, so a version with metadata.json is
complete. Intermediate checkpoints (adapter + trainer_state.json) are for inspection and salvage;
the optimizer state is not saved, so a run is not resumed from them. The trainer writes under
`models/{version}/` only once it holds the version's claim, and records which process it is
(`liveness`), so that a later run can stop it if its own run dies.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import peft
import torch
import transformers
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from babylon_pipeline.storage import ObjectNotFound, ObjectStore, batch_key, checkpoint_key, model_key, open_object_store
from babylon_pipeline.training.adapter import (
    METADATA,
    WEIGHTS,
    continued_lora,
    download_adapter,
    fresh_lora,
    save_adapter,
    trainable_parameters,
)
from babylon_pipeline.training.base_model import load_base
from babylon_pipeline.training.batch import BatchFormatError, read_batch
from babylon_pipeline.training.collate import collate
from babylon_pipeline.training.device import Runtime, pick_runtime
from babylon_pipeline.training.evaluation import measure_logprob_gap
from babylon_pipeline.training.gap import logprob_gap
from babylon_pipeline.training.liveness import CLAIM, TRAINER_RECORD, VersionClaimed, claim_bytes, trainer_record
from babylon_pipeline.training.loss import completion_logps, grpo_loss
from babylon_pipeline.training.request import GRPOSettings, TrainingRequest
from babylon_pipeline.training.results import StepStats, TrainingResult
from babylon_pipeline.training.run_folder import SCRATCH, run_folder
from babylon_pipeline.training.samples import ChatEncoder, Sample, SampleCounts, build_samples
from babylon_pipeline.training.wandb_run import WandbRun, start_wandb

WORK_DIR_ENV = "BABYLON_TRAINER_WORK_DIR"
CHECKPOINT_STATE = "trainer_state.json"
Progress = Callable[[StepStats], None]


class NonFiniteLoss(RuntimeError):
    """The loss or the gradient norm of a step is NaN or infinite; the step was not applied."""


class VersionExists(ValueError):
    """models/{version}/metadata.json exists: that version is complete and is never overwritten."""


def default_work_dir() -> Path:
    return Path(os.environ.get(WORK_DIR_ENV) or Path(tempfile.gettempdir()) / "babylon-trainer")


def run_training(request: TrainingRequest, progress: Progress | None = None,
                 work_dir: Path | None = None) -> TrainingResult:
    """Train `request.version`; local files live in a run folder under `work_dir` (see `run_folder`)."""
    began = time.perf_counter()
    settings = request.settings
    store = open_object_store(request.storage_url)
    metadata_key = model_key(request.version, METADATA)
    if store.exists(metadata_key):
        raise VersionExists(f"{request.version} is already complete in the object store; train a new version")
    hold_claim(store, request)
    store.put_json(batch_key(request.batch_id, TRAINER_RECORD), trainer_record())
    batch = read_batch(store, request.batch_key)
    runtime = pick_runtime()
    with run_folder(Path(work_dir or default_work_dir()), f"{request.batch_id}-{request.version}") as folder:
        scratch = folder / SCRATCH
        model, tokenizer = load_policy(request, store, scratch, runtime)
        samples, counts = build_samples(batch.groups, ChatEncoder(tokenizer), settings)
        if not samples:
            raise BatchFormatError(f"training batch {request.batch_key!r} has no assistant turn to train on")
        plan = plan_steps(len(samples), settings)
        params = trainable_parameters(model)
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        pad_id = pad_token_id(tokenizer)
        gap_before = _finite(measure_logprob_gap(model, samples, pad_id, runtime, settings.micro_batch_size), "before")
        wandb = start_wandb(request.wandb, f"{request.batch_id}-{request.version}", {
            **settings.as_dict(), "version": request.version, "parent_version": request.parent_version,
            "base_model": request.base_model, "batch_id": request.batch_id, "data_hash": batch.data_hash,
            "samples": counts.samples, "windows": len(batch.windows),
        }, folder)
        failed = True
        try:
            model.train()
            history: list[StepStats] = []
            for step, indices in enumerate(plan, 1):
                stats = train_step(model, optimizer, params, [samples[i] for i in indices], pad_id, settings,
                                   runtime, step, len(plan))
                history.append(stats)
                wandb.log({k: v for k, v in stats.as_dict().items() if k not in ("step", "total_steps")}, step)
                if progress is not None:
                    progress(stats)
                if settings.checkpoint_every and step % settings.checkpoint_every == 0 and step < len(plan):
                    save_checkpoint(store, model, request, stats, scratch)
            gap_after = _finite(measure_logprob_gap(model, samples, pad_id, runtime, settings.micro_batch_size), "after")
            wandb.log({"logprob_gap_before": gap_before, "logprob_gap_after": gap_after}, len(plan))
            check_claim(store, request)  # a run that reclaimed this version meanwhile has removed the claim
            for name, path in save_adapter(model, scratch / "adapter").items():
                store.put_file(model_key(request.version, name), path)
            result = _result(request, batch.data_hash, batch.windows, counts, history, gap_before, gap_after,
                             sum(p.numel() for p in params), runtime, wandb, time.perf_counter() - began)
            store.put_json(metadata_key, result.metadata)
            failed = False
        finally:
            wandb.finish(failed)
    return result


def hold_claim(store: ObjectStore, request: TrainingRequest) -> None:
    """Own `models/{version}/`: claim it if nobody has (create-if-absent), or find it claimed for this batch."""
    key = model_key(request.version, CLAIM)
    if store.put_if_unchanged(key, claim_bytes(request.batch_id), None):
        return
    if store.get_json(key).get("batch_id") != request.batch_id:
        raise VersionClaimed(f"{request.version} is claimed by another batch; this trainer writes nothing there")


def check_claim(store: ObjectStore, request: TrainingRequest) -> None:
    try:
        owner = store.get_json(model_key(request.version, CLAIM)).get("batch_id")
    except ObjectNotFound:
        owner = None
    if owner != request.batch_id:
        raise VersionClaimed(f"{request.version} is no longer claimed for this batch (reclaimed by a later run?)")


def load_policy(request: TrainingRequest, store: ObjectStore, scratch: Path, runtime: Runtime
                ) -> tuple[PeftModel, PreTrainedTokenizerBase]:
    """The base with its trainable adapter: the parent's when there is one, else a fresh (seeded) LoRA."""
    torch.manual_seed(request.settings.seed)
    base, tokenizer = load_base(request.base_model, store, scratch / "base", runtime)
    if request.parent_version is None:
        model = fresh_lora(base, request.settings)
    else:
        model = continued_lora(base, download_adapter(store, request.parent_version, scratch / "parent"))
    return model.to(runtime.device), tokenizer


def plan_steps(sample_count: int, settings: GRPOSettings) -> list[list[int]]:
    """Sample indices of each optimizer step: every epoch a new seeded shuffle, cut into micro-batches."""
    rng = random.Random(settings.seed)
    steps: list[list[int]] = []
    for _ in range(settings.epochs):
        order = list(range(sample_count))
        rng.shuffle(order)
        steps += [order[i : i + settings.micro_batch_size] for i in range(0, sample_count, settings.micro_batch_size)]
    return steps[: settings.max_steps] if settings.max_steps else steps


def train_step(model: PeftModel, optimizer: torch.optim.Optimizer, params: Sequence[torch.nn.Parameter],
               samples: Sequence[Sample], pad_id: int, settings: GRPOSettings, runtime: Runtime, step: int,
               total: int) -> StepStats:
    began = time.perf_counter()
    batch = collate(samples, pad_id, runtime.device)
    with runtime.autocast():
        logps = completion_logps(model, batch)
        ref_logps = None
        if settings.beta != 0.0:
            with torch.no_grad(), model.disable_adapter():
                ref_logps = completion_logps(model, batch)
    out = grpo_loss(
        logps, batch.behaviour_logps, batch.advantages, batch.completion_mask,
        epsilon=settings.epsilon, loss_type=settings.loss_type, max_completion_len=settings.max_completion_len,
        beta=settings.beta, ref_logps=ref_logps, kl_bias_correction=settings.kl_bias_correction,
    )
    loss = out.loss.item()
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"step {step}/{total}: loss is {loss}; no update applied")
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm))
    if not math.isfinite(grad_norm):
        raise NonFiniteLoss(f"step {step}/{total}: gradient norm is {grad_norm}; no update applied")
    optimizer.step()
    seconds = time.perf_counter() - began
    return StepStats(
        step=step, total_steps=total, loss=loss, kl=out.kl, clip_fraction=out.clip_fraction, grad_norm=grad_norm,
        tokens=batch.tokens, tokens_per_s=batch.tokens / seconds,
        logprob_gap=logprob_gap(logps, batch.completion_mask, batch.advantages),
    )


def save_checkpoint(store: ObjectStore, model: PeftModel, request: TrainingRequest, stats: StepStats,
                    scratch: Path) -> None:
    files = save_adapter(model, scratch / f"checkpoint-{stats.step}")
    for name, path in files.items():
        store.put_file(checkpoint_key(request.batch_id, stats.step, name), path)
    store.put_json(checkpoint_key(request.batch_id, stats.step, CHECKPOINT_STATE), {
        "batch_id": request.batch_id, "version": request.version, "parent_version": request.parent_version,
        "base_model": request.base_model, "stats": stats.as_dict(),
    })


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _finite(gap: float | None, when: str) -> float | None:
    if gap is not None and not math.isfinite(gap):
        raise NonFiniteLoss(f"the policy's log-probs {when} training are not finite (log-prob gap {gap})")
    return gap


def _result(request: TrainingRequest, data_hash: str, windows: tuple[str, ...], counts: SampleCounts,
            history: list[StepStats], gap_before: float | None, gap_after: float | None, trainable: int,
            runtime: Runtime, wandb: WandbRun, seconds: float) -> TrainingResult:
    train_seconds = sum(s.tokens / s.tokens_per_s for s in history)
    metrics = {
        "steps": len(history),
        "final_loss": history[-1].loss,
        "mean_loss": sum(s.loss for s in history) / len(history),
        "kl": history[-1].kl,
        "clip_fraction": sum(s.clip_fraction for s in history) / len(history),
        "grad_norm": history[-1].grad_norm,
        "tokens_per_s": sum(s.tokens for s in history) / train_seconds,
        "logprob_gap_before": gap_before,
        "logprob_gap_after": gap_after,
        "seconds": seconds,
    }
    metadata = {
        "version": request.version,
        "base_model": request.base_model,
        "parent_version": request.parent_version,
        "batch_id": request.batch_id,
        "batch_key": request.batch_key,
        "windows": list(windows),
        "data_hash": data_hash,
        "settings": request.settings.as_dict(),
        "metrics": metrics,
        "counts": {**asdict(counts), "trainable_params": trainable},
        "wandb_run_id": wandb.run_id,
        "wandb_url": wandb.url,
        "device": runtime.device.type,
        "libraries": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return TrainingResult(
        version=request.version, adapter_key=model_key(request.version, WEIGHTS),
        metadata_key=model_key(request.version, METADATA), data_hash=data_hash, steps=len(history),
        final_loss=metrics["final_loss"], mean_loss=metrics["mean_loss"], kl=metrics["kl"],
        clip_fraction=metrics["clip_fraction"], tokens_per_s=metrics["tokens_per_s"],
        logprob_gap_before=gap_before, logprob_gap_after=gap_after, samples=counts.samples,
        prompts_trimmed=counts.prompts_trimmed, prompt_tokens_dropped=counts.prompt_tokens_dropped,
        completions_cut=counts.completions_cut, completion_tokens_cut=counts.completion_tokens_cut, trainable_params=trainable, seconds=seconds, wandb_run_id=wandb.run_id,
        wandb_url=wandb.url, wandb_dir=wandb.local_dir, metadata=metadata,
    )
