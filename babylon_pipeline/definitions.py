"""The code location: the one `Definitions` object, with resources picked by profile.

Production when the environment names it (`DATABASE_URL`, `BABYLON_STORAGE_URL`,
`BABYLON_JUDGE_BASE_URL`), read through `EnvVar` at run time; the embedded profile (SQLite, local
files and the heuristic judge under `$BABYLON_HOME`) otherwise.
"""

from __future__ import annotations

import dagster as dg

from babylon_pipeline.jobs.windows import WINDOW_ASSETS, window_job, window_schedule
from babylon_pipeline.resources import trajectory_store_from_env
from babylon_pipeline.resources.judge import judge_resource_from_env
from babylon_pipeline.resources.object_store import object_store_resource_from_env
from babylon_pipeline.sensors.late_outcomes import late_outcomes_sensor

defs = dg.Definitions(
    assets=WINDOW_ASSETS,
    jobs=[window_job],
    schedules=[window_schedule],
    sensors=[late_outcomes_sensor],
    resources={
        "trajectory_store": trajectory_store_from_env(),
        "object_store": object_store_resource_from_env(),
        "judge": judge_resource_from_env(),
    },
)
