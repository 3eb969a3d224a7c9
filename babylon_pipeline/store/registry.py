"""The training registry in the app's tables: `training_batches` through their states, `trained_models` rows.

A batch goes `pending` (opened with its trajectories and rewards) → `training` (started) →
`completed` (its model registered) or `failed`. A model is registered only once its adapter is
stored, and in one transaction with what it implies: the batch completed, its trajectories marked
as used, the `trained_models` row a `candidate`. So the app never sees a model without its batch
accounted for, nor trajectories marked used by a model that does not exist.

Re-opening a batch id resets a `pending` or `failed` batch to a clean `pending` one (new
trajectories, rewards and timestamps, no error), which makes a retried run safe. A `training` batch
is refused: another attempt may still hold it; fail it first (`fail_batch`). A `completed` batch is
refused for good: its trajectories are already trained on.

A registered version is a `candidate`, which the app's legacy model selection never picks (it picks
the pinned version if `ready`, else the newest `ready` or `deployed` row): it reaches agents only through
`serving.state` (canary, then `deployed`), which keeps exactly the version in service `deployed`.

Versions are `vMAJOR.MINOR.PATCH`: the first model is v1.0.0 and every training bumps the minor
of the highest valid version in `trained_models` (v1.0.0 → v1.1.0); major and patch are left to
people (a new base model, a hand-made fix). Rows whose version does not parse are ignored.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.windows import is_window_id, to_utc_naive

CANDIDATE = "candidate"  # registered, not serving: invisible to the app
CANARY = "canary"  # serving a share of the agents: invisible to the app's legacy rule too
DEPLOYED = "deployed"  # serving every agent not on the canary: the one row the app's legacy rule picks
ARCHIVED = "archived"  # superseded, rolled back or refused
LEGACY_PICKED = ("ready", DEPLOYED)  # what the app's `getModelForInference` picks from; `ready` is never written

B = tables.training_batches
M = tables.trained_models
T = tables.trajectories

FIRST_VERSION = (1, 0, 0)
ERROR_LIMIT = 500  # characters of a failure kept in `training_batches.error`
IDS_PER_STATEMENT = 500  # trajectory ids per UPDATE … IN (…): well inside every driver's parameter limit
_VERSION = re.compile(r"v(\d+)\.(\d+)\.(\d+)")
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]+:)[^@\s]+@")
_SECRET_ASSIGNMENT = re.compile(r"(?i)\b(password|passwd|secret|token|api[_-]?key)(\s*[=:]\s*)\S+")


class BatchStateError(RuntimeError):
    """A batch is missing, or not in a state that allows what was asked."""


@dataclass(frozen=True)
class RegisteredModel:
    model_id: str
    version: str
    trajectories_marked: int


@dataclass(frozen=True)
class ServedModel:
    model_id: str
    version: str
    status: str
    storage_path: str
    base_model: str


def model_id_of(version: str) -> str:
    return f"babylon-agent-{version}"


def parse_version(text: str | None) -> tuple[int, int, int] | None:
    match = _VERSION.fullmatch(text) if isinstance(text, str) else None
    return None if match is None else (int(match[1]), int(match[2]), int(match[3]))


def registered_versions(engine: sa.Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(M.c.version).distinct()))


def next_version(engine: sa.Engine, taken: Iterable[str] = ()) -> str:
    """After the highest registered version and the highest of `taken` (e.g. the versions in storage)."""
    versions = [v for text in [*registered_versions(engine), *taken] if (v := parse_version(text))]
    if not versions:
        return "v{}.{}.{}".format(*FIRST_VERSION)
    major, minor, _ = max(versions)
    return f"v{major}.{minor + 1}.0"


def open_batch(
    engine: sa.Engine,
    batch_id: str,
    base_model: str,
    model_version: str,
    windows: Sequence[str],
    trajectory_ids: Sequence[str],
    rewards: Mapping[str, float],
    *,
    now: datetime | None = None,
) -> None:
    """A `pending` batch of these trajectories; `rewards` maps each of them to its training reward."""
    _check_version(model_version)
    if not trajectory_ids or len(set(trajectory_ids)) != len(trajectory_ids):
        raise ValueError(f"batch {batch_id}: want distinct trajectory ids, got {len(trajectory_ids)}")
    if set(rewards) != set(trajectory_ids):
        raise ValueError(f"batch {batch_id}: rewards must name exactly the batch's trajectories")
    if not all(math.isfinite(r) for r in rewards.values()):
        raise ValueError(f"batch {batch_id}: every reward must be a finite number")
    if bad := [w for w in windows if not is_window_id(w)]:
        raise ValueError(f"batch {batch_id}: not window ids: {bad[:3]}")
    moment = _moment(now)
    values = {
        "scenarioId": windows[0] if len(set(windows)) == 1 else None,
        "baseModel": base_model,
        "modelVersion": model_version,
        "trajectoryIds": json.dumps(list(trajectory_ids)),
        "rankingsJson": None,
        "rewardsJson": json.dumps({tid: float(rewards[tid]) for tid in trajectory_ids}),
        "trainingLoss": None,
        "policyImprovement": None,
        "status": "pending",
        "error": None,
        "createdAt": moment,
        "startedAt": None,
        "completedAt": None,
    }
    with engine.begin() as conn:
        status = _locked_status(conn, batch_id)
        if status is None:
            conn.execute(sa.insert(B).values(id=f"tb-{batch_id}", batchId=batch_id, **values))
        elif status in ("pending", "failed"):
            conn.execute(sa.update(B).where(B.c.batchId == batch_id).values(**values))
        else:
            raise BatchStateError(f"batch {batch_id} is {status}: only a pending or failed batch can be re-opened")


def start_batch(engine: sa.Engine, batch_id: str, *, now: datetime | None = None) -> None:
    _transition(engine, batch_id, ("pending",), status="training", startedAt=_moment(now))


def fail_batch(engine: sa.Engine, batch_id: str, error: str, *, now: datetime | None = None) -> None:
    """Mark the batch failed with a short, credential-free message; failing it again replaces the message."""
    _transition(engine, batch_id, ("pending", "training", "failed"), status="failed", error=short_error(error),
                completedAt=_moment(now))


def short_error(text: str) -> str:
    """What of a failure goes in the app's table: credentials in URLs or `key=value` masked, then truncated."""
    masked = _SECRET_ASSIGNMENT.sub(r"\1\2***", _URL_PASSWORD.sub(r"\1***@", str(text)))
    return masked if len(masked) <= ERROR_LIMIT else masked[: ERROR_LIMIT - 1] + "…"


