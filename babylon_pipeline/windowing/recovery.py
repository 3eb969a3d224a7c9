"""What a dead training run left behind, put right by the next run before it plans its own batch.

Runs inside the `gpu` pool, so no other training is live: every batch still `training` was left by
a run that died. In order:
1. The trainer of such a batch, and of any version stored but not registered, is stopped if it still
   runs (a subprocess whose orchestrator was killed, a pod nobody deleted): it must not keep the GPU,
   nor write into a version this run is about to clean. Then the batch is failed ("abandoned").
2. Each version in storage that is not registered is either adopted or removed. Adopted when it is
   complete (`metadata.json`, written last by the trainer), its batch was opened for this version and
   holds exactly the data it was trained on, and none of the batch's trajectories were trained on
   since: then it is registered as the dead run would have done (registration failed on a database
   error, or the run was killed after training). Otherwise every file under `models/{version}/` is
   deleted; its intermediate checkpoints under `checkpoints/{batch}/` stay for inspection.
3. A new version is claimed with a create-if-absent `models/{version}/claim.json` (S3 `If-None-Match`,
   a lock file locally) after the highest version registered or stored, so the counter never repeats
   a version that exists in storage and two trainers never write the same `models/{version}/`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.storage import ObjectNotFound, ObjectStore, batch_key, model_key, model_prefix
from babylon_pipeline.store.registry import (
    any_used_in_training,
    batches_in_status,
    fail_batch,
    next_version,
    parse_version,
    read_batch_record,
    register_model,
    registered_versions,
    resume_failed_batch,
)
from babylon_pipeline.training.liveness import CLAIM, TRAINER_RECORD, claim_bytes
from babylon_pipeline.windowing.files import GROUPS

METADATA = "metadata.json"
CLAIM_ATTEMPTS = 20
StopTrainer = Callable[[dict[str, Any]], bool]


class VersionClaimLost(RuntimeError):
    """Other writers kept claiming each next version first."""


@dataclass
class Recovery:
    """What was put right, for the run's log."""

    abandoned_batches: list[str] = field(default_factory=list)
    stopped_trainers: list[str] = field(default_factory=list)
    adopted_versions: list[str] = field(default_factory=list)
    removed_versions: list[str] = field(default_factory=list)

    def describe(self) -> str:
        parts = [f"{name.replace('_', ' ')}: {', '.join(items)}" for name, items in vars(self).items() if items]
        return "; ".join(parts)


def stored_versions(store: ObjectStore) -> set[str]:
    """Every `models/vX.Y.Z/` with at least one object (the base's folder is not a version)."""
    versions = {key.split("/")[1] for key in store.list_keys("models")}
    return {v for v in versions if parse_version(v) is not None}


def recover(engine: sa.Engine, store: ObjectStore, storage_url: str, stop_trainer: StopTrainer) -> Recovery:
    recovery = Recovery()
    for batch_id in batches_in_status(engine, "training"):
        _stop(store, batch_id, stop_trainer, recovery)
        fail_batch(engine, batch_id, "abandoned: the run that was training it ended without finishing it")
        recovery.abandoned_batches.append(batch_id)
    registered = registered_versions(engine)
    for version in sorted(stored_versions(store) - registered):
        claim = _read_json(store, model_key(version, CLAIM)) or {}
        if isinstance(claim.get("batch_id"), str):
            _stop(store, claim["batch_id"], stop_trainer, recovery)
        if _adopt(engine, store, storage_url, version):
            recovery.adopted_versions.append(version)
        else:
            for key in store.list_keys(model_prefix(version)):
                store.delete(key)
            recovery.removed_versions.append(version)
    return recovery


def claim_version(engine: sa.Engine, store: ObjectStore, batch_id: str) -> str:
    """The next free version, claimed for `batch_id`: nobody else writes under `models/{version}/`."""
    claim = claim_bytes(batch_id)
    for _ in range(CLAIM_ATTEMPTS):
        version = next_version(engine, stored_versions(store))
        if store.put_if_unchanged(model_key(version, CLAIM), claim, None):
            return version
    raise VersionClaimLost(f"could not claim a model version in {CLAIM_ATTEMPTS} attempts")


def _stop(store: ObjectStore, batch_id: str, stop_trainer: StopTrainer, recovery: Recovery) -> None:
    record = _read_json(store, batch_key(batch_id, TRAINER_RECORD))
    if isinstance(record, dict) and stop_trainer(record):
        recovery.stopped_trainers.append(batch_id)


def _adopt(engine: sa.Engine, store: ObjectStore, storage_url: str, version: str) -> bool:
    metadata = _read_json(store, model_key(version, METADATA))
    if not isinstance(metadata, dict) or not isinstance(metadata.get("batch_id"), str):
        return False
    batch = read_batch_record(engine, metadata["batch_id"])
    if batch is None or batch.status != "failed" or batch.model_version != version or not batch.rewards:
        return False
    try:
        content = store.get_bytes(batch_key(batch.batch_id, GROUPS))
    except ObjectNotFound:
        return False
    if hashlib.sha256(content).hexdigest() != metadata.get("data_hash"):
        return False
    if any_used_in_training(engine, list(batch.rewards)):
        return False
    resume_failed_batch(engine, batch.batch_id)
    register_from_metadata(engine, batch.batch_id, version, storage_url, batch.base_model or "",
                           batch.rewards, metadata)
    return True


def register_from_metadata(engine: sa.Engine, batch_id: str, version: str, storage_url: str, base_model: str,
                           rewards: dict[str, float], metadata: dict[str, Any]):
    """Register a stored version with the figures its `metadata.json` holds."""
    metrics = metadata.get("metrics") or {}
    before, after = metrics.get("logprob_gap_before"), metrics.get("logprob_gap_after")
    return register_model(
        engine, batch_id, version,
        storage_path=f"{storage_url.rstrip('/')}/{model_prefix(version)}",
        base_model=base_model,
        avg_reward=fmean(rewards.values()),
        wandb_run_id=metadata.get("wandb_run_id"),
        training_loss=metrics.get("mean_loss"),
        policy_improvement=None if before is None or after is None else after - before,
        eval_metrics={"logprob_gap_before": before, "logprob_gap_after": after, "steps": metrics.get("steps")},
    )


def _read_json(store: ObjectStore, key: str) -> Any:
    try:
        return store.get_json(key)
    except (ObjectNotFound, ValueError):
        return None
