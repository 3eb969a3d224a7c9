"""Re-score a window when outcomes it was waiting for arrive.

`outcome_rewards` leaves trades on markets that resolve after their window pending, and names
those markets and tickers in the window's `outcome_rewards.json`. This sensor looks at the recent
windows that have pending trades and, once the database holds outcomes for any of them,
re-materialises that window's rewards, groups and scores. The run key is derived from the
outcome rows found, so the same arrival never starts two runs. A window that an unfinished
partition-range run (a backfill) covers is left for a later tick: the run queue holds a second run
of one window, but cannot tell that a range contains it, and both would rewrite its manifest.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import dagster as dg

from babylon_pipeline.instance import PARTITION_RANGE_END_TAG_KEY, PARTITION_RANGE_START_TAG_KEY
from babylon_pipeline.jobs.windows import RESCORE_ASSETS
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.store.outcomes import resolved_outcome_ids
from babylon_pipeline.windowing.files import WindowFileMissing
from babylon_pipeline.windowing.rewards import read_outcome_rewards
from babylon_pipeline.windows import window_of

LOOKBACK = timedelta(hours=48)
_UNFINISHED = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


@dg.sensor(
    target=RESCORE_ASSETS,
    minimum_interval_seconds=300,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Every 5 minutes: for the last 48 windows with trades left pending on unresolved markets, re-runs "
        "outcome_rewards → art_groups → ruler_scores of a window once outcomes for them arrive (once per arrival)."
    ),
)
def late_outcomes_sensor(
    context: dg.SensorEvaluationContext, trajectory_store: TrajectoryStore, object_store: ObjectStoreResource
) -> dg.SensorResult | dg.SkipReason:
    engine, store = trajectory_store.engine(), object_store.open()
    ranges = _unfinished_partition_ranges(context.instance)
    requests, deferred = [], []
    for window_id in _recent_windows(LOOKBACK):
        try:
            rewards = read_outcome_rewards(store, window_id)
        except WindowFileMissing:
            continue
        if not (rewards["pending_markets"] or rewards["pending_tickers"]):
            continue
        arrived = resolved_outcome_ids(engine, window_id, rewards["pending_markets"], rewards["pending_tickers"])
        if arrived and _covered(partition_key_of(window_id), ranges):
            context.log.info(f"{window_id}: outcomes arrived; waiting for the range run that covers it")
            deferred.append(window_id)
        elif arrived:
            digest = hashlib.sha256("\n".join(sorted(arrived)).encode()).hexdigest()[:16]
            context.log.info(f"{window_id}: {len(arrived)} outcome rows arrived for its pending trades")
            requests.append(dg.RunRequest(run_key=f"late-outcomes:{window_id}:{digest}", partition_key=partition_key_of(window_id)))
    if deferred and not requests:
        return dg.SkipReason(f"outcomes arrived for {', '.join(deferred)}, which a range run in progress covers")
    if not requests:
        return dg.SkipReason("no pending trades in the last 48 windows have new outcomes")
    return dg.SensorResult(run_requests=requests)


def _recent_windows(lookback: timedelta) -> list[str]:
    """The completed hours within the lookback, newest first."""
    now = datetime.now(UTC)
    return [window_of(now - timedelta(hours=h)) for h in range(1, int(lookback.total_seconds() // 3600) + 1)]


def _unfinished_partition_ranges(instance: dg.DagsterInstance) -> list[tuple[str, str]]:
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=_UNFINISHED))
    return [
        (run.tags[PARTITION_RANGE_START_TAG_KEY], run.tags[PARTITION_RANGE_END_TAG_KEY])
        for run in runs
        if PARTITION_RANGE_START_TAG_KEY in run.tags and PARTITION_RANGE_END_TAG_KEY in run.tags
    ]


def _covered(partition_key: str, ranges: list[tuple[str, str]]) -> bool:
    """Whether a range holds the key; keys are `YYYY-MM-DD-HH:MM`, so text order is time order."""
    return any(start <= partition_key <= end for start, end in ranges)
