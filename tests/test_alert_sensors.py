"""The alert sensors on a real Dagster instance: a failed run, failed checks, a stale window; and the
notifier resource as `definitions.py` builds it, in a run."""

# (No `from __future__ import annotations`: Dagster reads the context and config types off the signatures.)

from collections.abc import Iterator
import json
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from babylon_pipeline.assets.windows import window_trajectories
from babylon_pipeline.instance import (
    MODEL_VERSION_TAG_KEY,
    PARTITION_RANGE_END_TAG_KEY,
    PARTITION_RANGE_START_TAG_KEY,
    TRAINING_BATCH_TAG_KEY,
)
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.alerts import Alert
from babylon_pipeline.resources.notifier import NotifierResource, notifier_resource_from_env
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sensors.alerts import (
    due_window,
    failed_check_alert_sensor,
    run_failure_alert_sensor,
    stale_window,
    stale_window_alert_sensor,
)
from babylon_pipeline.storage import open_object_store
from babylon_pipeline.store.migrate import upgrade
from tests.conftest import scratch_database
from tests.smtp_server import SmtpServer
from tests.webhook_server import WebhookServer, webhook  # noqa: F401  (a fixture)
from tests.window_data import add_malformed_rows, record_window

POOR, EMPTY = "2025-11-15T10:00", "2025-11-15T11:00"


@pytest.fixture
def notifier(webhook, tmp_path) -> NotifierResource:
    return NotifierResource(object_store=ObjectStoreResource(url=(tmp_path / "objects").as_uri()),
                            webhook_url=webhook.url, dagster_url="http://dagster.local:3000")


@pytest.fixture
def instance() -> dg.DagsterInstance:
    return dg.DagsterInstance.ephemeral()


@pytest.fixture(params=["ephemeral", "sqlite", "postgres"])
def any_instance(request, tmp_path) -> Iterator[dg.DagsterInstance]:
    """In memory; on SQLite files as the embedded profile keeps it (a run-sharded event log); on Postgres
    (dagster-postgres) as production does, in a database of its own."""
    if request.param == "ephemeral":
        yield dg.DagsterInstance.ephemeral()
        return
    (tmp_path / "dagster").mkdir()
    if request.param == "sqlite":
        with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
            yield instance
        return
    with scratch_database("dagster_alerts") as url, dg.instance_for_test(
            temp_dir=str(tmp_path / "dagster"), overrides={"storage": {"postgres": {"postgres_url": url}}}) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        yield instance


def _texts(webhook: WebhookServer) -> list[str]:
    return [body["text"] for body in webhook.delivered()]


# --- failed runs ---------------------------------------------------------------------------------


@dg.asset
def lora_checkpoint_stand_in(context: dg.AssetExecutionContext) -> None:
    """Fails as a training does once its batch is open: the run carries the batch and version tags."""
    context.instance.add_run_tags(context.run_id, {TRAINING_BATCH_TAG_KEY: "grpo-0123456789abcdef",
                                                   MODEL_VERSION_TAG_KEY: "v1.2.0"})
    raise RuntimeError("trainer exited with code 137 (killed: out of memory)")


def _evaluate_run_failure(instance: dg.DagsterInstance, run_id: str, notifier: NotifierResource) -> None:
    [failure] = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)
    with dg.build_run_status_sensor_context(
        sensor_name=run_failure_alert_sensor.name, dagster_event=failure.dagster_event, dagster_instance=instance,
        dagster_run=instance.get_run_by_id(run_id), resources={"notifier": notifier},
    ) as context:
        run_failure_alert_sensor(context.for_run_failure())


