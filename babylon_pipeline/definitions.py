"""The code location: the one `Definitions` object, with resources picked by profile.

Production when the environment names it (`DATABASE_URL`, ...), read through `EnvVar` at run time;
the embedded profile (SQLite under `$BABYLON_HOME`) otherwise.
"""

from __future__ import annotations

import dagster as dg

from babylon_pipeline.resources import trajectory_store_from_env

defs = dg.Definitions(
    resources={
        "trajectory_store": trajectory_store_from_env(),
    },
)
