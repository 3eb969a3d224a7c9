"""The orchestrator's side of a training run: the batch handed over before it, the registration after it.

Before: the scored, untrained groups are assembled into a batch, stored under
`training-batches/{batch}/groups.jsonl`, and the batch is opened (`pending` → `training`) for the
next version. The batch id is the hash of its content, so a retry of the same data re-opens the
same batch cleanly. The parent is the model in service when it was trained on the same base; a
fresh LoRA otherwise.

After: the version's `metadata.json` (the trainer writes it last) must exist and name this
batch's data, and only then is the model registered, in one transaction with the batch completed
and its trajectories marked used. A failure anywhere in between fails the batch with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean

import sqlalchemy as sa

from babylon_pipeline.model.base_record import BaseRecord
from babylon_pipeline.storage import ObjectNotFound, ObjectStore, batch_key, model_key, model_prefix
from babylon_pipeline.store.registry import (
    BatchStateError,
    RegisteredModel,
    ServedModel,
    batch_status,
    fail_batch,
    model_in_service,
    next_version,
    open_batch,
    register_model,
    start_batch,
)
from babylon_pipeline.store.training_data import candidates_by_window, select_training_candidates
from babylon_pipeline.training.request import GRPOSettings, TrainingRequest, WandbOptions
from babylon_pipeline.windowing.files import GROUPS
from babylon_pipeline.windowing.training_batch import BatchLimits, TrainingBatch, assemble_batch

TRAINED_MODEL_PREFIX = "babylon-agent-"
METADATA = "metadata.json"


class NothingToTrain(RuntimeError):
    """No group with a reward spread among the scored, untrained trajectories."""


class IncompleteVersion(RuntimeError):
    """The trainer finished but the version's files do not say it trained this batch."""


@dataclass(frozen=True)
class PlannedRun:
    request: TrainingRequest
    batch: TrainingBatch
    base: BaseRecord
    parent: ServedModel | None

    @property
    def batch_id(self) -> str:
        return self.request.batch_id

    @property
    def version(self) -> str:
        return self.request.version


def is_own_model(model: str | None, base: BaseRecord) -> bool:
    """Samples of the base itself or of one of our trained versions: their logprobs are behaviour logprobs."""
    return model is not None and (model == base.name or model.startswith(TRAINED_MODEL_PREFIX))


def served_on_base(engine: sa.Engine, base: BaseRecord) -> ServedModel | None:
    """The model in service when it was trained on this base (an adapter only fits its own base), else None."""
    served = model_in_service(engine)
    return served if served is not None and served.base_model == base.name else None


def plan_training_run(engine: sa.Engine, store: ObjectStore, storage_url: str, base: BaseRecord, limits: BatchLimits,
                      settings: GRPOSettings, wandb: WandbOptions) -> PlannedRun:
    groups = select_training_candidates(engine, limits.max_groups, limits.max_group_size)
    batch = assemble_batch(store, candidates_by_window(groups), limits, own_model=lambda m: is_own_model(m, base))
    if not batch.groups:
        raise NothingToTrain(
            f"nothing to train on: {len(groups)} candidate groups, {batch.dropped_no_spread} without a reward "
            f"spread, {batch.missing_trajectories} candidates missing from their windows' files"
        )
    parent = served_on_base(engine, base)
    batch_id = f"grpo-{batch.data_hash[:16]}"
    version = next_version(engine)
    key = batch_key(batch_id, GROUPS)
    store.put_bytes(key, batch.content)
    _reclaim_abandoned(engine, batch_id)
    rewards = batch.rewards
    open_batch(engine, batch_id, base.name, version, batch.windows, list(rewards), rewards)
    start_batch(engine, batch_id)
    request = TrainingRequest(
        batch_id=batch_id, version=version, storage_url=storage_url, batch_key=key, base_model=base.spec,
        parent_version=parent.version if parent else None, settings=settings, wandb=wandb,
    )
    return PlannedRun(request=request, batch=batch, base=base, parent=parent)


def _reclaim_abandoned(engine: sa.Engine, batch_id: str) -> None:
    """A batch still `training` when its own next attempt starts was left by a run that died: only one
    training runs at a time (the `gpu` pool and run-queue limit), so nobody else holds it."""
    if batch_status(engine, batch_id) == "training":
        fail_batch(engine, batch_id, "abandoned: the run that was training it ended without finishing it")


def register_trained_version(engine: sa.Engine, store: ObjectStore, run: PlannedRun) -> RegisteredModel:
    try:
        metadata = store.get_json(model_key(run.version, METADATA))
    except ObjectNotFound:
        raise IncompleteVersion(f"{run.version} has no {METADATA}: the adapter is not completely stored") from None
    if metadata.get("data_hash") != run.batch.data_hash or metadata.get("batch_id") != run.batch_id:
        raise IncompleteVersion(f"{run.version}'s {METADATA} was written for another batch")
    metrics = metadata["metrics"]
    before, after = metrics.get("logprob_gap_before"), metrics.get("logprob_gap_after")
    return register_model(
        engine, run.batch_id, run.version,
        storage_path=f"{run.request.storage_url.rstrip('/')}/{model_prefix(run.version)}",
        base_model=run.base.name,
        avg_reward=fmean(run.batch.rewards.values()),
        wandb_run_id=metadata.get("wandb_run_id"),
        training_loss=metrics.get("mean_loss"),
        policy_improvement=None if before is None or after is None else after - before,
        eval_metrics={"logprob_gap_before": before, "logprob_gap_after": after, "steps": metrics.get("steps")},
    )


def fail_run(engine: sa.Engine, run: PlannedRun, error: BaseException) -> None:
    """Record why the run failed; a batch that cannot be failed any more (already completed) is left alone."""
    try:
        fail_batch(engine, run.batch_id, f"{type(error).__name__}: {error}")
    except BatchStateError:
        pass