def test_a_failed_training_run_alerts_once_with_batch_version_error_and_link(instance, notifier, webhook) -> None:
    result = dg.materialize([lora_checkpoint_stand_in], instance=instance, raise_on_error=False)
    assert not result.success
    _evaluate_run_failure(instance, result.run_id, notifier)
    _evaluate_run_failure(instance, result.run_id, notifier)  # the daemon retrying the tick
    [text] = _texts(webhook)
    assert text.startswith("*[ERROR] __ephemeral_asset_job__ failed*")
    assert f"run {result.run_id}" in text
    assert "lora_checkpoint_stand_in: RuntimeError: trainer exited with code 137" in text
    assert "Training batch grpo-0123456789abcdef for version v1.2.0" in text
    assert "What to do:" in text
    assert f"run: http://dagster.local:3000/runs/{result.run_id}" in text


def test_a_failed_window_run_names_its_partition(instance, notifier, webhook, tmp_path) -> None:
    result = dg.materialize(
        [window_trajectories], partition_key=partition_key_of(POOR), instance=instance, raise_on_error=False,
        resources={"trajectory_store": TrajectoryStore(database_url=f"sqlite:///{tmp_path / 'none.db'}"),
                   "object_store": ObjectStoreResource(url=(tmp_path / "objects").as_uri())},
    )  # no tables: the step fails
    assert not result.success
    _evaluate_run_failure(instance, result.run_id, notifier)
    [text] = _texts(webhook)
    assert "(partition 2025-11-15-10:00)" in text and "re-execute the run from failure" in text


# --- failed checks -------------------------------------------------------------------------------


class Checked(dg.Config):
    passed: bool = False


@dg.asset(check_specs=[
    dg.AssetCheckSpec("adapter_answers", asset="served_version", blocking=True),
    dg.AssetCheckSpec("latency_ok", asset="served_version"),
])
def served_version(config: Checked) -> dg.MaterializeResult:
    return dg.MaterializeResult(check_results=[
        dg.AssetCheckResult(check_name="adapter_answers", passed=config.passed, severity=dg.AssetCheckSeverity.ERROR,
                            metadata={"valid_answers": 0, "asked": 3}, description="the adapter answered garbage"),
        dg.AssetCheckResult(check_name="latency_ok", passed=False, severity=dg.AssetCheckSeverity.WARN),
    ])


def _tick(instance, notifier, cursor, resources):
    """One evaluation with the code location's checks: the window assets' and `served_version`'s."""
    checked = dg.Definitions(assets=[window_trajectories, served_version], resources=resources)
    with dg.build_sensor_context(instance=instance, resources={"notifier": notifier}, cursor=cursor,
                                 definitions=checked) as context:
        reason = failed_check_alert_sensor(context)
        return reason, context.cursor


def test_failed_blocking_checks_alert_once_each_with_their_numbers(any_instance, notifier, webhook, empty_sqlite,
                                                                  tmp_path) -> None:
    instance = any_instance
    resources = {"trajectory_store": TrajectoryStore(database_url=str(empty_sqlite.url)),
                 "object_store": ObjectStoreResource(url=(tmp_path / "objects").as_uri())}
    dg.materialize([served_version], instance=instance, raise_on_error=False)  # before the sensor: not replayed
    _, cursor = _tick(instance, notifier, None, resources)
    assert webhook.received == []

    upgrade(empty_sqlite)
    record_window(empty_sqlite, POOR, scenarios=1, agents=4)
    add_malformed_rows(empty_sqlite, POOR, 2)  # 4 of 6 rows usable: data_quality fails with ERROR
    for window in (POOR, EMPTY):  # an empty hour fails data_quality with WARN: blocking, so a warning
        dg.materialize([window_trajectories], partition_key=partition_key_of(window), instance=instance,
                       resources=resources, raise_on_error=False)
    failed = dg.materialize([served_version], instance=instance, raise_on_error=False)
    dg.materialize([served_version], instance=instance, run_config={"ops": {"served_version": {"config": {
        "passed": True}}}})

    reason, cursor = _tick(instance, notifier, cursor, resources)
    texts = _texts(webhook)
    assert len(texts) == 3, texts  # not latency_ok (WARN, not blocking), not no_duplicates (passed)
    poor, empty, adapter = texts
    assert poor.startswith("*[ERROR] check window_trajectories.data_quality failed (2025-11-15-10:00)*")
    assert "It is blocking" in poor and "quarantine_by_reason" in poor and "threshold: 0.95" in poor
    assert empty.startswith("*[WARNING] check window_trajectories.data_quality failed (2025-11-15-11:00)*")
    assert "no trajectories in this hour" in empty
    assert f"failed in run {failed.run_id}" in adapter and "the adapter answered garbage" in adapter
    assert "valid_answers: 0" in adapter and "asked: 3" in adapter
    assert reason.skip_message.startswith("alerted: check window_trajectories.data_quality failed")

    reason, cursor = _tick(instance, notifier, cursor, resources)  # the look-back sees them again: nothing new is sent
    assert len(webhook.received) == 3
    assert json.loads(cursor)["seen"] >= time.time() - 60


