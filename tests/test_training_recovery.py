"""What a dead training run leaves behind, and how the next run's planning puts it right (no trainer is
started here: the trainer's files and process are stood in for, the registry and the object store are real)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from datetime import datetime

import boto3
import pytest
import sqlalchemy as sa

from babylon_pipeline.model.base_record import BaseRecord
from babylon_pipeline.sim import simulate
from babylon_pipeline.storage import LocalObjectStore, ObjectStore, S3ObjectStore, batch_key, model_key
from babylon_pipeline.store import tables
from babylon_pipeline.store.registry import fail_batch
from babylon_pipeline.training.liveness import TRAINER_RECORD, process_started
from babylon_pipeline.training.request import STORE_BASE, GRPOSettings, WandbOptions
from babylon_pipeline.windowing.recovery import claim_version
from babylon_pipeline.windowing.training_batch import BatchLimits
from babylon_pipeline.windowing.training_run import NothingToTrain, fail_run, plan_training_run
from tests.scored_windows import score_windows
from tests.s3_server import REGION

BASE = BaseRecord(name="babylon-tiny-test", spec=STORE_BASE, source="embedded", parameters=0, context_tokens=192)
URL = "file:///unused-by-planning"


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return S3ObjectStore(boto3.client("s3", endpoint_url=endpoint, region_name=REGION), bucket, "babylon")


@pytest.fixture
def scored(db, tmp_path):
    store = LocalObjectStore(tmp_path / "objects")
    windows = simulate(db, hours=1, agents=10, seed=5, start=datetime(2025, 11, 15, 10, 0)).windows
    score_windows(db, store, windows)
    return db, store


def _plan(engine, store, **kwargs):
    return plan_training_run(engine, store, URL, BASE, BatchLimits(), GRPOSettings(max_steps=1),
                             WandbOptions(mode="disabled"), **kwargs)


def _write_version(store: ObjectStore, run, complete: bool) -> None:
    """What the trainer writes: the adapter first, metadata.json last (only when it finished)."""
    store.put_bytes(model_key(run.version, "adapter_model.safetensors"), b"weights")
    if complete:
        store.put_json(model_key(run.version, "metadata.json"), {
            "version": run.version, "batch_id": run.batch_id, "data_hash": run.batch.data_hash,
            "wandb_run_id": "offline-1", "metrics": {"mean_loss": 0.1, "steps": 1, "logprob_gap_before": 0.0,
                                                     "logprob_gap_after": 0.5}})


def _rows(engine, table):
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(table))]


def test_a_stored_version_whose_registration_failed_is_registered_by_the_next_run(scored) -> None:
    engine, store = scored
    run = _plan(engine, store)
    _write_version(store, run, complete=True)
    fail_run(engine, store, run, ConnectionError("database went away during registration"))
    assert store.exists(model_key(run.version, "metadata.json"))  # a complete version is kept for adoption

    with pytest.raises(NothingToTrain):  # the adopted version used every candidate
        _plan(engine, store)
    [model] = _rows(engine, tables.trained_models)
    [batch] = _rows(engine, tables.training_batches)
    assert (model["version"], model["trainingBatch"], model["status"]) == (run.version, run.batch_id, "candidate")
    assert batch["status"] == "completed" and batch["error"] is None
    assert {r["trainedInBatch"] for r in _rows(engine, tables.trajectories) if r["usedInTraining"]} == {run.batch_id}


def test_an_incomplete_version_of_a_dead_run_is_removed_and_its_batch_reclaimed(scored) -> None:
    engine, store = scored
    dead = _plan(engine, store)
    _write_version(store, dead, complete=False)  # the worker was killed mid-upload: batch still `training`

    again = _plan(engine, store)
    assert again.recovery.abandoned_batches == [dead.batch_id]
    assert again.recovery.removed_versions == [dead.version]
    assert again.version == dead.version and again.batch_id == dead.batch_id  # same data, same free number
    assert store.list_keys(f"models/{again.version}") == [f"models/{again.version}/claim.json"]


def test_a_complete_version_whose_data_was_trained_since_is_removed_and_never_reused(scored) -> None:
    engine, store = scored
    first = _plan(engine, store)
    _write_version(store, first, complete=True)
    store.put_json(model_key("v1.7.0", "metadata.json"), {"batch_id": "grpo-unknown"})  # no such batch
    fail_batch(engine, first.batch_id, "registration failed")
    with engine.begin() as conn:  # the same data trained by someone else meanwhile
        conn.execute(sa.update(tables.trajectories).values(usedInTraining=True, trainedInBatch="other"))
    with pytest.raises(NothingToTrain):
        _plan(engine, store)
    assert _rows(engine, tables.trained_models) == []
    assert store.list_keys("models") == []


def test_the_version_counter_skips_every_version_in_storage_and_claims_are_exclusive(db, store) -> None:
    store.put_bytes(model_key("v1.4.0", "adapter_model.safetensors"), b"left by someone")
    first = claim_version(db, store, "batch-a")
    second = claim_version(db, store, "batch-b")
    assert (first, second) == ("v1.5.0", "v1.6.0")
    assert json.loads(store.get_bytes(model_key(first, "claim.json")))["batch_id"] == "batch-a"
    # the claim itself is create-if-absent: a second writer of the same version loses
    assert not store.put_if_unchanged(model_key(first, "claim.json"), b'{"batch_id": "batch-b"}', None)


# SIGTERM handled as the trainer handles it (it installs its own handler): a pytest-xdist worker ignores
# SIGINT, and an in-process Dagster run maps SIGTERM to SIGINT's handler and leaves it so, which a child
# would inherit as "ignored" and the stop would take the 30 s grace.
TRAINER_STANDIN = textwrap.dedent("""
    import signal, sys, time
    from babylon_pipeline.storage import LocalObjectStore, batch_key
    from babylon_pipeline.training.liveness import TRAINER_RECORD, own_process_group, trainer_record
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    own_process_group()
    LocalObjectStore(sys.argv[1]).put_json(batch_key(sys.argv[2], TRAINER_RECORD), trainer_record())
    print("recorded", flush=True)
    time.sleep(600)
