"""Refresh the `model_versions` table by hand (after a change made outside Dagster, e.g. `babylon deploy`)."""

from __future__ import annotations

import dagster as dg

from babylon_pipeline.assets.versions_report import ASSET

model_versions_job = dg.define_asset_job(
    "model_versions_job",
    selection=[ASSET],
    description="Read the registry and the deployment again and record the versions table as `model_versions`.",
)
