"""Training batches through their states, model registration all-or-nothing, versions and the model in service."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.registry import (
    BatchStateError,
    RegisteredModel,
    ServedModel,
    fail_batch,
    model_in_service,
    next_version,
    open_batch,
    register_model,
    short_error,
    start_batch,
    versions_on_base,
)
from tests.training_rows import insert_rows, scored_group

W1, W2 = "2025-11-15T10:00", "2025-11-15T11:00"
NOW = datetime(2025, 11, 15, 14, 0)
IDS = [f"{W1}-s-0", f"{W1}-s-1", f"{W1}-s-2"]
REWARDS = {IDS[0]: 0.1, IDS[1]: 0.9, IDS[2]: 0.5}


@pytest.fixture
def rows(db):
    insert_rows(db, [*scored_group(W1, "s", [0.1, 0.9, 0.5]), *scored_group(W2, "s", [0.2, 0.4])])
    return db


def _batch(db, batch_id: str):
    with db.connect() as conn:
        return conn.execute(sa.select(tables.training_batches).where(tables.training_batches.c.batchId == batch_id)).one()


def _trajectories(db) -> dict[str, tuple[bool, str | None]]:
    with db.connect() as conn:
        return {r.trajectoryId: (r.usedInTraining, r.trainedInBatch) for r in conn.execute(sa.select(tables.trajectories))}


def _models(db) -> list:
    with db.connect() as conn:
        return conn.execute(sa.select(tables.trained_models).order_by(tables.trained_models.c.createdAt)).all()


def _add_model(db, version: str, status: str, created: datetime, deployed: datetime | None = None) -> None:
    with db.begin() as conn:
        conn.execute(sa.insert(tables.trained_models).values(
            id=f"tm-{version}-{status}", modelId=f"babylon-agent-{version}", version=version, baseModel="base",
            status=status, storagePath=f"models/{version}", createdAt=created, updatedAt=created, deployedAt=deployed,
        ))


def _register(db, batch_id: str = "b1", version: str = "v1.0.0", **overrides) -> RegisteredModel:
    arguments = {
        "storage_path": f"models/{version}", "base_model": "base", "avg_reward": 0.5, "wandb_run_id": "run-1",
        "training_loss": 0.25, "policy_improvement": 0.1, "eval_metrics": {"win_rate": 0.6}, "now": NOW,
    } | overrides
    return register_model(db, batch_id, version, **arguments)


def test_a_batch_goes_pending_training_completed_and_registers_its_model(rows) -> None:
    open_batch(rows, "b1", "base", "v1.0.0", [W1, W1], IDS, REWARDS, now=NOW - timedelta(hours=1))
    batch = _batch(rows, "b1")
    assert (batch.status, batch.scenarioId, batch.modelVersion, batch.baseModel) == ("pending", W1, "v1.0.0", "base")
    assert json.loads(batch.trajectoryIds) == IDS and json.loads(batch.rewardsJson) == REWARDS
    assert batch.createdAt == NOW - timedelta(hours=1) and batch.startedAt is None

    start_batch(rows, "b1", now=NOW - timedelta(minutes=50))
    assert (_batch(rows, "b1").status, _batch(rows, "b1").startedAt) == ("training", NOW - timedelta(minutes=50))

    assert _register(rows) == RegisteredModel("babylon-agent-v1.0.0", "v1.0.0", 3)
    batch = _batch(rows, "b1")
    assert (batch.status, batch.trainingLoss, batch.policyImprovement, batch.completedAt) == ("completed", 0.25, 0.1, NOW)
    [model] = _models(rows)
    assert (model.modelId, model.version, model.status, model.storagePath, model.baseModel, model.trainingBatch) == (
        "babylon-agent-v1.0.0", "v1.0.0", "candidate", "models/v1.0.0", "base", "b1")
    assert (model.avgReward, model.wandbRunId, model.evalMetrics, model.updatedAt) == (0.5, "run-1", {"win_rate": 0.6}, NOW)
    trajectories = _trajectories(rows)
    assert {tid: trajectories[tid] for tid in IDS} == dict.fromkeys(IDS, (True, "b1"))
    assert trajectories[f"{W2}-s-0"] == (False, None)
    with rows.connect() as conn:
        updated = conn.scalar(sa.select(tables.trajectories.c.updatedAt).where(tables.trajectories.c.trajectoryId == IDS[0]))
    assert updated == NOW


def test_a_failure_inside_registration_leaves_nothing_of_it(rows) -> None:
    open_batch(rows, "b1", "base", "v1.0.0", [W1], IDS, REWARDS, now=NOW)
    start_batch(rows, "b1", now=NOW)
    with rows.begin() as conn:  # someone registered this model id already: the last statement will fail
        conn.execute(sa.insert(tables.trained_models).values(
            id="other", modelId="babylon-agent-v1.0.0", version="v1.0.0", baseModel="base", storagePath="elsewhere",
            updatedAt=NOW,
        ))
    with pytest.raises(sa.exc.IntegrityError):
        _register(rows)
    batch = _batch(rows, "b1")
    assert (batch.status, batch.completedAt, batch.trainingLoss) == ("training", None, None)
    assert set(_trajectories(rows).values()) == {(False, None)}
    assert [m.id for m in _models(rows)] == ["other"]


def test_registration_needs_a_training_batch_of_that_version_and_finite_figures(rows) -> None:
    with pytest.raises(BatchStateError, match="missing"):
        _register(rows, "nope")
    open_batch(rows, "b1", "base", "v1.0.0", [W1], IDS, REWARDS, now=NOW)
    with pytest.raises(BatchStateError, match="pending: want training"):
        _register(rows)
    start_batch(rows, "b1", now=NOW)
    with pytest.raises(BatchStateError, match="opened for v1.0.0, not v1.1.0"):
        _register(rows, version="v1.1.0")
    with pytest.raises(ValueError, match="training_loss is nan"):
        _register(rows, training_loss=float("nan"))
    _register(rows)
    with pytest.raises(BatchStateError, match="completed"):
        _register(rows)


def test_reopening_a_failed_or_pending_batch_starts_it_cleanly(rows) -> None:
    open_batch(rows, "b1", "base", "v1.0.0", [W1], IDS, REWARDS, now=NOW - timedelta(hours=3))
    open_batch(rows, "b1", "base", "v1.0.0", [W1], IDS[:2], {IDS[0]: 0.0, IDS[1]: 1.0}, now=NOW - timedelta(hours=2))
    assert json.loads(_batch(rows, "b1").trajectoryIds) == IDS[:2]
    start_batch(rows, "b1", now=NOW - timedelta(hours=2))
    fail_batch(rows, "b1", "CUDA out of memory", now=NOW - timedelta(hours=1))
    failed = _batch(rows, "b1")
    assert (failed.status, failed.error, failed.completedAt) == ("failed", "CUDA out of memory", NOW - timedelta(hours=1))

    ids = [f"{W1}-s-0", f"{W2}-s-0"]  # two windows: no single scenarioId
    open_batch(rows, "b1", "base2", "v1.1.0", [W1, W2], ids, {ids[0]: 0.3, ids[1]: 0.7}, now=NOW)
    reopened = _batch(rows, "b1")
    assert (reopened.status, reopened.error, reopened.startedAt, reopened.completedAt, reopened.createdAt) == (
        "pending", None, None, None, NOW)
    assert (reopened.scenarioId, reopened.baseModel, reopened.modelVersion) == (None, "base2", "v1.1.0")
    assert json.loads(reopened.rewardsJson) == {ids[0]: 0.3, ids[1]: 0.7}
    with rows.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.training_batches)) == 1


def test_a_training_or_completed_batch_is_not_reopened_and_states_only_move_forward(rows) -> None:
    open_batch(rows, "b1", "base", "v1.0.0", [W1], IDS, REWARDS, now=NOW)
    start_batch(rows, "b1", now=NOW)
    with pytest.raises(BatchStateError, match="b1 is training"):
        open_batch(rows, "b1", "base", "v1.0.0", [W1], IDS, REWARDS, now=NOW)
    with pytest.raises(BatchStateError, match="want pending"):
        start_batch(rows, "b1", now=NOW)
    _register(rows)
    with pytest.raises(BatchStateError, match="b1 is completed"):
        open_batch(rows, "b1", "base", "v1.0.0", [W1], IDS, REWARDS, now=NOW)
    with pytest.raises(BatchStateError, match="b1 is completed"):
        fail_batch(rows, "b1", "late failure", now=NOW)
    with pytest.raises(BatchStateError, match="missing"):
        start_batch(rows, "unknown", now=NOW)
    assert _batch(rows, "b1").status == "completed"


@pytest.mark.parametrize(("ids", "rewards", "windows", "version", "problem"), [
    ([], {}, [W1], "v1.0.0", "distinct trajectory ids"),
    ([IDS[0], IDS[0]], {IDS[0]: 0.1}, [W1], "v1.0.0", "distinct trajectory ids"),
    (IDS[:2], {IDS[0]: 0.1}, [W1], "v1.0.0", "rewards must name exactly"),
    (IDS[:1], {IDS[0]: float("inf")}, [W1], "v1.0.0", "finite"),
    (IDS[:1], {IDS[0]: 0.1}, ["2025-11-15 10:00"], "v1.0.0", "not window ids"),
    (IDS[:1], {IDS[0]: 0.1}, [W1], "1.0.0", "not a model version"),
])
def test_a_batch_must_be_well_formed(db, ids, rewards, windows, version, problem) -> None:
    with pytest.raises(ValueError, match=problem):
        open_batch(db, "b1", "base", version, windows, ids, rewards, now=NOW)


def test_failure_messages_are_short_and_keep_no_credentials(rows) -> None:
    message = ("could not connect to postgresql://babylon:s3cr3t@db:5432/babylon; AWS_SECRET token=abc123 "
               "password: hunter2 " + "x" * 1000)
    kept = short_error(message)
    assert "s3cr3t" not in kept and "abc123" not in kept and "hunter2" not in kept
    assert "postgresql://babylon:***@db:5432" in kept and len(kept) == 500
    open_batch(rows, "b1", "base", "v1.0.0", [W1], IDS, REWARDS, now=NOW)
    fail_batch(rows, "b1", message, now=NOW)
    assert _batch(rows, "b1").error == kept


def test_versions_start_at_one_and_bump_the_minor_of_the_highest_valid_one(db) -> None:
    assert next_version(db) == "v1.0.0"
    _add_model(db, "v1.0.0", "archived", NOW)
    assert next_version(db) == "v1.1.0"
    for version in ("v1.9.0", "v1.10.2", "v2", "latest", "v1.99.x"):
        _add_model(db, version, "ready", NOW)
    assert next_version(db) == "v1.11.0"  # compared as numbers, not text; unparsable rows ignored
    _add_model(db, "v2.0.0", "ready", NOW)
    assert next_version(db) == "v2.1.0"


def test_the_model_in_service_is_what_the_apps_legacy_rule_picks_and_never_a_candidate_or_canary(db) -> None:
    assert model_in_service(db) is None
    _add_model(db, "v1.0.0", "archived", NOW - timedelta(days=3))
    _add_model(db, "v1.1.0", "training", NOW - timedelta(hours=1))
    _add_model(db, "v1.6.0", "candidate", NOW - timedelta(hours=1))
    _add_model(db, "v1.7.0", "canary", NOW - timedelta(hours=1))
    assert model_in_service(db) is None
    _add_model(db, "v1.4.0", "deployed", NOW - timedelta(days=5), deployed=NOW - timedelta(days=4))
    assert model_in_service(db) == ServedModel("babylon-agent-v1.4.0", "v1.4.0", "deployed", "models/v1.4.0", "base")
    _add_model(db, "v1.2.0", "ready", NOW - timedelta(days=2))  # a legacy database: the newest `createdAt` wins
    _add_model(db, "v1.3.0", "ready", NOW - timedelta(days=1))
    assert model_in_service(db) == ServedModel("babylon-agent-v1.3.0", "v1.3.0", "ready", "models/v1.3.0", "base")


def test_the_versions_on_a_base_are_every_stage_but_training(db) -> None:
    for version, status in (("v1.0.0", "archived"), ("v1.1.0", "deployed"), ("v1.10.0", "candidate"),
                            ("v1.3.0", "canary"), ("v1.4.0", "training"), ("v1.5.0", "ready")):
        _add_model(db, version, status, NOW)
    assert versions_on_base(db, "base") == ["v1.0.0", "v1.1.0", "v1.3.0", "v1.5.0", "v1.10.0"]
    assert versions_on_base(db, "another") == []
