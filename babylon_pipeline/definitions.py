"""The code location: the one `Definitions` object, with resources picked by profile.

Production when the environment names it (`DATABASE_URL`, `BABYLON_STORAGE_URL`,
`BABYLON_JUDGE_BASE_URL`, `BASE_MODEL`, `BABYLON_TRAINER=k8s`), read through `EnvVar` at run time;
the embedded profile (SQLite, local files, the heuristic judge and a tiny local base under
`$BABYLON_HOME`, the trainer as a subprocess) otherwise. Every asset carries its owner and code
references (`catalog.py`). Nothing here imports torch.
"""

from __future__ import annotations

import os

import dagster as dg

from babylon_pipeline.assets.base_model import base_model
from babylon_pipeline.assets.deployed_model import deployed_model
from babylon_pipeline.assets.lora_checkpoint import lora_checkpoint
from babylon_pipeline.assets.model_evaluation import model_evaluation
from babylon_pipeline.assets.model_versions import model_versions
from babylon_pipeline.catalog import with_catalog_metadata
from babylon_pipeline.checks.lora_checkpoint import LORA_CHECKPOINT_CHECKS
from babylon_pipeline.jobs.base_model import base_model_job
from babylon_pipeline.jobs.deployment import deploy_job, promote_job, rollback_job
from babylon_pipeline.jobs.evaluation import evaluation_job
from babylon_pipeline.jobs.model_versions import model_versions_job
from babylon_pipeline.jobs.training import training_job
from babylon_pipeline.jobs.windows import WINDOW_ASSETS, window_job, window_schedule
from babylon_pipeline.kinds import profile_kinds, with_profile_kinds
from babylon_pipeline.resources import trajectory_store_from_env
from babylon_pipeline.resources.inference import inference_resource_from_env
from babylon_pipeline.resources.judge import judge_resource_from_env
from babylon_pipeline.resources.notifier import notifier_resource_from_env
from babylon_pipeline.resources.object_store import object_store_resource_from_env
from babylon_pipeline.resources.trainer import trainer_resource_from_env
from babylon_pipeline.sensors.alerts import ALERT_SENSORS
from babylon_pipeline.sensors.late_outcomes import late_outcomes_sensor
from babylon_pipeline.sensors.readiness import training_readiness_sensor
from babylon_pipeline.sensors.regression_watch import regression_watch_sensor
from babylon_pipeline.sensors.release import release_sensor


def build_definitions() -> dg.Definitions:
    """The code location for the environment as it is now (the profile is read when this is called)."""
    return dg.Definitions(
        assets=with_catalog_metadata(
            with_profile_kinds([*WINDOW_ASSETS, base_model, lora_checkpoint, model_evaluation, deployed_model,
                                model_versions],
                               profile_kinds()),
            os.environ,
        ),
        asset_checks=LORA_CHECKPOINT_CHECKS,
        jobs=[window_job, training_job, base_model_job, evaluation_job, deploy_job, promote_job, rollback_job,
              model_versions_job],
        schedules=[window_schedule],
        sensors=[late_outcomes_sensor, training_readiness_sensor, release_sensor, regression_watch_sensor,
                 *ALERT_SENSORS],
        resources={
            "trajectory_store": trajectory_store_from_env(),
            "object_store": object_store_resource_from_env(),
            "judge": judge_resource_from_env(),
            "trainer": trainer_resource_from_env(),
            "notifier": notifier_resource_from_env(),
            "inference": inference_resource_from_env(),
        },
    )


defs = build_definitions()
