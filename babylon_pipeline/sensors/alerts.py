"""Alert sensors: a failed run, a failed check, a window that did not arrive.

Thin: each reads what the Dagster instance recorded, writes the alert with `alerts.texts` and hands
it to the `notifier` resource, which sends it once per incident and never raises.

- `run_failure_alert_sensor`: every failed run of this code location (a failed training names its
  batch and version, from the tags `lora_checkpoint` puts on its run).
- `failed_check_alert_sensor`: every failed check evaluation that is blocking or of ERROR severity
  (data quality, judge coverage, evaluation), read from the event log after a storage-id cursor. Its
  first tick starts at the newest evaluation: installing it does not replay history.
- `stale_window_alert_sensor`: the newest window whose hour ended more than
  `BABYLON_ALERT_STALE_AFTER_MINUTES` (default 30) ago has no `window_trajectories` materialization.
  A sensor rather than a freshness policy: freshness is judged per asset, this is per partition.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg

from babylon_pipeline.alerts.alert import FieldValue
from babylon_pipeline.alerts.texts import (
    FailedCheck,
    FailedRun,
    check_failure_alert,
    run_failure_alert,
    stale_window_alert,
)
from babylon_pipeline.instance import (
    MODEL_VERSION_TAG_KEY,
    PARTITION_RANGE_END_TAG_KEY,
    PARTITION_RANGE_START_TAG_KEY,
    PARTITION_TAG_KEY,
    TRAINING_BATCH_TAG_KEY,
)
from babylon_pipeline.partitions import PARTITION_FORMAT, partition_key_of, window_partitions
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.windows import window_of

CHECK_EVALUATIONS_PER_TICK = 200
STALE_AFTER_ENV = "BABYLON_ALERT_STALE_AFTER_MINUTES"
DEFAULT_STALE_AFTER_MINUTES = 30.0
WINDOW_ASSET = dg.AssetKey("window_trajectories")
ERROR_LINES = 6


@dg.run_failure_sensor(
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts (notifier resource) on every failed run: job, run id, partition, the failed steps' "
                "errors, the training batch and version for a failed training, and what to do.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
    run = context.dagster_run
    steps = {
        event.step_key or "?": _first_lines(event.step_failure_data.error.message if event.step_failure_data.error
                                            else event.message or "")
        for event in context.get_step_failure_events()
    }
    alert = run_failure_alert(
        FailedRun(job=run.job_name, run_id=run.run_id, message=context.failure_event.message or "",
                  step_errors=steps, tags=run.tags, url=notifier.run_url(run.run_id)),
        batch_tag=TRAINING_BATCH_TAG_KEY, version_tag=MODEL_VERSION_TAG_KEY,
        partition_tags=(PARTITION_TAG_KEY, PARTITION_RANGE_START_TAG_KEY, PARTITION_RANGE_END_TAG_KEY),
    )
    delivered = notifier.send(alert)
    context.log.info(f"{alert.key}: {'sent' if delivered else 'not delivered everywhere (see the log)'}")


@dg.sensor(
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Alerts on every failed asset check that is blocking or of ERROR severity (data quality, judge "
                "coverage, evaluation), once per evaluation, with its numbers.",
)
def failed_check_alert_sensor(context: dg.SensorEvaluationContext, notifier: NotifierResource) -> dg.SkipReason:
    storage = context.instance.event_log_storage
    if context.cursor is None:
        newest = storage.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION), limit=1, ascending=False)
        context.update_cursor(str(newest[0].storage_id if newest else 0))
        return dg.SkipReason("first tick: watching check evaluations from now on")
    records = storage.get_event_records(
        dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION, after_cursor=int(context.cursor)),
        limit=CHECK_EVALUATIONS_PER_TICK, ascending=True,
    )
    alerted = []
    for record in records:
        event = record.event_log_entry.dagster_event
        evaluation = event.event_specific_data if event else None
        if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
            continue
        if not (evaluation.blocking or evaluation.severity == dg.AssetCheckSeverity.ERROR):
            continue
        alert = check_failure_alert(FailedCheck(
            asset=evaluation.asset_key.to_user_string(), check=evaluation.check_name,
            partition=evaluation.partition, run_id=record.run_id, blocking=bool(evaluation.blocking),
            severity=evaluation.severity.value, description=evaluation.description,
            metadata=_scalars(evaluation.metadata), url=notifier.run_url(record.run_id),
        ))
        notifier.send(alert)
        alerted.append(alert.title)
    if records:
        context.update_cursor(str(records[-1].storage_id))
    if not alerted:
        return dg.SkipReason(f"{len(records)} check evaluations since the last tick, none failed that alerts")
    return dg.SkipReason(f"{len(records)} check evaluations since the last tick; alerted: {'; '.join(alerted)}")


def stale_after_minutes(environ: Mapping[str, str] = os.environ) -> float:
    text = environ.get(STALE_AFTER_ENV, "").strip()
    try:
        minutes = float(text) if text else DEFAULT_STALE_AFTER_MINUTES
    except ValueError:
        raise ValueError(f"{STALE_AFTER_ENV} must be a number of minutes, got {text!r}") from None
    if minutes < 0:
        raise ValueError(f"{STALE_AFTER_ENV} must be >= 0, got {minutes:g}")
    return minutes


def due_window(now: datetime, delay: timedelta) -> str:
    """The newest window whose hour ended at least `delay` before `now`."""
    end = (now - delay).astimezone(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    return window_of(end - timedelta(hours=1))


def stale_window(instance: dg.DagsterInstance, now: datetime, delay: timedelta) -> tuple[str, str | None] | None:
    """(the due window, the newest materialized partition) when the due window has no materialization."""
    window = due_window(now, delay)
    partition = partition_key_of(window)
    if partition < window_partitions.start.strftime(PARTITION_FORMAT):  # before the first window
        return None
    found = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=WINDOW_ASSET, asset_partitions=[partition]), limit=1).records
    if found:
        return None
    newest = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=WINDOW_ASSET), limit=1).records
    return window, (newest[0].partition_key if newest else None)


@dg.sensor(
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Alerts when the newest window whose hour ended more than {STALE_AFTER_ENV} (default "
                f"{DEFAULT_STALE_AFTER_MINUTES:g}) minutes ago has no window_trajectories materialization.",
)
def stale_window_alert_sensor(context: dg.SensorEvaluationContext, notifier: NotifierResource) -> dg.SkipReason:
    minutes = stale_after_minutes()
    stale = stale_window(context.instance, datetime.now(UTC), timedelta(minutes=minutes))
    if stale is None:
        return dg.SkipReason(f"the window due {minutes:g} min after its hour is materialized (or before the first)")
    window, newest = stale
    alert = stale_window_alert(window, partition_key_of(window), minutes, newest)
    notifier.send(alert)
    return dg.SkipReason(f"window {window} missing {minutes:g} min after its hour: alerted ({alert.key})")


ALERT_SENSORS = [run_failure_alert_sensor, failed_check_alert_sensor, stale_window_alert_sensor]


def _scalars(metadata: Mapping[str, dg.MetadataValue]) -> dict[str, FieldValue]:
    """The check's figures that read well in one line: numbers, booleans and short text."""
    values = {name: value.value for name, value in metadata.items()}
    return {name: value for name, value in values.items()
            if isinstance(value, int | float | bool) or (isinstance(value, str) and len(value) <= 80)}


def _first_lines(text: str) -> str:
    return "\n".join(text.strip().splitlines()[:ERROR_LINES])
