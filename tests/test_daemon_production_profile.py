"""The production profile as the orchestrator machine runs it: `dagster-daemon` launches every run.

Nothing here materializes an asset in-process. The instance is the committed `dagster.yaml` (dagster-postgres
storage, the queued run coordinator and its limits) on a database of its own; the trajectory store is Postgres,
the object store the loopback S3 server, the judge and the inference server loopback HTTP servers, the base a
local folder standing for a hub id. The simulator has recorded the three hourly windows that ended last
(`BABYLON_START` is the first), and the daemon — not the test — launches the window runs (the hourly schedule),
the training run (the readiness sensor), the evaluation and the canary (the release sensor); a person (the
test, through `dagster` commands) builds the base, runs a window by hand and asks to train now.

The clock: the schedule is switched off and on (`dagster schedule stop`, `start`) and its start moved back to
before the first window's :05 tick: the state a daemon that ran then and went down leaves behind. Dagster
evaluates only the last of the ticks it missed (an asset job's schedule has no partition set to catch up
with); our schedule's tick takes the two earlier windows too (`windowing/catch_up.py`). (libfaketime could
move the daemon's clock instead, but under it Python 3.11's timed waits hang or fail with EINVAL.) The first
daemon is killed (SIGKILL, the daemon process alone) while the window runs it launched are in progress; a
second one takes over. Afterwards: each window ran once from the schedule, no run key was launched twice, the
runs in progress when the daemon died finished, and the queue's limits held (never two training runs at
once — the person's "train now" waited — and never two runs of one window at once — the person's run of a window or the schedule's waited).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa

from dagster._core.scheduler.instigation import InstigatorType, ScheduleInstigatorData

from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.serving.state import read_deployment
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.windows import window_of
from tests.conftest import scratch_database
from tests.dagster_ui import LOCATION, REPO, process_session, stop_session
from tests.inference_server import InferenceServer
from tests.judge_server import JudgeServer
from tests.s3_server import REGION
from tests.training_data import save_tiny_base

BIN = Path(sys.executable).parent
WORKSPACE = ["-m", LOCATION, "-d", str(REPO)]
SCHEDULE = "window_job_schedule"
WAIT_S = 600
AGENTS, STEPS = 4, 2
DONE = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def hub_like_base(folder: Path) -> Path:
    """A local folder standing for a hub id: safetensors weights, config, a tokenizer with Qwen 2.5's template."""
    save_tiny_base(folder)
    config = folder / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    settings["chat_template"] = files("trl").joinpath("chat_templates/qwen2_5.jinja").read_text()
    config.write_text(json.dumps(settings))
    return folder