def register_model(
    engine: sa.Engine,
    batch_id: str,
    version: str,
    storage_path: str,
    base_model: str,
    avg_reward: float | None,
    wandb_run_id: str | None,
    training_loss: float | None,
    policy_improvement: float | None,
    eval_metrics: Mapping[str, Any] | None = None,
    *,
    now: datetime | None = None,
) -> RegisteredModel:
    """Call once the adapter is stored at `storage_path`: all of the registration happens, or none of it."""
    _check_version(version)
    for name, value in (("avg_reward", avg_reward), ("training_loss", training_loss),
                        ("policy_improvement", policy_improvement)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{name} is {value}: a model with non-finite figures is not registered")
    moment = _moment(now)
    with engine.begin() as conn:
        batch = conn.execute(
            sa.select(B.c.status, B.c.modelVersion, B.c.trajectoryIds).where(B.c.batchId == batch_id).with_for_update()
        ).first()
        if batch is None or batch.status != "training":
            raise BatchStateError(f"batch {batch_id} is {batch.status if batch else 'missing'}: want training")
        if batch.modelVersion != version:
            raise BatchStateError(f"batch {batch_id} was opened for {batch.modelVersion}, not {version}")
        conn.execute(sa.update(B).where(B.c.batchId == batch_id).values(
            status="completed", trainingLoss=training_loss, policyImprovement=policy_improvement, completedAt=moment,
        ))
        marked = _mark_trained(conn, json.loads(batch.trajectoryIds), batch_id, moment)
        model_id = model_id_of(version)
        conn.execute(sa.insert(M).values(
            id=f"tm-{version}", modelId=model_id, version=version, baseModel=base_model, trainingBatch=batch_id,
            status=CANDIDATE, storagePath=storage_path, avgReward=avg_reward, wandbRunId=wandb_run_id,
            evalMetrics=dict(eval_metrics) if eval_metrics is not None else None, createdAt=moment, updatedAt=moment,
        ))
    return RegisteredModel(model_id, version, marked)


def trained_model_ids(engine: sa.Engine, base_model: str) -> frozenset[str]:
    """Every model id this pipeline registered on `base_model`, whatever its status now."""
    with engine.connect() as conn:
        return frozenset(conn.scalars(sa.select(M.c.modelId).where(M.c.baseModel == base_model)))


def _legacy_query(*columns: sa.ColumnElement) -> sa.Select:
    return (sa.select(*columns).where(M.c.status.in_(LEGACY_PICKED))
            .order_by(M.c.createdAt.desc(), M.c.id.desc()).limit(1))


def legacy_pick(conn: sa.Connection) -> str | None:
    """The version the app's legacy rule serves to agents without a pin: the newest `ready`/`deployed` row by
    `createdAt`. `serving.state` keeps one such row, the version in service; before it adopts a database,
    this is how the app chooses."""
    return conn.scalar(_legacy_query(M.c.version))


def model_in_service(engine: sa.Engine) -> ServedModel | None:
    """The version serving all agents (None: the base): the one `deployed` row, or on a database the pipeline
    has not deployed to yet, the version the app's legacy rule picks (the same query)."""
    with engine.connect() as conn:
        row = conn.execute(_legacy_query(M.c.modelId, M.c.version, M.c.status, M.c.storagePath, M.c.baseModel)).first()
    return None if row is None else ServedModel(row.modelId, row.version, row.status, row.storagePath, row.baseModel)


def registered_model(engine: sa.Engine, version: str) -> ServedModel | None:
    """A registered version's row, whatever its stage (None: not registered)."""
    query = (sa.select(M.c.modelId, M.c.version, M.c.status, M.c.storagePath, M.c.baseModel)
             .where(M.c.version == version).order_by(M.c.createdAt.desc(), M.c.id.desc()).limit(1))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return None if row is None else ServedModel(row.modelId, row.version, row.status, row.storagePath, row.baseModel)


def versions_on_base(engine: sa.Engine, base_model: str) -> list[str]:
    """The versions trained on this base (an adapter only fits its own) whatever their stage, lowest first."""
    query = sa.select(M.c.version).where(M.c.status.in_((CANDIDATE, CANARY, *LEGACY_PICKED, ARCHIVED)),
                                         M.c.baseModel == base_model).distinct()
    with engine.connect() as conn:
        versions = [v for v in conn.scalars(query) if parse_version(v) is not None]
    return sorted(versions, key=parse_version)


def _mark_trained(conn: sa.Connection, trajectory_ids: list[str], batch_id: str, moment: datetime) -> int:
    marked = 0
    for start in range(0, len(trajectory_ids), IDS_PER_STATEMENT):
        chunk = trajectory_ids[start:start + IDS_PER_STATEMENT]
        result = conn.execute(
            sa.update(T).where(T.c.trajectoryId.in_(chunk))
            .values(usedInTraining=True, trainedInBatch=batch_id, updatedAt=moment)
        )
        marked += result.rowcount
    return marked


@dataclass(frozen=True)
class BatchRecord:
    batch_id: str
    status: str
    model_version: str | None
    base_model: str | None
    rewards: dict[str, float]


def read_batch_record(engine: sa.Engine, batch_id: str) -> BatchRecord | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(B.c.status, B.c.modelVersion, B.c.baseModel, B.c.rewardsJson)
                           .where(B.c.batchId == batch_id)).first()
    if row is None:
        return None
    return BatchRecord(batch_id, row.status, row.modelVersion, row.baseModel, json.loads(row.rewardsJson or "{}"))


