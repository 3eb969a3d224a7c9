"""Re-score a window when outcomes it was waiting for arrive.

`outcome_rewards` leaves trades on markets that resolve after their window pending, and names
those markets and tickers in the window's `outcome_rewards.json`. This sensor looks at the recent
windows that have pending trades and, once the database holds outcomes for any of them,
re-materialises that window's rewards, groups and scores. The run key is derived from the
outcome rows found, so the same arrival never starts two runs.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import dagster as dg

from babylon_pipeline.jobs.windows import RESCORE_ASSETS
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.store.outcomes import resolved_outcome_ids
from babylon_pipeline.windowing.files import WindowFileMissing
from babylon_pipeline.windowing.rewards import read_outcome_rewards
from babylon_pipeline.windows import window_of

LOOKBACK = timedelta(hours=48)


@dg.sensor(target=RESCORE_ASSETS, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.RUNNING)
def late_outcomes_sensor(
    context: dg.SensorEvaluationContext, trajectory_store: TrajectoryStore, object_store: ObjectStoreResource
) -> dg.SensorResult | dg.SkipReason:
    engine, store = trajectory_store.engine(), object_store.open()
    requests = []
    for window_id in _recent_windows(LOOKBACK):
        try:
            rewards = read_outcome_rewards(store, window_id)
        except WindowFileMissing:
            continue
        if not (rewards["pending_markets"] or rewards["pending_tickers"]):
            continue
        arrived = resolved_outcome_ids(engine, window_id, rewards["pending_markets"], rewards["pending_tickers"])
        if arrived:
            digest = hashlib.sha256("\n".join(sorted(arrived)).encode()).hexdigest()[:16]
            context.log.info(f"{window_id}: {len(arrived)} outcome rows arrived for its pending trades")
            requests.append(dg.RunRequest(run_key=f"late-outcomes:{window_id}:{digest}", partition_key=partition_key_of(window_id)))
    if not requests:
        return dg.SkipReason("no pending trades in the last 48 windows have new outcomes")
    return dg.SensorResult(run_requests=requests)


def _recent_windows(lookback: timedelta) -> list[str]:
    """The completed hours within the lookback, newest first."""
    now = datetime.now(UTC)
    return [window_of(now - timedelta(hours=h)) for h in range(1, int(lookback.total_seconds() // 3600) + 1)]
