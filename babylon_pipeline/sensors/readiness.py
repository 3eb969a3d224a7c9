"""Start training when enough new scored data is ready, and never on the same data twice.

Every tick reads cheap aggregates of the candidates (`store.training_data.readiness_snapshot`),
the `data_quality` the `window_trajectories` asset reported for their windows, whether a
training is running and whether the base is ready, then requests `training_job` only when every
condition holds. Otherwise the skip reason names every unmet condition with its numbers, so the UI
says why training waits.

- The base must be ready: its record in the object store (what `lora_checkpoint` trains on) and a
  passed `ready_to_train` check as the newest result. A training requested without one would fail
  and spend the data's run key, so the same data would not be trained once the base exists.
- A trajectory store without the Babylon tables (a fresh home) is a skip saying to run
  `babylon db upgrade`, not an error on every tick.

- A window whose trajectories have no `data_quality` materialization is unknown: not ready, and
  named (materialize `window_trajectories` for it).
- The run key is the candidate set's fingerprint: the daemon never launches the same data twice,
  and a failed training is retried once the candidate set changes (the next window is scored).
- A batch left `pending` or `training` longer than the batch timeout is presumed dead (its run
  crashed without failing it): it is logged, not waited for. A running `training_job` always blocks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import fmean
from typing import get_type_hints

import dagster as dg
import sqlalchemy as sa
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from babylon_pipeline.instance import GPU_RUN_TAGS
from babylon_pipeline.jobs.training import training_job
from babylon_pipeline.model.base_record import BaseModelMissing, read_base_record
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.storage import ObjectStore
from babylon_pipeline.store import tables
from babylon_pipeline.store.training_data import TrainingReadiness, readiness_snapshot

QUALITY_ASSET = dg.AssetKey("window_trajectories")
QUALITY_METADATA = "data_quality"
BASE_CHECK = dg.AssetCheckKey(dg.AssetKey("base_model"), "ready_to_train")
CHECK_RESULTS = {AssetCheckExecutionRecordStatus.SUCCEEDED, AssetCheckExecutionRecordStatus.FAILED}  # not PLANNED
READ_TABLES = (tables.trajectories.name, tables.training_batches.name)  # what `readiness_snapshot` reads
RUNNING_STATUSES = [
    dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING,
]
MATERIALIZATIONS_PER_PAGE = 200
WINDOWS_NAMED = 3  # windows listed in a skip reason, then "and N more"


@dataclass(frozen=True)
class ReadinessThresholds:
    """When to train; each read from its environment variable at every evaluation (empty = default)."""

    min_trajectories: int = 200
    """BABYLON_TRAIN_MIN_TRAJECTORIES: scored, untrained trajectories."""
    min_groups: int = 8
    """BABYLON_TRAIN_MIN_GROUPS: groups of two or more of them with a reward spread."""
    min_quality: float = 0.9
    """BABYLON_TRAIN_MIN_QUALITY: mean `data_quality` of their windows, in [0, 1]."""
    min_interval_minutes: float = 60.0
    """BABYLON_TRAIN_MIN_INTERVAL_MINUTES: since the last training started."""
    batch_timeout_hours: float = 12.0
    """BABYLON_TRAIN_BATCH_TIMEOUT_HOURS: a batch pending or training longer than this no longer blocks."""

    def __post_init__(self) -> None:
        checks = {
            "min_trajectories": (self.min_trajectories >= 1, "a whole number >= 1"),
            "min_groups": (self.min_groups >= 1, "a whole number >= 1"),
            "min_quality": (0.0 <= self.min_quality <= 1.0, "a number from 0 to 1"),
            "min_interval_minutes": (self.min_interval_minutes >= 0, "a number >= 0"),
            "batch_timeout_hours": (self.batch_timeout_hours > 0, "a number > 0"),
        }
        for name, (valid, want) in checks.items():
            if not valid:
                raise ValueError(f"{_env_name(name)} must be {want}, got {getattr(self, name)}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> ReadinessThresholds:
        values: dict[str, int | float] = {}
        for name, kind in get_type_hints(cls).items():
            text = environ.get(_env_name(name), "").strip()
            if not text:
                continue
            try:
                values[name] = kind(text)
            except ValueError:
                raise ValueError(f"{_env_name(name)} must be {'a whole number' if kind is int else 'a number'}, "
                                 f"got {text!r}") from None
        return cls(**values)


def _env_name(field_name: str) -> str:
    return "BABYLON_TRAIN_" + field_name.upper()


def window_quality(instance: dg.DagsterInstance, windows: Sequence[str]) -> dict[str, float]:
    """Window id → `data_quality` of its newest `window_trajectories` materialization that reports one."""
    wanted = {partition_key_of(w): w for w in windows}
    found: dict[str, float] = {}
    cursor = None
    while wanted and len(found) < len(wanted):
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=QUALITY_ASSET, asset_partitions=list(wanted)),
            limit=MATERIALIZATIONS_PER_PAGE, cursor=cursor,
        )
        for record in page.records:  # newest first
            materialization = record.asset_materialization
            window = wanted.get(materialization.partition) if materialization else None
            if window and window not in found and QUALITY_METADATA in materialization.metadata:
                found[window] = float(materialization.metadata[QUALITY_METADATA].value)
        if not page.has_more:
            break
        cursor = page.cursor
    return found


def base_unready(instance: dg.DagsterInstance, store: ObjectStore) -> str | None:
    """Why the base cannot be trained on yet, or None: no record in the store, or no passed `ready_to_train`."""
    try:
        read_base_record(store)
    except BaseModelMissing:
        return "base model not materialized yet: run base_model"
    results = instance.event_log_storage.get_asset_check_execution_history(BASE_CHECK, limit=1, status=CHECK_RESULTS)
    if not results:
        return "base model has no ready_to_train result in this Dagster instance: run base_model"
    if results[0].status == AssetCheckExecutionRecordStatus.FAILED:
        return "base model failed its ready_to_train check: fix its config and run base_model again"
    return None


def missing_tables(engine: sa.Engine) -> list[str]:
    inspector = sa.inspect(engine)
    return [name for name in READ_TABLES if not inspector.has_table(name)]


def unmet_conditions(
    readiness: TrainingReadiness,
    quality: Mapping[str, float],
    running_runs: Sequence[dg.DagsterRun],
    thresholds: ReadinessThresholds,
) -> list[str]:
    unmet = []
    if readiness.scored_trajectories < thresholds.min_trajectories:
        unmet.append(f"{readiness.scored_trajectories}/{thresholds.min_trajectories} scored trajectories")
    if readiness.trainable_groups < thresholds.min_groups:
        unmet.append(f"{readiness.trainable_groups}/{thresholds.min_groups} trainable groups")
    if unknown := [w for w in readiness.windows if w not in quality]:
        unmet.append(f"no data_quality for {len(unknown)} windows ({_name(unknown)})")
    if quality and (mean := fmean(quality.values())) < thresholds.min_quality:
        below = sorted(w for w, q in quality.items() if q < thresholds.min_quality)
        unmet.append(f"data quality {_figure(mean, thresholds.min_quality)} < {thresholds.min_quality:.2f} "
                     f"(windows {_name(below)})")
    since = readiness.since_last_training
    if since is not None and since < timedelta(minutes=thresholds.min_interval_minutes):
        unmet.append(f"last training {_minutes(since)} min ago (< {thresholds.min_interval_minutes:g})")
    for run in running_runs:
        unmet.append(f"{run.job_name} run {run.run_id[:8]} is {run.status.value}")
    batch = readiness.active_batch
    if batch and batch.age < timedelta(hours=thresholds.batch_timeout_hours):
        unmet.append(f"batch {batch.batch_id} {batch.status} for {_minutes(batch.age)} min")
    return unmet


def _name(windows: Sequence[str]) -> str:
    more = len(windows) - WINDOWS_NAMED
    return ", ".join(windows[:WINDOWS_NAMED]) + (f" and {more} more" if more > 0 else "")


def _figure(value: float, threshold: float) -> str:
    """Two decimals, or as many as it takes to show the value is below the threshold."""
    for digits in (2, 4, 6):
        if round(value, digits) < threshold:
            return f"{value:.{digits}f}"
    return repr(value)


def _minutes(span: timedelta) -> int:
    return int(span.total_seconds() // 60)


@dg.sensor(
    job=training_job,
    # Half a minute: training starts soon after the data is ready; a tick reads ≤ 0.6 s on 1M trajectories
    # (benchmarks/bench_readiness.py), and BABYLON_TRAIN_MIN_INTERVAL_MINUTES spaces the runs.
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests training_job when enough scored, untrained trajectories of good windows are waiting "
                "and the base model is ready.",
)
def training_readiness_sensor(
    context: dg.SensorEvaluationContext, trajectory_store: TrajectoryStore, object_store: ObjectStoreResource
) -> dg.RunRequest | dg.SkipReason:
    thresholds = ReadinessThresholds.from_env()
    base = base_unready(context.instance, object_store.open())
    engine = trajectory_store.engine()
    if missing := missing_tables(engine):
        no_tables = f"the trajectory store has no {' or '.join(missing)} table: run `babylon db upgrade`"
        return dg.SkipReason("; ".join(filter(None, [no_tables, base])))
    readiness = readiness_snapshot(engine, datetime.now(UTC))
    quality = window_quality(context.instance, readiness.windows)
    running = [record.dagster_run for record in context.instance.get_run_records(
        dg.RunsFilter(job_name=training_job.name, statuses=RUNNING_STATUSES), limit=5)]
    batch = readiness.active_batch
    if batch and batch.age >= timedelta(hours=thresholds.batch_timeout_hours):
        context.log.warning(f"batch {batch.batch_id} has been {batch.status} for {_minutes(batch.age)} min: "
                            f"presumed dead, not waited for")
    if unmet := [*filter(None, [base]), *unmet_conditions(readiness, quality, running, thresholds)]:
        return dg.SkipReason("; ".join(unmet))
    context.log.info(f"{readiness.scored_trajectories} scored trajectories in {readiness.trainable_groups} trainable "
                     f"groups over {len(readiness.windows)} windows: requesting training")
    return dg.RunRequest(
        run_key=f"training:{readiness.fingerprint[:16]}",
        tags={**GPU_RUN_TAGS, "babylon/data_fingerprint": readiness.fingerprint[:16]},
    )
