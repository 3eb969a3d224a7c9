"""The orchestrator's side of a training run: the batch handed over before it, the registration after it.

Before: what a dead run left is put right (`windowing.recovery`), the scored, untrained groups are
assembled into a batch, stored under `training-batches/{batch}/groups.jsonl`, a new version is
claimed, and the batch is opened (`pending` → `training`) for it. The batch id is the hash of its
content, so a retry of the same data re-opens the same batch cleanly. The parent is the model in
service when it was trained on the same base; a fresh LoRA otherwise.

After: the version's `metadata.json` (the trainer writes it last) must exist and name this
batch's data, and only then is the model registered, in one transaction with the batch completed
and its trajectories marked used. A failure anywhere in between fails the batch with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from babylon_pipeline.model.base_record import BaseRecord
from babylon_pipeline.storage import ObjectNotFound, ObjectStore, batch_key, model_key, model_prefix
from babylon_pipeline.store.registry import (
    BatchStateError,
    RegisteredModel,
    ServedModel,
    fail_batch,
    model_in_service,
    open_batch,
    start_batch,
    trained_model_ids,
)
from babylon_pipeline.store.training_data import candidates_by_window, select_training_candidates
from babylon_pipeline.training.liveness import stop_local_trainer
from babylon_pipeline.training.request import GRPOSettings, TrainingRequest, WandbOptions
from babylon_pipeline.windowing.files import GROUPS
from babylon_pipeline.windowing.recovery import (
    METADATA,
    Recovery,
    StopTrainer,
    claim_version,
    recover,
    register_from_metadata,
)
from babylon_pipeline.windowing.training_batch import BatchLimits, TrainingBatch, assemble_batch


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
    recovery: Recovery = field(default_factory=Recovery)

    @property
    def batch_id(self) -> str:
        return self.request.batch_id

    @property
    def version(self) -> str:
        return self.request.version


def own_models(engine: sa.Engine, base: BaseRecord) -> frozenset[str]:
    """The base itself and every version registered on it: only their samples' logprobs are behaviour
    logprobs. Checked against the registry, so a model name that merely looks like ours is not."""
    return trained_model_ids(engine, base.name) | {base.name}


def served_on_base(engine: sa.Engine, base: BaseRecord) -> ServedModel | None:
    """The model in service when it was trained on this base (an adapter only fits its own base), else None."""
    served = model_in_service(engine)
    return served if served is not None and served.base_model == base.name else None


def plan_training_run(engine: sa.Engine, store: ObjectStore, storage_url: str, base: BaseRecord, limits: BatchLimits,
                      settings: GRPOSettings, wandb: WandbOptions, stop_trainer: StopTrainer = stop_local_trainer
                      ) -> PlannedRun:
    recovery = recover(engine, store, storage_url, stop_trainer)
    groups = select_training_candidates(engine, limits.max_groups, limits.max_group_size)
    ours = own_models(engine, base)
    batch = assemble_batch(store, candidates_by_window(groups), limits, own_model=lambda m: m in ours)
    if not batch.groups:
        raise NothingToTrain(
            f"nothing to train on: {len(groups)} candidate groups, {batch.dropped_no_spread} without a reward "
            f"spread, {batch.missing_trajectories} candidates missing from their windows' files"
        )
    parent = served_on_base(engine, base)
    batch_id = f"grpo-{batch.data_hash[:16]}"
    key = batch_key(batch_id, GROUPS)
    store.put_bytes(key, batch.content)
    version = claim_version(engine, store, batch_id)
    rewards = batch.rewards
    open_batch(engine, batch_id, base.name, version, batch.windows, list(rewards), rewards)
    start_batch(engine, batch_id)
    request = TrainingRequest(
        batch_id=batch_id, version=version, storage_url=storage_url, batch_key=key, base_model=base.spec,
        parent_version=parent.version if parent else None, settings=settings, wandb=wandb,
    )
    return PlannedRun(request=request, batch=batch, base=base, parent=parent, recovery=recovery)


def register_trained_version(engine: sa.Engine, store: ObjectStore, run: PlannedRun) -> RegisteredModel:
    try:
        metadata = store.get_json(model_key(run.version, METADATA))
    except ObjectNotFound:
        raise IncompleteVersion(f"{run.version} has no {METADATA}: the adapter is not completely stored") from None
    if metadata.get("data_hash") != run.batch.data_hash or metadata.get("batch_id") != run.batch_id:
        raise IncompleteVersion(f"{run.version}'s {METADATA} was written for another batch")
    return register_from_metadata(engine, run.batch_id, run.version, run.request.storage_url, run.base.name,
                                  run.batch.rewards, metadata)


def fail_run(engine: sa.Engine, store: ObjectStore, run: PlannedRun, error: BaseException) -> None:
    """Record why the run failed; a batch that cannot be failed any more (already completed) is left alone.
    An incomplete version (no `metadata.json`) is removed; a complete one is left for the next run to
    adopt (its registration failed, e.g. on a database error, which may fail this too)."""
    try:
        if not store.exists(model_key(run.version, METADATA)):
            for key in store.list_keys(model_prefix(run.version)):
                store.delete(key)
    finally:
        try:
            fail_batch(engine, run.batch_id, f"{type(error).__name__}: {error}")
        except BatchStateError:
            pass
