"""Jobs for people: deploy a version as a canary, promote the canary, roll back.

`deploy_job` materializes one `deployed_model` partition (the version; `fraction` as config).
`promote_job` and `rollback_job` change the deployment through `serving.deploy` (a version gaining
traffic is loaded and health-checked before the change commits, versions leaving service are
unloaded after; one alert per change or adapter fault through the `notifier`) and report the new
state as a `deployed_model` materialization of every version they moved, so each version's page
shows where it stands. The change is applied to the deployment the op read (`expected=`): one that
moved meanwhile refuses it. Every change is published to
`deployments/current.json` after its commit. Whatever makes no sense (no canary to
promote, a promote naming another version than the canary, a rollback target that never served) is
refused with the state's own message and changes nothing. (No `from __future__ import annotations`:
Dagster reads the config classes off the signatures.)
"""

from collections.abc import Iterator

import dagster as dg
from pydantic import Field, field_validator

from babylon_pipeline.assets.deployed_model import ASSET, actor_of, deployment_metadata, publish
from babylon_pipeline.assets.versions_report import record_model_versions
from babylon_pipeline.config_checks import not_blank, version_or_none
from babylon_pipeline.partitions import model_version_partitions
from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.serving.deploy import DeployOutcome, promote_canary, roll_back
from babylon_pipeline.serving.inference import InferenceError
from babylon_pipeline.serving.state import Deployment, DeploymentRefused, read_deployment

deploy_job = dg.define_asset_job(
    "deploy_job",
    selection=[ASSET],
    partitions_def=model_version_partitions,
    description="Start a version (the partition) as a canary on `fraction` of the agents, once its adapter answers.",
)


class PromoteConfig(dg.Config):
    """Refused when the step starts, before anything changes: a version that is not vX.Y.Z, an empty reason."""

    version: str | None = Field(default=None, description="a guard: refuse unless this version (vX.Y.Z) is the "
                                                          "canary; empty: promote whichever canary runs")
    reason: str = Field(default="promoted by hand", description="why: kept in the deployment history; not empty")

    _version = field_validator("version")(version_or_none)
    _reason = field_validator("reason")(not_blank)


class RollbackConfig(dg.Config):
    """Refused when the step starts, before anything changes: a target that is not vX.Y.Z, an empty reason."""

    to: str | None = Field(default=None, description="the version (vX.Y.Z) to serve all agents afterwards; it "
                                                     "must have served before. Empty: the canary's control, or "
                                                     "the version the one in service replaced")
    reason: str = Field(default="rolled back by hand", description="why: kept in the deployment history and "
                                                                   "shown in model_versions; not empty")

    _to = field_validator("to")(version_or_none)
    _reason = field_validator("reason")(not_blank)


@dg.op(out={}, description="The canary serves every agent; the version it replaces is archived and unloaded.")
def promote_canary_op(context: dg.OpExecutionContext, config: PromoteConfig, trajectory_store: TrajectoryStore,
                      object_store: ObjectStoreResource, inference: InferenceResource,
                      notifier: NotifierResource) -> Iterator[dg.AssetMaterialization]:
    engine, store = trajectory_store.engine(), object_store.open()
    before = read_deployment(engine)
    if config.version is not None and config.version != before.canary:
        raise dg.Failure(description=f"not promoting: the canary is {before.canary or 'none'}, not {config.version}",
                         allow_retries=False)
    outcome = _change(lambda: promote_canary(engine, inference.inference(store), actor=actor_of(context, "promote_job"),
                                             reason=config.reason, alert=notifier.send, expected=before))
    publish(context, store, outcome.deployment)
    yield from _report(context, engine, before, outcome)
    record_model_versions(context, engine, "a promotion")


@dg.op(out={}, description="Take the canary off and/or put a version that served before back in service.")
def rollback_op(context: dg.OpExecutionContext, config: RollbackConfig, trajectory_store: TrajectoryStore,
                object_store: ObjectStoreResource, inference: InferenceResource,
                notifier: NotifierResource) -> Iterator[dg.AssetMaterialization]:
    engine, store = trajectory_store.engine(), object_store.open()
    before = read_deployment(engine)
    outcome = _change(lambda: roll_back(engine, inference.inference(store), to=config.to,
                                        actor=actor_of(context, "rollback_job"), reason=config.reason,
                                        alert=notifier.send, expected=before))
    publish(context, store, outcome.deployment)
    yield from _report(context, engine, before, outcome)
    record_model_versions(context, engine, "a rollback")


@dg.job(description="Promote the running canary to every agent.")
def promote_job() -> None:
    promote_canary_op()


@dg.job(description="Roll back the canary, or the version in service, to a version that served before.")
def rollback_job() -> None:
    rollback_op()


def _change(change) -> DeployOutcome:
    try:
        return change()
    except DeploymentRefused as refused:
        raise dg.Failure(description=f"refused, nothing changed: {refused}", allow_retries=False) from None
    except InferenceError as fault:
        raise dg.Failure(description=f"the deployment is unchanged: {fault}", allow_retries=False) from None


def _report(context: dg.OpExecutionContext, engine, before: Deployment,
            outcome: DeployOutcome) -> Iterator[dg.AssetMaterialization]:
    after = outcome.deployment
    for warning in outcome.warnings:
        context.log.warning(warning)
    context.log.info(f"in service: {after.in_service or 'base'}; canary: {after.canary or 'none'}; "
                     f"unloaded: {', '.join(outcome.unloaded) or 'none'}")
    moved = [v for v in dict.fromkeys((before.canary, before.in_service, after.canary, after.in_service)) if v]
    known = set(context.instance.get_dynamic_partitions(model_version_partitions.name))
    for version in moved:
        if version in known:
            yield dg.AssetMaterialization(asset_key=ASSET, partition=version,
                                          metadata=deployment_metadata(engine, version, after))
