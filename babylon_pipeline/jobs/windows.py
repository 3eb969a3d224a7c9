"""The window job and its hourly schedule: each completed hour is processed a few minutes after it ends."""

from __future__ import annotations

import dagster as dg

from babylon_pipeline.assets.windows import art_groups, outcome_rewards, ruler_scores, window_trajectories

WINDOW_ASSETS = [window_trajectories, outcome_rewards, art_groups, ruler_scores]
RESCORE_ASSETS = [outcome_rewards, art_groups, ruler_scores]

window_job = dg.define_asset_job(
    "window_job",
    selection=WINDOW_ASSETS,
    description="Trajectories → outcome rewards → ART groups → RULER scores for hourly windows.",
)

window_schedule = dg.build_schedule_from_partitioned_job(
    window_job,
    minute_of_hour=5,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description=(
        "Each hour at :05, runs window_job for the hourly window that just ended (partitions of "
        "window_partitions, one per completed hour, UTC). Dagster 1.13's schedule page always shows "
        "'Partition set: None'; the job's Partitions tab lists the windows."
    ),
)