""")


def test_the_trainer_of_a_dead_run_is_stopped_before_its_batch_is_reclaimed(scored) -> None:
    engine, store = scored
    dead = _plan(engine, store)
    trainer = subprocess.Popen([sys.executable, "-c", TRAINER_STANDIN, str(store.root), dead.batch_id],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert trainer.stdout.readline().strip() == "recorded"
        record = store.get_json(batch_key(dead.batch_id, TRAINER_RECORD))
        assert record["pid"] == record["pgid"] == trainer.pid and record["started"] == process_started(trainer.pid)
        began = time.monotonic()
        again = _plan(engine, store)
        assert trainer.wait(timeout=5) != 0 and time.monotonic() - began < 30
        assert again.recovery.stopped_trainers == [dead.batch_id]
        assert again.recovery.abandoned_batches == [dead.batch_id]
        # a record of a process that is gone (or whose pid was reused) stops nothing
        assert _plan(engine, store).recovery.stopped_trainers == []
    finally:
        trainer.kill()
        trainer.wait()


def test_recorded_logprobs_count_as_behaviour_only_for_registered_versions(scored) -> None:
    """A model name that merely looks like ours (`babylon-agent-v9.9.9`) is not our policy."""
    engine, store = scored
    first = _plan(engine, store)
    _write_version(store, first, complete=True)
    from babylon_pipeline.windowing.training_run import register_trained_version

    register_trained_version(engine, store, first)
    _release_and_relabel(engine, store, ["babylon-agent-" + first.version, "babylon-agent-v9.9.9"])
    run = _plan(engine, store)
    kept_models = {t["metadata"]["model"] for g in run.batch.groups for t in g["trajectories"]
                   if any(turn.get("logprobs") for turn in t["messages_and_choices"] if isinstance(turn, dict))}
    assert kept_models == {"babylon-agent-" + first.version}
    assert run.batch.logprobs_kept > 0 and run.batch.logprobs_removed > 0


def _release_and_relabel(engine, store, models: list[str]) -> None:
    """The trajectories back to untrained, sampled alternately by `models` at temperature 1 with logprobs."""
    from babylon_pipeline.art import from_jsonl, to_jsonl
    from babylon_pipeline.windowing.files import GROUPS, publish_window_files

    with engine.begin() as conn:
        conn.execute(sa.update(tables.trajectories).values(usedInTraining=False, trainedInBatch=None))
    windows = {r["windowId"] for r in _rows(engine, tables.trajectories)}
    for window in windows:
        from babylon_pipeline.windowing.groups import read_window_groups

        groups = read_window_groups(store, window)
        for group in groups:
            for n, trajectory in enumerate(group["trajectories"]):
                trajectory["metadata"].update(model=models[n % len(models)], temperature=1.0, top_p=None)
                for turn in trajectory["messages_and_choices"]:
                    if isinstance(turn, dict) and "finish_reason" in turn:
                        turn["logprobs"] = {"content": [{"token": "token_id:7", "bytes": [], "logprob": -0.5,
                                                         "top_logprobs": []}], "refusal": None}
        publish_window_files(store, window, {GROUPS: to_jsonl(groups)}, writer="test")
        assert from_jsonl(to_jsonl(groups)) == groups
