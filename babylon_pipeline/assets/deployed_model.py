"""`deployed_model` (one partition per version): the version started as a canary, its adapter answering.

Materializing a version's partition (the `deploy_job`, fraction as config) is a person's or the
pipeline's request to put that version on a share of the agents. It is refused (`dg.Failure`, nothing
changed, nothing loaded) unless the version is an evaluated candidate not judged worse and no other
canary runs; then the adapter is loaded where agents are answered and health-checked, and only
then does `serving.state` commit the canary. A load or health-check fault fails the blocking check
`adapter_answers` and the run, with the deployment unchanged. Either way the `notifier` sends one alert
(the deployment, `info`; the adapter fault, `error`). Promotion and rollback (`jobs.deployment`)
report this asset's new state for every version they move. (No `from __future__ import annotations`:
Dagster reads the config class off the signature.)
"""

from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, field_validator

from babylon_pipeline.assets.model_evaluation import model_evaluation
from babylon_pipeline.assets.versions_report import record_model_versions
from babylon_pipeline.config_checks import not_blank, share_of_agents
from babylon_pipeline.partitions import model_version_partitions
from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.serving.current_json import CURRENT_KEY, write_current_json
from babylon_pipeline.serving.deploy import DeployOutcome, deploy_canary
from babylon_pipeline.serving.health import HealthCheck
from babylon_pipeline.serving.inference import InferenceError
from babylon_pipeline.serving.state import Deployment, DeploymentRefused, deployment_history

ASSET = "deployed_model"
CHECK = "adapter_answers"
HISTORY_ROWS = 20
DEFAULT_FRACTION = 0.10


class DeployConfig(dg.Config):
    """Refused when the step starts, before anything is loaded or changed: a fraction outside (0, 1] or not
    finite, an empty reason."""

    fraction: float = Field(default=DEFAULT_FRACTION,
                            description="share of the agents routed to the canary: a number in (0, 1], e.g. 0.1 "
                                        "for 10 %; 1 puts every agent on it (promote it afterwards)")
    reason: str = Field(default="deployed by hand", description="why: kept in the deployment history; not empty")

    _fraction = field_validator("fraction")(share_of_agents)
    _reason = field_validator("reason")(not_blank)


def actor_of(context: dg.OpExecutionContext, job: str) -> str:
    """Who made a change: the run's `user` tag when Dagster has one, else the job and run."""
    return context.run.tags.get("user") or context.run.tags.get("dagster/user") or f"{job} run {context.run_id[:8]}"


def deployment_metadata(engine: sa.Engine, version: str, deployment: Deployment) -> dict[str, Any]:
    """This version's share and role in the deployment, the deployment itself, and its recent history."""
    if version == deployment.canary:
        role, share = "canary", deployment.canary_fraction
    elif version == deployment.in_service:
        role, share = "in service", 1.0 - deployment.canary_fraction
    else:
        role, share = "out of service", 0.0
    history = deployment_history(engine).tail(HISTORY_ROWS)
    return {
        "fraction": float(share),
        "role": role,
        "stage": int(deployment.stage),
        "in_service": deployment.in_service or "base",
        "canary": deployment.canary or "none",
        "canary_fraction": float(deployment.canary_fraction),
        "history": dg.MetadataValue.md(history.to_markdown(index=False) if not history.empty else "(no changes yet)"),
    }


def publish(context: dg.OpExecutionContext, store, deployment: Deployment) -> None:
    """`deployments/current.json` for clients without database access, after the commit."""
    if write_current_json(store, deployment):
        context.log.info(f"published {CURRENT_KEY}")
    else:
        context.log.info(f"{CURRENT_KEY} already holds a newer deployment: left as it is")


def health_metadata(health: HealthCheck) -> dict[str, Any]:
    return {"adapter": health.model, "action_type": health.action_type, "latency_ms": round(health.latency_ms, 1),
            "answers": health.answers, "answers_with_action": health.actions,
            "completion_tokens": health.completion_tokens if health.completion_tokens is not None else -1}


@dg.asset(
    deps=[model_evaluation],  # lineage: a version deploys only once its evaluation passed (checked in the state)
    partitions_def=model_version_partitions,
    group_name="deployment",
    kinds={"trajectory-store"},
    check_specs=[dg.AssetCheckSpec(CHECK, asset=ASSET, blocking=True,
                                   description="the adapter loaded where agents are answered and its answer to a "
                                               "game tick parses as an action")],
)
def deployed_model(
    context: dg.AssetExecutionContext,
    config: DeployConfig,
    trajectory_store: TrajectoryStore,
    object_store: ObjectStoreResource,
    inference: InferenceResource,
    notifier: NotifierResource,
):
    """The version as a canary on `fraction` of the agents, after its adapter loaded and answered."""
    version = context.partition_key
    engine, store = trajectory_store.engine(), object_store.open()
    context.log.info(f"deploying {version} to {config.fraction:.0%} of the agents through the {inference.describe()}")
    try:
        outcome: DeployOutcome = deploy_canary(engine, inference.inference(store), version,
                                               config.fraction, actor=actor_of(context, "deploy_job"),
                                               reason=config.reason, alert=notifier.send)
    except DeploymentRefused as refused:
        raise dg.Failure(description=f"{version} is not deployed: {refused}", allow_retries=False) from None
    except InferenceError as fault:
        yield dg.AssetCheckResult(check_name=CHECK, passed=False, metadata={"error": str(fault)})
        raise dg.Failure(description=f"{version} is not deployed, the deployment is unchanged: {fault}",
                         allow_retries=False) from None
    assert outcome.health is not None  # a canary start always checks its adapter
    publish(context, store, outcome.deployment)
    record_model_versions(context, engine, f"deploying {version} to {config.fraction:.0%}")
    yield dg.MaterializeResult(
        metadata=deployment_metadata(engine, version, outcome.deployment),
        check_results=[dg.AssetCheckResult(check_name=CHECK, passed=True, metadata=health_metadata(outcome.health))],
    )
