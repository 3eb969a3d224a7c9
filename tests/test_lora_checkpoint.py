"""`lora_checkpoint` materialized for real: simulated windows scored up to RULER, the trainer started
through Dagster Pipes as a subprocess, the registry in the Babylon tables.

A first run registers v1.0.0 from a fresh LoRA, the next one continues from it; with nothing new
there is a clear failure and no row. A trainer killed mid-run, or a batch abandoned by a dead
orchestrator, leaves nothing registered, and the retry starts cleanly.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from babylon_pipeline.assets.lora_checkpoint import lora_checkpoint
from babylon_pipeline.instance import MODEL_VERSION_TAG_KEY, TRAINING_BATCH_TAG_KEY
from babylon_pipeline.model.base_record import BaseRecord, write_base_record
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trainer import TrainerResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.serving.state import promote, start_canary
from babylon_pipeline.sim import simulate
from babylon_pipeline.storage import ObjectStore, open_object_store
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.training.request import STORE_BASE, GRPOSettings, WandbOptions
from babylon_pipeline.training.trainer import WORK_DIR_ENV
from babylon_pipeline.windowing.training_batch import BatchLimits
from babylon_pipeline.windowing.training_run import plan_training_run
from tests.scored_windows import score_windows
from tests.training_data import shared_tiny_base, upload_base

START = datetime(2025, 11, 15, 10, 0)
BASE = BaseRecord(name="babylon-tiny-test", spec=STORE_BASE, source="embedded", parameters=0, context_tokens=192)
FAST = {"max_steps": 2, "micro_batch_size": 4, "wandb_mode": "disabled"}


class World:
    def __init__(self, root: Path, base_folder: Path) -> None:
        self.root = root
        self.url = f"sqlite:///{root / 'babylon.db'}"
        self.engine = make_engine(self.url)
        upgrade(self.engine)
        self.store_url = (root / "objects").as_uri()
        self.store: ObjectStore = open_object_store(self.store_url)
        upload_base(self.store, base_folder)
        write_base_record(self.store, BASE)
        self.hours = 0
        self.instance = dg.DagsterInstance.ephemeral()

    def simulate_and_score(self, hours: int) -> None:
        start = START.replace(hour=START.hour + self.hours)
        windows = simulate(self.engine, hours=hours, agents=10, seed=5, start=start).windows
        score_windows(self.engine, self.store, windows)
        self.hours += hours

    def materialize(self, trainer: TrainerResource | None = None, **config) -> dg.ExecuteInProcessResult:
        resources = {
            "trajectory_store": TrajectoryStore(database_url=self.url),
            "object_store": ObjectStoreResource(url=self.store_url),
            "trainer": trainer or TrainerResource(),
        }
        run_config = {"ops": {"lora_checkpoint": {"config": {**FAST, **config}}}}
        return dg.materialize([lora_checkpoint], resources=resources, run_config=run_config, raise_on_error=False,
                              instance=self.instance)

    def rows(self, table: sa.Table) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(sa.select(table))]

    def used(self) -> dict[str, str | None]:
        return {r["trajectoryId"]: r["trainedInBatch"] for r in self.rows(tables.trajectories) if r["usedInTraining"]}


class KilledTrainer(TrainerResource):
    """The subprocess trainer, SIGKILLed (or sent `signal_name`) after its first checkpoint (killed_trainer.py)."""

    signal_name: str = "KILL"

    def _start(self, context, extras):
        script = str(Path(__file__).with_name("killed_trainer.py"))
        command = self.subprocess_command(extras, [sys.executable, script, self.signal_name])
        return dg.PipesSubprocessClient().run(context=context, extras=extras, command=command)


def _run_folders(world_root: Path) -> list[Path]:
    return sorted((world_root / "trainer-work" / "runs").glob("*"))


@pytest.fixture
def world(tmp_path, tmp_path_factory, monkeypatch) -> World:
    monkeypatch.setenv(WORK_DIR_ENV, str(tmp_path / "trainer-work"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    world = World(tmp_path, shared_tiny_base(tmp_path_factory))
    world.simulate_and_score(hours=2)
    yield world
    world.engine.dispose()


def _failure(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.event_specific_data.error) for e in result.all_events if e.is_step_failure)


def test_training_registers_v1_then_continues_from_it(world: World) -> None:
    result = world.materialize()
    assert result.success, _failure(result)
    by_asset = {e.asset_key.to_user_string(): e for e in result.asset_materializations_for_node("lora_checkpoint")}
    event, versions = by_asset["lora_checkpoint"], by_asset["model_versions"]  # the table, after registering
    assert versions.metadata["candidate_versions"].value == 1 and "| v1.0.0 " in versions.metadata["versions"].value
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["model_id"] == "babylon-agent-v1.0.0" and meta["parent_version"] == "none (fresh LoRA)"
    assert meta["steps"] == 2 and meta["adapter_key"] == "models/v1.0.0/adapter_model.safetensors"  # from Pipes
    assert isinstance(meta["logprob_gap_after"], float) and meta["batch_groups"] >= 2

    [batch] = world.rows(tables.training_batches)
    assert batch["status"] == "completed" and batch["modelVersion"] == "v1.0.0" and batch["error"] is None
    ids = json.loads(batch["trajectoryIds"])
    assert set(json.loads(batch["rewardsJson"])) == set(ids) and meta["trajectories_marked"] == len(ids)
    [model] = world.rows(tables.trained_models)
    assert (model["modelId"], model["status"], model["baseModel"]) == ("babylon-agent-v1.0.0", "candidate", BASE.name)
    assert model["storagePath"] == f"{world.store_url}/models/v1.0.0" and model["trainingBatch"] == batch["batchId"]
    assert world.used() == dict.fromkeys(ids, batch["batchId"])
    assert {"adapter_model.safetensors", "adapter_config.json", "metadata.json"} <= {
        key.rsplit("/", 1)[1] for key in world.store.list_keys("models/v1.0.0")}
    assert world.store.exists(f"training-batches/{batch['batchId']}/groups.jsonl")
    assert world.instance.get_dynamic_partitions("model_versions") == ["v1.0.0"]
    stored = world.store.get_json("models/v1.0.0/metadata.json")
    assert event.tags["dagster/data_version"] == stored["data_hash"]
    settings = stored["settings"]  # the base's context, and the room the local policy feeds its model within it
    assert (settings["max_seq_len"], settings["max_prompt_tokens"]) == (BASE.context_tokens, BASE.context_tokens - 96)

    again = world.materialize()  # nothing new: a clear failure, nothing written
    assert not again.success and "nothing to train on" in _failure(again)
    assert len(world.rows(tables.training_batches)) == 1 and len(world.rows(tables.trained_models)) == 1

    world.simulate_and_score(hours=1)
    with world.engine.begin() as conn:  # evaluated and deployed: a candidate is no parent, the version in service is
        conn.execute(sa.update(tables.trained_models).values(evalMetrics={"verdict": "better",
                                                                          "guardrails_passed": True}))
    start_canary(world.engine, "v1.0.0", 0.1, actor="test", reason="evaluated")
    promote(world.engine, actor="test", reason="no regression")
    second = world.materialize()
    assert second.success, _failure(second)
    [event] = [e for e in second.asset_materializations_for_node("lora_checkpoint")
               if e.asset_key == dg.AssetKey("lora_checkpoint")]
    assert event.metadata["model_id"].value == "babylon-agent-v1.1.0"
    assert event.metadata["parent_version"].value == "v1.0.0"
    assert world.store.get_json("models/v1.1.0/metadata.json")["parent_version"] == "v1.0.0"
    assert world.instance.get_dynamic_partitions("model_versions") == ["v1.0.0", "v1.1.0"]


def test_a_killed_trainer_registers_nothing_and_the_retry_starts_cleanly(world: World) -> None:
    killed = world.materialize(trainer=KilledTrainer(), checkpoint_every=1, max_steps=3)
    assert not killed.success
    [batch] = world.rows(tables.training_batches)
    assert batch["status"] == "failed" and "failed with code -9" in batch["error"]  # SIGKILL: nothing reported
    assert world.rows(tables.trained_models) == [] and world.used() == {}
    assert not world.store.exists("models/v1.0.0/metadata.json")  # no complete version, nothing points at it
    assert world.store.list_keys(f"checkpoints/{batch['batchId']}/checkpoint-1")  # what it had stored stays

    [dead_folder] = _run_folders(world.root)  # SIGKILL: the trainer could not clean its scratch folder
    assert any((dead_folder / "scratch").iterdir())

    retry = world.materialize()
    assert retry.success, _failure(retry)
    [batch_after] = world.rows(tables.training_batches)
    assert batch_after["batchId"] == batch["batchId"] and batch_after["status"] == "completed"
    assert batch_after["error"] is None
    assert [m["version"] for m in world.rows(tables.trained_models)] == ["v1.0.0"]
    [folder] = _run_folders(world.root)  # the dead run's folder is gone; the finished one is kept, scratch-free
    assert folder != dead_folder and (folder / ".done").exists() and not (folder / "scratch").exists()


def test_a_trainer_sent_sigterm_exits_cleanly_and_leaves_nothing_half_written(world: World) -> None:
    stopped = world.materialize(trainer=KilledTrainer(signal_name="TERM"), checkpoint_every=1, max_steps=3,
                                wandb_mode="offline")
    assert not stopped.success
    [batch] = world.rows(tables.training_batches)
    assert batch["status"] == "failed" and "TrainerTerminated: stopped by signal 15" in batch["error"]
    assert world.rows(tables.trained_models) == [] and world.used() == {}
    assert world.store.list_keys("models/v1.0.0") == []  # no adapter, no metadata.json, no claim
    assert _run_folders(world.root) == []  # scratch and the offline W&B run of the failed run are removed


def test_a_non_finite_loss_fails_the_batch_with_its_reason_and_registers_nothing(world: World,
                                                                                 tmp_path_factory) -> None:
    upload_base(world.store, shared_tiny_base(tmp_path_factory), poison=True)  # a NaN in the base's weights
    result = world.materialize()
    assert not result.success
    [batch] = world.rows(tables.training_batches)
    assert batch["status"] == "failed" and batch["error"].startswith("TrainerFailed: NonFiniteLoss: ")
    assert world.rows(tables.trained_models) == [] and world.used() == {}
    assert world.store.list_keys("models/v1.0.0") == []
    tags = world.instance.get_run_by_id(result.run_id).tags  # what the run-failure alert names
    assert (tags[TRAINING_BATCH_TAG_KEY], tags[MODEL_VERSION_TAG_KEY]) == (batch["batchId"], "v1.0.0")


def test_a_batch_abandoned_in_training_is_reclaimed_by_the_next_run(world: World) -> None:
    abandoned = plan_training_run(world.engine, world.store, world.store_url, BASE, BatchLimits(),
                                  GRPOSettings(max_steps=2), WandbOptions(mode="disabled"))
    [batch] = world.rows(tables.training_batches)
    assert batch["status"] == "training"  # the orchestrator died here, before starting the trainer

    result = world.materialize()
    assert result.success, _failure(result)
    [batch] = world.rows(tables.training_batches)
    assert batch["batchId"] == abandoned.batch_id and batch["status"] == "completed"


def test_without_a_base_model_the_run_says_what_to_materialize(world: World) -> None:
    world.store.delete("models/base/metadata.json")
    result = world.materialize()
    assert not result.success and "materialize base_model first" in _failure(result)
    assert world.rows(tables.training_batches) == []