def batches_in_status(engine: sa.Engine, status: str) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(sa.select(B.c.batchId).where(B.c.status == status).order_by(B.c.batchId)))


def resume_failed_batch(engine: sa.Engine, batch_id: str) -> None:
    """Back to `training`, for a version that was trained and stored but whose registration failed."""
    _transition(engine, batch_id, ("failed",), status="training", error=None, completedAt=None)


def any_used_in_training(engine: sa.Engine, trajectory_ids: Sequence[str]) -> bool:
    with engine.connect() as conn:
        for start in range(0, len(trajectory_ids), IDS_PER_STATEMENT):
            chunk = list(trajectory_ids[start:start + IDS_PER_STATEMENT])
            used = sa.select(sa.func.count()).where(T.c.trajectoryId.in_(chunk), T.c.usedInTraining == sa.true())
            if conn.scalar(used):
                return True
    return False


def batch_status(engine: sa.Engine, batch_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.scalar(sa.select(B.c.status).where(B.c.batchId == batch_id))


def _transition(engine: sa.Engine, batch_id: str, allowed: tuple[str, ...], **values: Any) -> None:
    with engine.begin() as conn:
        status = _locked_status(conn, batch_id)
        if status not in allowed:
            raise BatchStateError(f"batch {batch_id} is {status or 'missing'}: want {' or '.join(allowed)}")
        conn.execute(sa.update(B).where(B.c.batchId == batch_id).values(**values))


def _locked_status(conn: sa.Connection, batch_id: str) -> str | None:
    """The batch's status, its row locked until the transaction ends (Postgres; SQLite locks on write)."""
    return conn.scalar(sa.select(B.c.status).where(B.c.batchId == batch_id).with_for_update())


def _check_version(version: str) -> None:
    if parse_version(version) is None:
        raise ValueError(f"not a model version (want vX.Y.Z): {version!r}")


def _moment(now: datetime | None) -> datetime:
    return to_utc_naive(now or datetime.now(UTC))