def test_a_range_run_failing_a_check_for_several_windows_is_one_alert(instance, notifier, webhook, empty_sqlite,
                                                                     tmp_path) -> None:
    upgrade(empty_sqlite)
    record_window(empty_sqlite, POOR, scenarios=1, agents=4)
    add_malformed_rows(empty_sqlite, POOR, 2)
    resources = {"trajectory_store": TrajectoryStore(database_url=str(empty_sqlite.url)),
                 "object_store": ObjectStoreResource(url=(tmp_path / "objects").as_uri())}
    _, cursor = _tick(instance, notifier, None, resources)
    last = "2025-11-18T09:00"  # 72 windows, 71 of them empty: more failures than one page of the index
    result = dg.materialize([window_trajectories], instance=instance, resources=resources, raise_on_error=False,
                            tags={PARTITION_RANGE_START_TAG_KEY: partition_key_of(POOR),
                                  PARTITION_RANGE_END_TAG_KEY: partition_key_of(last)})
    _tick(instance, notifier, cursor, resources)
    [text] = _texts(webhook)
    assert text.startswith("*[ERROR] check window_trajectories.data_quality failed (72 partitions)*")
    assert (f"72 partitions (2025-11-15-10:00, 2025-11-15-11:00, 2025-11-15-12:00, 2025-11-15-13:00, "
            f"2025-11-15-14:00 and 67 more) failed in run {result.run_id}") in text
    assert "data_quality: 0.666" in text  # the ERROR failure's numbers, not an empty hour's


# --- stale windows -------------------------------------------------------------------------------


def test_the_due_window_is_the_newest_hour_past_its_delay() -> None:
    delay = timedelta(minutes=30)
    assert due_window(datetime(2025, 11, 15, 12, 29, tzinfo=UTC), delay) == "2025-11-15T10:00"
    assert due_window(datetime(2025, 11, 15, 12, 30, tzinfo=UTC), delay) == "2025-11-15T11:00"
    assert due_window(datetime(2025, 11, 15, 12, 0, tzinfo=UTC), timedelta(0)) == "2025-11-15T11:00"


def _materialized(instance: dg.DagsterInstance, window: str) -> None:
    instance.report_runless_asset_event(
        dg.AssetMaterialization(asset_key="window_trajectories", partition=partition_key_of(window)))


def test_stale_window_found_until_it_is_materialized(instance) -> None:
    now, delay = datetime(2025, 11, 15, 12, 40, tzinfo=UTC), timedelta(minutes=30)
    assert stale_window(instance, now, delay) == ("2025-11-15T11:00", None)
    _materialized(instance, POOR)
    assert stale_window(instance, now, delay) == ("2025-11-15T11:00", "2025-11-15-10:00")
    _materialized(instance, EMPTY)
    assert stale_window(instance, now, delay) is None
    assert stale_window(instance, datetime(2024, 1, 1, 5, tzinfo=UTC), delay) is None  # before the first window


