"""The window job and its hourly schedule: each completed hour is processed a few minutes after it ends,
and windows missed while the daemon was down at the next tick (`windowing/catch_up.py`)."""

from __future__ import annotations

import dagster as dg

from babylon_pipeline.assets.windows import art_groups, outcome_rewards, ruler_scores, window_trajectories
from babylon_pipeline.instance import PARTITION_TAG_KEY
from babylon_pipeline.partitions import window_id_of, window_partitions
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.store.report import window_has_rows
from babylon_pipeline.windowing.catch_up import windows_due

WINDOW_ASSETS = [window_trajectories, outcome_rewards, art_groups, ruler_scores]
RESCORE_ASSETS = [outcome_rewards, art_groups, ruler_scores]

window_job = dg.define_asset_job(
    "window_job",
    selection=WINDOW_ASSETS,
    description="Trajectories → outcome rewards → ART groups → RULER scores for hourly windows.",
)


@dg.schedule(
    name="window_job_schedule",
    job=window_job,
    cron_schedule="5 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Each hour at :05, runs window_job for the hourly window that just ended (partitions of "
        "window_partitions, one per completed hour, UTC), and for every window of the 24 hours before it that "
        "holds trajectories and was never run (missed while the daemon was down; a failed run is left to a person)."
    ),
)
def window_schedule(context: dg.ScheduleEvaluationContext, trajectory_store: TrajectoryStore) -> list[dg.RunRequest]:
    partitions = window_partitions.get_partition_keys(current_time=context.scheduled_execution_time)
    materialized = context.instance.get_materialized_partitions(window_trajectories.key)
    engine = trajectory_store.engine()

    def missed(key: str) -> bool:
        runs = context.instance.get_run_records(
            dg.RunsFilter(job_name=window_job.name, tags={PARTITION_TAG_KEY: key}), limit=1)
        return not runs and window_has_rows(engine, window_id_of(key))

    due = windows_due(partitions, materialized, missed)
    if len(due) > 1:
        context.log.info(f"catching up {len(due) - 1} window(s) no run took: {', '.join(due[:-1])}")
    return [dg.RunRequest(partition_key=key, run_key=f"window:{key}") for key in due]
