"""The evaluation job: one model version's `model_evaluation` partition (and its blocking check)."""

from __future__ import annotations

import dagster as dg

from babylon_pipeline.partitions import model_version_partitions

EVALUATION_ASSET = "model_evaluation"

evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=[EVALUATION_ASSET],
    partitions_def=model_version_partitions,
    description="A version against the model in service and the base on the held-out benchmark, with a verdict.",
)
