"""The readiness sensor against a real Dagster instance and real rows: when it trains, and why it waits."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from babylon_pipeline.instance import GPU_RUN_TAGS
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sensors.readiness import ReadinessThresholds, training_readiness_sensor
from babylon_pipeline.store.registry import open_batch, start_batch
from tests.training_rows import insert_rows, scored_group

W1, W2, W3 = "2025-11-15T10:00", "2025-11-15T11:00", "2025-11-15T12:00"
SMALL = {"BABYLON_TRAIN_MIN_TRAJECTORIES": "8", "BABYLON_TRAIN_MIN_GROUPS": "3", "BABYLON_TRAIN_MIN_QUALITY": "0.9",
         "BABYLON_TRAIN_MIN_INTERVAL_MINUTES": "60", "BABYLON_TRAIN_BATCH_TIMEOUT_HOURS": "12"}


@pytest.fixture
def sensor(db, monkeypatch):
    """Evaluates the sensor as the daemon would: a real instance, the database as the resource."""
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    instance = dg.DagsterInstance.ephemeral()
    resources = {"trajectory_store": TrajectoryStore(database_url=db.url.render_as_string(hide_password=False))}

    def evaluate():
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return training_readiness_sensor(context)

    evaluate.instance = instance
    return evaluate


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
