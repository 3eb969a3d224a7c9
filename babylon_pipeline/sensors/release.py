"""The automatic path, no button pressed: a registered version is evaluated, then started as a canary.

Each tick reads the deployment and the candidates and asks `serving.release` for the next step: an
`evaluation_job` run for the newest candidate (run key per version and champion, so it is evaluated
once against each model in service), or a `deploy_job` run once it passed (run key per version, at the
default canary share); the regression watch takes the canary from there through its stages. With
`BABYLON_DEPLOY_APPROVAL=manual` the path stops before the canary starts and the skip reason says who
is waited for. A step whose run already exists is not asked for again: the skip reason names that run
and its status (a failed evaluation or deployment alerts through the run-failure sensor; a person
re-runs it).
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

from babylon_pipeline.jobs.deployment import deploy_job
from babylon_pipeline.jobs.evaluation import evaluation_job
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.serving.release import Step, next_release_step, release_candidates
from babylon_pipeline.serving.state import read_deployment
from babylon_pipeline.serving.watch import manual_approval
from babylon_pipeline.store import tables

RUN_KEY_TAG, SENSOR_TAG = "dagster/run_key", "dagster/sensor_name"
AUTOMATIC_REASON = "automatic: passed its evaluation against the model in service"


@dg.sensor(
    jobs=[evaluation_job, deploy_job],
    minimum_interval_seconds=30,  # a registry read: a new version is evaluated within half a minute
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Every 30 s: evaluates the newest registered version against the model in service, and starts "
                "it as a canary once it passed (BABYLON_DEPLOY_APPROVAL=manual: waits for a person instead). "
                "The skip reason says what the release waits for.",
)
def release_sensor(context: dg.SensorEvaluationContext,
                   trajectory_store: TrajectoryStore) -> dg.RunRequest | dg.SkipReason:
    engine = trajectory_store.engine()
    if not sa.inspect(engine).has_table(tables.deployment.name):
        return dg.SkipReason(f"the trajectory store has no {tables.deployment.name} table: run `babylon db upgrade`")
    deployment = read_deployment(engine)
    step = next_release_step(release_candidates(engine, deployment), deployment, manual=manual_approval())
    if step.step is Step.WAIT or step.version is None or step.run_key is None:
        return dg.SkipReason(step.explanation)
    [earlier] = context.instance.get_runs(dg.RunsFilter(tags={RUN_KEY_TAG: step.run_key, SENSOR_TAG: context.sensor_name}), limit=1) or [None]
    if earlier is not None:
        return dg.SkipReason(f"{step.explanation}: run {earlier.run_id[:8]} ({earlier.status.value}) was started "
                             f"for it{'; re-run it by hand' if earlier.status is dg.DagsterRunStatus.FAILURE else ''}")
    context.log.info(step.explanation)
    if step.step is Step.EVALUATE:
        return dg.RunRequest(run_key=step.run_key, job_name=evaluation_job.name, partition_key=step.version,
                             tags={"babylon/release": step.explanation})
    return dg.RunRequest(run_key=step.run_key, job_name=deploy_job.name, partition_key=step.version,
                         run_config={"ops": {"deployed_model": {"config": {"reason": AUTOMATIC_REASON}}}},
                         tags={"babylon/release": step.explanation})
