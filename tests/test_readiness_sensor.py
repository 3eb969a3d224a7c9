"""The readiness sensor against a real Dagster instance and real rows: when it trains, and why it waits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from babylon_pipeline.definitions import build_definitions
from babylon_pipeline.instance import GPU_RUN_TAGS
from babylon_pipeline.model.base_record import BaseRecord, write_base_record
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sensors.readiness import ReadinessThresholds, training_readiness_sensor
from babylon_pipeline.storage import open_object_store
from babylon_pipeline.store.registry import open_batch, start_batch
from tests.training_rows import insert_rows, scored_group

W1, W2, W3 = "2025-11-15T10:00", "2025-11-15T11:00", "2025-11-15T12:00"
SMALL = {"BABYLON_TRAIN_MIN_TRAJECTORIES": "8", "BABYLON_TRAIN_MIN_GROUPS": "3", "BABYLON_TRAIN_MIN_QUALITY": "0.9",
         "BABYLON_TRAIN_MIN_INTERVAL_MINUTES": "60", "BABYLON_TRAIN_BATCH_TIMEOUT_HOURS": "12"}


NO_BASE = "base model not materialized yet: run base_model"


@pytest.fixture
def bare_sensor(db, tmp_path, monkeypatch):
    """Evaluates the sensor as the daemon would: a real instance, the database and a local object store."""
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.ephemeral()
    store_url = (tmp_path / "objects").as_uri()
    resources = {"trajectory_store": TrajectoryStore(database_url=db.url.render_as_string(hide_password=False)),
                 "object_store": ObjectStoreResource(url=store_url)}

    def evaluate():
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return training_readiness_sensor(context)

    evaluate.instance, evaluate.store = instance, open_object_store(store_url)
    return evaluate


@pytest.fixture
def sensor(bare_sensor):
    """The sensor with a ready base: its record stored and its `ready_to_train` check passed."""
    _store_base(bare_sensor.store)
    _report_base_check(bare_sensor.instance, passed=True)
    return bare_sensor


def _store_base(store) -> None:
    write_base_record(store, BaseRecord(name="tiny-test", spec="store:base", source="embedded", parameters=1,
                                        context_tokens=256))


def _report_base_check(instance: dg.DagsterInstance, *, passed: bool) -> None:
    instance.report_runless_asset_event(
        dg.AssetCheckEvaluation(asset_key=dg.AssetKey("base_model"), check_name="ready_to_train", passed=passed)
    )


def _report_quality(instance: dg.DagsterInstance, window_id: str, quality: float | None) -> None:
    metadata = {"windows": 3} if quality is None else {"data_quality": quality}
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="window_trajectories", partition=partition_key_of(window_id), metadata=metadata)
    )


def _ready_data(db) -> None:
    """8 scored trajectories in 4 trainable groups over two windows."""
    insert_rows(db, [*scored_group(W1, "a", [0.1, 0.9]), *scored_group(W1, "b", [0.2, 0.4]),
                     *scored_group(W2, "a", [0.3, 0.8]), *scored_group(W2, "b", [0.5, 0.6])])


def _start_run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> dg.DagsterRun:
    return instance.add_run(dg.DagsterRun(job_name="training_job", run_id=str(uuid.uuid4()), status=status,
                                          tags=GPU_RUN_TAGS))


def test_skip_then_request_once_then_wait_while_training_runs(db, sensor) -> None:
    first = sensor()
    assert isinstance(first, dg.SkipReason)
    assert "0/8 scored trajectories; 0/3 trainable groups" in first.skip_message

    _ready_data(db)
    unknown = sensor()
    assert isinstance(unknown, dg.SkipReason)
    assert unknown.skip_message == f"no data_quality for 2 windows ({W1}, {W2})"

    for window in (W1, W2):
        _report_quality(sensor.instance, window, 0.95)
    request = sensor()
    assert isinstance(request, dg.RunRequest)
    assert request.run_key.startswith("training:")
    assert request.tags.items() >= GPU_RUN_TAGS.items()
    assert sensor().run_key == request.run_key  # unchanged data: the same key, which the daemon launches once

    run = _start_run(sensor.instance, dg.DagsterRunStatus.STARTED)
    waiting = sensor()
    assert isinstance(waiting, dg.SkipReason)
    assert waiting.skip_message == f"training_job run {run.run_id[:8]} is STARTED"

    sensor.instance.report_run_canceled(run)  # the run is over; new data means a new key
    insert_rows(db, scored_group(W2, "c", [0.1, 0.2]))
    again = sensor()
    assert isinstance(again, dg.RunRequest) and again.run_key != request.run_key


def test_training_waits_for_a_ready_base_so_the_data_is_not_spent_on_a_doomed_run(db, bare_sensor) -> None:
    _ready_data(db)
    for window in (W1, W2):
        _report_quality(bare_sensor.instance, window, 0.95)
    assert bare_sensor().skip_message == NO_BASE

    _store_base(bare_sensor.store)  # stored, but its check not yet evaluated in this instance
    no_check = "base model has no ready_to_train result in this Dagster instance: run base_model"
    assert bare_sensor().skip_message == no_check

    _report_base_check(bare_sensor.instance, passed=False)
    assert bare_sensor().skip_message == ("base model failed its ready_to_train check: fix its config and run "
                                          "base_model again")

    _report_base_check(bare_sensor.instance, passed=True)
    request = bare_sensor()
    assert isinstance(request, dg.RunRequest) and request.run_key.startswith("training:")


def test_a_base_that_is_not_ready_is_named_with_the_other_unmet_conditions(bare_sensor) -> None:
    assert bare_sensor().skip_message == f"{NO_BASE}; 0/8 scored trajectories; 0/3 trainable groups"


def test_a_store_without_tables_is_a_skip_saying_what_to_run(empty_db, tmp_path) -> None:
    resources = {"trajectory_store": TrajectoryStore(database_url=empty_db.url.render_as_string(hide_password=False)),
                 "object_store": ObjectStoreResource(url=tmp_path.as_uri())}
    with dg.DagsterInstance.ephemeral() as instance, dg.build_sensor_context(instance=instance,
                                                                            resources=resources) as context:
        skip = training_readiness_sensor(context)
    assert isinstance(skip, dg.SkipReason)
    assert skip.skip_message == ("the trajectory store has no trajectories or training_batches table: run "
                                 f"`babylon db upgrade`; {NO_BASE}")


def test_a_fresh_embedded_home_is_a_skip_through_the_code_locations_own_resources(tmp_path, monkeypatch) -> None:
    for name in ("DATABASE_URL", "BABYLON_STORAGE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "fresh"))
    defs = build_definitions()
    sensor = defs.get_sensor_def("training_readiness_sensor")
    with dg.DagsterInstance.ephemeral() as instance, dg.build_sensor_context(
            instance=instance, resources=defs.resources, definitions=defs) as context:
        skip = sensor(context)
    assert isinstance(skip, dg.SkipReason) and "run `babylon db upgrade`" in skip.skip_message


def test_every_unmet_condition_is_named_with_its_numbers(db, sensor) -> None:
    insert_rows(db, [*scored_group(W1, "a", [0.1, 0.9]), *scored_group(W1, "flat", [0.5, 0.5]),
                     *scored_group(W2, "a", [0.3]), *scored_group(W3, "a", [0.2])])
    _report_quality(sensor.instance, W1, 0.80)
    _report_quality(sensor.instance, W2, 0.92)
    started = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=23)
    ids = [f"{W1}-a-0", f"{W1}-a-1"]
    open_batch(db, "b-running", "base", "v1.0.0", [W1], ids, {ids[0]: 0.0, ids[1]: 1.0}, now=started)
    start_batch(db, "b-running", now=started)

    skip = sensor()
    assert isinstance(skip, dg.SkipReason)
    assert skip.skip_message.split("; ") == [
        "6/8 scored trajectories",
        "1/3 trainable groups",
        f"no data_quality for 1 windows ({W3})",
        f"data quality 0.86 < 0.90 (windows {W1})",
        "last training 23 min ago (< 60)",
        "batch b-running training for 23 min",
    ]


def test_quality_is_the_newest_reported_one_of_each_window(db, sensor) -> None:
    _ready_data(db)
    _report_quality(sensor.instance, W1, 0.95)
    _report_quality(sensor.instance, W2, 0.95)
    _report_quality(sensor.instance, W2, 0.70)  # W2 exported again, worse
    skip = sensor()
    assert isinstance(skip, dg.SkipReason) and skip.skip_message == f"data quality 0.82 < 0.90 (windows {W2})"

    _report_quality(sensor.instance, W2, 0.99)
    _report_quality(sensor.instance, W2, None)  # a range run's summary event carries no data_quality
    assert isinstance(sensor(), dg.RunRequest)


def test_a_batch_stuck_past_the_timeout_no_longer_blocks(db, sensor) -> None:
    _ready_data(db)
    for window in (W1, W2):
        _report_quality(sensor.instance, window, 1.0)
    stuck = datetime.now(UTC).replace(tzinfo=None) - timedelta(hours=13)
    ids = [f"{W1}-a-0", f"{W1}-a-1"]
    open_batch(db, "b-dead", "base", "v1.0.0", [W1], ids, {ids[0]: 0.0, ids[1]: 1.0}, now=stuck)
    start_batch(db, "b-dead", now=stuck)
    assert isinstance(sensor(), dg.RunRequest)


def test_thresholds_come_from_the_environment_with_clear_errors() -> None:
    assert ReadinessThresholds.from_env({}) == ReadinessThresholds(200, 8, 0.9, 60.0, 12.0)
    assert ReadinessThresholds.from_env({"BABYLON_TRAIN_MIN_GROUPS": " 2 ", "BABYLON_TRAIN_MIN_QUALITY": "",
                                         "BABYLON_TRAIN_MIN_INTERVAL_MINUTES": "0"}) == ReadinessThresholds(
        min_groups=2, min_interval_minutes=0.0)
    bad = {
        "BABYLON_TRAIN_MIN_TRAJECTORIES": ("150.5", "must be a whole number, got '150.5'"),
        "BABYLON_TRAIN_MIN_GROUPS": ("0", "must be a whole number >= 1, got 0"),
        "BABYLON_TRAIN_MIN_QUALITY": ("1.5", "must be a number from 0 to 1, got 1.5"),
        "BABYLON_TRAIN_MIN_INTERVAL_MINUTES": ("an hour", "must be a number, got 'an hour'"),
        "BABYLON_TRAIN_BATCH_TIMEOUT_HOURS": ("-1", "must be a number > 0, got -1.0"),
    }
    for name, (value, message) in bad.items():
        with pytest.raises(ValueError, match=f"^{name} {message}$"):
            ReadinessThresholds.from_env({name: value})
