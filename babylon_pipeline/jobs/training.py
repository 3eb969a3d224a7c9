"""The training job: one GRPO run over every scored, untrained trajectory, holding the GPU."""

from __future__ import annotations

import dagster as dg

from babylon_pipeline.instance import GPU_RUN_TAGS

TRAINING_ASSET = "lora_checkpoint"

training_job = dg.define_asset_job(
    "training_job",
    selection=[TRAINING_ASSET],
    tags=GPU_RUN_TAGS,
    description="GRPO on the scored groups not yet trained on → a LoRA adapter registered as a new version.",
)
