"""The base model job: `base_model` runs under a name of its own, not `__ephemeral_asset_job__`."""

from __future__ import annotations

import dagster as dg

base_model_job = dg.define_asset_job(
    "base_model_job",
    selection=["base_model"],
    description="Record the production base (BASE_MODEL) or build the embedded tiny base; check it can act.",
)