def test_stale_window_sensor_alerts_once_per_window(instance, notifier, webhook, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_ALERT_STALE_AFTER_MINUTES", "30")
    due = {due_window(datetime.now(UTC), timedelta(minutes=30))}

    def tick() -> str:
        with dg.build_sensor_context(instance=instance, resources={"notifier": notifier}) as context:
            return stale_window_alert_sensor(context).skip_message

    assert "alerted" in tick()
    assert "alerted" in tick()  # the same window still missing: the ledger sends nothing new
    due.add(due_window(datetime.now(UTC), timedelta(minutes=30)))
    texts = _texts(webhook)
    assert len(texts) == len(due)  # one, unless an hour turned between the ticks
    assert texts[0].startswith("*[WARNING] window ") and "window_job_schedule" in texts[0]
    for window in due:
        _materialized(instance, window)
    assert "is materialized" in tick()


def test_a_bad_delay_is_refused_in_one_line(instance, notifier, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_ALERT_STALE_AFTER_MINUTES", "soon")
    with dg.build_sensor_context(instance=instance, resources={"notifier": notifier}) as context:
        with pytest.raises(ValueError, match="BABYLON_ALERT_STALE_AFTER_MINUTES must be a number of minutes"):
            stale_window_alert_sensor(context)


# --- the resource as definitions.py builds it ----------------------------------------------------


@dg.asset
def deployed_stand_in(notifier: NotifierResource) -> dg.MaterializeResult:
    """What other assets do: send an alert through the `notifier` resource."""
    sent = notifier.send(Alert(key="deployment:v1.0.0:canary", title="v1.0.0 deployed to 10 % of agents",
                               text="canary started by the deploy job", severity="info"))
    return dg.MaterializeResult(metadata={"alert_sent": sent})


@pytest.mark.parametrize("profile", ["embedded", "production"])
def test_notifier_from_env_reads_its_settings_in_the_run_and_never_shows_them(
        profile, webhook, monkeypatch, tmp_path) -> None:
    smtp = SmtpServer(user="alerts", password="pw-never-shown").start()
    try:
        monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("BABYLON_STORAGE_URL", (tmp_path / "objects").as_uri())
        if profile == "production":
            monkeypatch.setenv("DATABASE_URL", "postgresql://babylon@db.invalid/babylon")
        else:
            monkeypatch.delenv("DATABASE_URL", raising=False)
        settings = {"BABYLON_ALERT_WEBHOOK_URL": webhook.url, "BABYLON_ALERT_SMTP_HOST": "127.0.0.1",
                    "BABYLON_ALERT_SMTP_PORT": str(smtp.port), "BABYLON_ALERT_SMTP_USER": "alerts",
                    "BABYLON_ALERT_SMTP_PASSWORD": "pw-never-shown", "BABYLON_ALERT_SMTP_FROM": "babylon@x.org",
                    "BABYLON_ALERT_SMTP_TO": "ops@x.org, ml@x.org", "BABYLON_ALERT_SMTP_SECURITY": "none"}
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        resource = notifier_resource_from_env()
        assert "pw-never-shown" not in repr(resource) and "secret-token" not in repr(resource)

        result = dg.materialize([deployed_stand_in], resources={"notifier": resource})
        assert result.asset_materializations_for_node("deployed_stand_in")[0].metadata["alert_sent"].value is True
        assert _texts(webhook) == ["*[INFO] v1.0.0 deployed to 10 % of agents*\ncanary started by the deploy job"]
        [mail] = smtp.mails
        assert mail.recipients == ["ops@x.org", "ml@x.org"] and smtp.logins == [("alerts", "pw-never-shown")]
        jsonl = tmp_path / "home" / "alerts.jsonl"
        assert jsonl.exists() == (profile == "embedded")
        assert open_object_store((tmp_path / "objects").as_uri()).list_keys("alerts/sent") != []
    finally:
        smtp.stop()