@dataclass
class Production:
    env: dict[str, str]
    home: Path
    logs: Path
    store_url: str
    windows: list[str]  # window ids, oldest first; the last ends before now
    inference: InferenceServer

    def instance(self) -> dg.DagsterInstance:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in self.env.items():
                patch.setenv(name, value)
            return dg.DagsterInstance.get()

    def simulate(self, first: str, hours: int) -> None:
        command = [str(BIN / "babylon"), "simulate", "--hours", str(hours), "--agents", str(AGENTS),
                   "--steps", str(STEPS), "--seed", "1", "--start", first]
        subprocess.run(command, env=self.env, cwd=REPO, check=True, capture_output=True, timeout=120)

    def command(self, *words: str) -> None:
        """A `dagster` command as a person runs it from a shell; a launched run is queued for the daemon."""
        command = [str(BIN / "dagster"), *words, *WORKSPACE]
        done = subprocess.run(command, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def production(tmp_path, s3_endpoint: str) -> Iterator[Production]:
    with scratch_database("babylon_prod_store") as store_url, scratch_database("babylon_prod_dagster") as dagster_url:
        yield from _production(tmp_path, s3_endpoint, store_url, sa.engine.make_url(dagster_url).database)


def _production(tmp_path, s3_endpoint: str, store_url: str, dagster_db: str) -> Iterator[Production]:
    judge, inference = JudgeServer().start(), InferenceServer(adapter_root="/adapters").start()
    for version in ("v1.0.0", "v1.1.0"):
        inference.publish(version)  # the adapter sync to the server's disk, which is not ours to run
    bucket = f"babylon-prod-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint, region_name=REGION).create_bucket(Bucket=bucket)
    home = tmp_path / "dagster-home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")  # the committed production instance, unchanged
    now = datetime.now(UTC).replace(tzinfo=None)
    last = window_of(now - timedelta(hours=1, minutes=5))  # its :05 tick has passed, the next one has not
    windows = [window_of(datetime.fromisoformat(last) - timedelta(hours=h)) for h in (2, 1, 0)]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BABYLON_", "DAGSTER_", "PYTEST_"))},
        "PYTHONPATH": str(REPO),
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "postgres",
        "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": dagster_db,
        "DATABASE_URL": store_url,
        "BABYLON_START": partition_key_of(windows[0]),
        "BABYLON_STORAGE_URL": f"s3://{bucket}/babylon",
        "AWS_ENDPOINT_URL": s3_endpoint, "AWS_REGION": REGION,
        "BABYLON_JUDGE_BASE_URL": judge.base_url, "BABYLON_JUDGE_MODEL": "judge-test",
        "BABYLON_JUDGE_API_KEY": "sk-judge-test",
        "BABYLON_INFERENCE_BASE_URL": inference.base_url, "BABYLON_INFERENCE_ADAPTER_ROOT": "/adapters",
        "BASE_MODEL": str(hub_like_base(tmp_path / "hub-base")),
        "BABYLON_TRAINER_WORK_DIR": str(tmp_path / "trainer"),
        "WANDB_MODE": "offline",
        "BABYLON_TRAIN_MIN_TRAJECTORIES": "6", "BABYLON_TRAIN_MIN_GROUPS": "1",
        "BABYLON_TRAIN_MIN_INTERVAL_MINUTES": "0",
        "BABYLON_ALERT_STALE_AFTER_MINUTES": "600",
        "OMP_NUM_THREADS": "1",
    }
    subprocess.run([str(BIN / "babylon"), "db", "upgrade"], env=env, cwd=REPO, check=True, capture_output=True)
    try:
        yield Production(env, home, tmp_path / "logs", store_url, windows, inference)
    finally:
        judge.stop()
        inference.stop()


@pytest.fixture
def daemons(production: Production) -> Iterator[Callable[..., subprocess.Popen]]:
    """Starts `dagster-daemon run` in its own session, as many times as asked."""
    started: list[subprocess.Popen] = []
    production.logs.mkdir(exist_ok=True)

    def start() -> subprocess.Popen:
        log = production.logs / f"daemon-{len(started) + 1}.log"
        process = subprocess.Popen([str(BIN / "dagster-daemon"), "run", *WORKSPACE], env=production.env, cwd=REPO,
                                   stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    yield start
    for process in started:
        stop_session(process)  # the whole session: a killed daemon's code server and runs too


def wait_for(what: str, condition: Callable[[], object], logs: Path, timeout_s: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(2)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-4000:]}" for log in sorted(logs.glob("*.log")))
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}\n{tails}")


def failure_text(instance: dg.DagsterInstance, run_id: str) -> str:
    return " ".join(str(event.dagster_event.event_specific_data)
                    for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE))


def rewind_schedule(instance: dg.DagsterInstance, to: datetime) -> None:
    """The window schedule's state as if it had been switched on at `to` (and no daemon had run since)."""
    [state] = instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
    data = state.instigator_data
    instance.update_instigator_state(state.with_data(ScheduleInstigatorData(data.cron_schedule, to.timestamp())))


def runs(instance: dg.DagsterInstance, **filters) -> list[dg.DagsterRun]:
    return [record.dagster_run for record in instance.get_run_records(dg.RunsFilter(**filters))]


def scheduled(instance: dg.DagsterInstance, partition: str) -> list[dg.DagsterRun]:
    return [run for run in runs(instance, job_name="window_job", tags={"dagster/partition": partition})
            if run.tags.get("dagster/schedule_name") == SCHEDULE]


