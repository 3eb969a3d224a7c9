"""Alert sensors: a failed run, a failed check, a window that did not arrive.

Thin: each reads what the Dagster instance recorded, writes the alert with `alerts.texts` and hands
it to the `notifier` resource, which sends it once per incident and never raises.

- `run_failure_alert_sensor`: every failed run of this code location (a failed training names its
  batch and version, from the tags `lora_checkpoint` puts on its run).
- `failed_check_alert_sensor`: failed check evaluations that are blocking or of ERROR severity (data
  quality, judge coverage, evaluation), one alert per check and run (a range run names its windows).
  Read per check from the instance's check-execution index (SQLite's run-sharded event log cannot
  be queried by event type with a storage-id cursor), after a time cursor with a look-back; the
  ledger drops what the look-back sees twice. Its first tick starts now: no history is replayed.
- `stale_window_alert_sensor`: the newest window whose hour ended more than
  `BABYLON_ALERT_STALE_AFTER_MINUTES` (default 30) ago has no `window_trajectories` materialization.
  A sensor rather than a freshness policy: freshness is judged per asset, this is per partition.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecord,
    AssetCheckExecutionRecordStatus,
)

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

CHECK_PAGE = 50
CHECK_PAGES_PER_TICK = 40
"""At most 2,000 failed evaluations of one check read per tick."""
CHECK_LOOKBACK = timedelta(minutes=10)
"""Evaluations are read back this far before the previous tick: one stored late is not missed."""
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
    steps = {event.step_key or "?": _step_error(event) for event in context.get_step_failure_events()}
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
    description="Alerts on failed asset checks that are blocking or of ERROR severity (data quality, judge "
                "coverage, evaluation): one alert per check and run, naming its partitions, with its numbers.",
)
def failed_check_alert_sensor(context: dg.SensorEvaluationContext, notifier: NotifierResource) -> dg.SkipReason:
    if context.cursor is None:
        now = time.time()
        context.update_cursor(json.dumps({"start": now, "seen": now}))
        return dg.SkipReason("first tick: watching check evaluations from now on")
    cursor, now = json.loads(context.cursor), time.time()
    since = max(cursor["start"], cursor["seen"] - CHECK_LOOKBACK.total_seconds())
    failures = recent_check_failures(context.instance, context.repository_def.asset_graph.asset_check_keys, since)
    alerted = []
    for (key, run_id), records in _by_check_and_run(failures).items():
        alert = check_failure_alert(_failed_check(key, run_id, records, notifier.run_url(run_id)))
        notifier.send(alert)  # the ledger drops what the look-back sees again
        alerted.append(alert.title)
    context.update_cursor(json.dumps({"start": cursor["start"], "seen": now}))
    if not alerted:
        return dg.SkipReason("no failed blocking or ERROR check evaluations since the last tick")
    return dg.SkipReason(f"alerted: {'; '.join(alerted)}")


def recent_check_failures(instance: dg.DagsterInstance, keys: Iterable[dg.AssetCheckKey], since: float
                          ) -> list[AssetCheckExecutionRecord]:
    """Failed evaluations evaluated after `since` (epoch seconds) that alert: blocking or ERROR severity.

    Read from the instance's check-execution index (every event-log storage has it, SQLite's
    run-sharded one included), newest first per check, a page at a time until a page holds nothing
    newer than `since` (a range run failing hundreds of windows is read whole)."""
    found = []
    for key in keys:
        cursor = None
        for _ in range(CHECK_PAGES_PER_TICK):
            page = instance.event_log_storage.get_asset_check_execution_history(
                key, limit=CHECK_PAGE, cursor=cursor, status={AssetCheckExecutionRecordStatus.FAILED})
            newer = False
            for record in page:
                evaluation = record.evaluation
                if record.event is None or evaluation is None or record.event.timestamp <= since:
                    continue
                newer = True
                if evaluation.blocking or evaluation.severity == dg.AssetCheckSeverity.ERROR:
                    found.append(record)
            if not newer or len(page) < CHECK_PAGE:
                break
            cursor = page[-1].id
    return found


def _by_check_and_run(records: Iterable[AssetCheckExecutionRecord]
                      ) -> dict[tuple[dg.AssetCheckKey, str], list[AssetCheckExecutionRecord]]:
    grouped: dict[tuple[dg.AssetCheckKey, str], list[AssetCheckExecutionRecord]] = {}
    for record in sorted(records, key=lambda r: (r.event.timestamp if r.event else 0.0, r.id)):
        grouped.setdefault((record.key, record.run_id), []).append(record)
    return grouped


def _failed_check(key: dg.AssetCheckKey, run_id: str, records: list[AssetCheckExecutionRecord], url: str | None
                  ) -> FailedCheck:
    """One check's failures in one run (a range run fails it for many windows): the numbers of the first
    ERROR failure, else of the first one."""
    evaluations = [r.evaluation for r in records if r.evaluation is not None]
    first = next((e for e in evaluations if e.severity == dg.AssetCheckSeverity.ERROR), evaluations[0])
    partitions = sorted({r.partition for r in records if r.partition})
    return FailedCheck(
        asset=key.asset_key.to_user_string(), check=key.name, partitions=tuple(partitions), run_id=run_id,
        blocking=bool(first.blocking), severity=first.severity.value, description=first.description,
        metadata=_scalars(first.metadata), url=url,
    )


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


def _step_error(event: dg.DagsterEvent) -> str:
    """The error the step's code raised (the innermost cause of Dagster's wrapper), its first lines."""
    error = event.step_failure_data.error if event.step_failure_data else None
    if error is None:
        return event.message or ""
    while error.cause is not None:
        error = error.cause
    return "\n".join(error.message.strip().splitlines()[:ERROR_LINES])
