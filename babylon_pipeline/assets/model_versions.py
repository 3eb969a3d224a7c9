"""`model_versions`: every registered version in one table, the admin panel's list of models.

Its materialization's metadata is the table (`serving.models_table`: stage, traffic share, training batch
and reward, benchmark verdict with its interval and champion, the reason of a rollback) as markdown,
plus the number of versions per stage. Materializing it (`model_versions_job`) refreshes it by hand;
otherwise each job that changes the registry or the deployment records it after its change
(`assets.versions_report`), as does the regression watch.
"""

from __future__ import annotations

import dagster as dg

from babylon_pipeline.assets.deployed_model import deployed_model
from babylon_pipeline.assets.lora_checkpoint import lora_checkpoint
from babylon_pipeline.assets.model_evaluation import model_evaluation
from babylon_pipeline.assets.versions_report import ASSET, versions_metadata
from babylon_pipeline.kinds import TRAJECTORY_STORE
from babylon_pipeline.resources.trajectory_store import TrajectoryStore


@dg.asset(
    name=ASSET,
    deps=[lora_checkpoint, model_evaluation, deployed_model],  # lineage: training, evaluation and deployment change it
    group_name="deployment",
    kinds={TRAJECTORY_STORE, "pandas"},
    description="Every registered version: stage, traffic share, trained at, training batch and reward, benchmark "
                "verdict with the interval of the reward difference and its champion, and what it was rolled back "
                "for. Recorded after every training, evaluation, deploy, promote, rollback and regression-watch "
                "change; materialize it to refresh it by hand.",
)
def model_versions(trajectory_store: TrajectoryStore) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=versions_metadata(trajectory_store.engine()))