def test_the_daemon_runs_the_production_profile_and_a_killed_daemon_loses_and_repeats_nothing(
        production: Production, daemons) -> None:
    keys = [partition_key_of(window) for window in production.windows]
    instance = production.instance()
    production.simulate(production.windows[0], hours=len(production.windows))
    production.command("schedule", "stop", SCHEDULE)  # on by default, so stored only once switched off and on
    production.command("schedule", "start", SCHEDULE)
    rewind_schedule(instance, to=datetime.fromisoformat(production.windows[1]).replace(tzinfo=UTC))
    # A person builds the base once; a small context keeps the tiny base's training steps short.
    small = {"ops": {"base_model": {"config": {"production_context_tokens": 512}}}}
    production.command("job", "launch", "-j", "base_model_job", "--config-json", json.dumps(small))

    # A person runs the last window by hand just before the daemon comes up: one of the two runs must wait.
    production.command("job", "launch", "-j", "window_job", "--tags", json.dumps({"dagster/partition": keys[2]}))
    first = daemons()
    in_progress = wait_for("the schedule's runs of the three windows, one started at least", lambda: (
        found if len(found := [run for key in keys for run in scheduled(instance, key)]) == 3
        and any(run.status == dg.DagsterRunStatus.STARTED for run in found) else None), production.logs)
    first.send_signal(signal.SIGKILL)  # the daemon alone: the runs it launched keep going
    first.wait(timeout=30)

    daemons()
    training = wait_for("the readiness sensor's training run", lambda: [
        run for run in runs(instance, job_name="training_job")
        if run.status == dg.DagsterRunStatus.STARTED], production.logs)
    production.command("job", "launch", "-j", "training_job")  # a person's "train now" must wait for the GPU
    store = make_engine(production.store_url)
    wait_for("the canary", lambda: read_deployment(store).canary, production.logs)
    wait_for("every run to finish", lambda: all(run.status in DONE for run in runs(instance)), production.logs)

    everything = runs(instance)
    person = next(run for run in everything if run.job_name == "training_job" and "dagster/sensor_name" not in run.tags)
    failed = [(run.job_name, run.run_id, run.status) for run in everything
              if run.status != dg.DagsterRunStatus.SUCCESS and run.run_id != person.run_id]
    assert not failed, failed
    # The person's "train now" came after the sensor's run had taken every scored trajectory: it says so.
    if person.status != dg.DagsterRunStatus.SUCCESS:
        assert "nothing to train on" in failure_text(instance, person.run_id)
    # Each window ran exactly once from the schedule; the run in progress when the daemon died finished.
    assert [len(scheduled(instance, key)) for key in keys] == [1, 1, 1]
    assert {run.run_id for key in keys for run in scheduled(instance, key)} == {run.run_id for run in in_progress}
    assert any(run.status == dg.DagsterRunStatus.STARTED for run in in_progress)  # when the daemon died
    assert set(keys) <= instance.get_materialized_partitions(dg.AssetKey("ruler_scores"))
    # No sensor asked for the same run twice.
    run_keys = [run.tags["dagster/run_key"] for run in everything if "dagster/run_key" in run.tags]
    assert len(run_keys) == len(set(run_keys)), run_keys
    # The daemon evaluated every sensor of the loop (a skip is a tick too).
    ticked = {state.instigator_name for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
              if instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1)}
    assert {"late_outcomes_sensor", "training_readiness_sensor", "release_sensor", "regression_watch_sensor"} <= ticked
    # Training, evaluation and the canary were the sensors' doing.
    by_sensor = {run.job_name: run for run in everything if run.tags.get("dagster/sensor_name")}
    assert by_sensor["training_job"].run_id == training[0].run_id
    assert by_sensor["training_job"].tags["dagster/sensor_name"] == "training_readiness_sensor"
    assert by_sensor["evaluation_job"].tags["dagster/sensor_name"] == "release_sensor"
    assert by_sensor["deploy_job"].tags["dagster/sensor_name"] == "release_sensor"
    deployment = read_deployment(store)
    assert (deployment.canary, deployment.canary_fraction) == (by_sensor["deploy_job"].tags["dagster/partition"], 0.1)
    assert any(request.path == "/v1/load_lora_adapter" for request in production.inference.requests)
    # The queue's limits held: one training at a time (the person's waited), one run per window at a time.
    _assert_waited_its_turn(instance, [run for run in everything if run.job_name == "training_job"])
    _assert_waited_its_turn(instance, runs(instance, tags={"dagster/partition": keys[2]}, job_name="window_job"))


def _assert_waited_its_turn(instance: dg.DagsterInstance, pair: list[dg.DagsterRun]) -> None:
    """Two runs under one limit, the second queued while the first was in progress: it started after that ended."""
    assert len(pair) == 2, [run.run_id for run in pair]
    first, second = sorted(instance.get_run_records(dg.RunsFilter(run_ids=[run.run_id for run in pair])),
                           key=lambda record: record.start_time)
    assert second.create_timestamp.timestamp() < first.end_time, "queued after the first had ended: proves nothing"
    assert first.end_time <= second.start_time, (
        f"runs {first.dagster_run.run_id} and {second.dagster_run.run_id} were in progress at once")
