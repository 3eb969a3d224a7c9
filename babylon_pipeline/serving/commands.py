"""What `babylon models | deploy | promote | rollback | route` do, behind the argument parsing in `cli.py`.

`deploy`, `promote` and `rollback` go through `serving.deploy`, as the jobs and the regression watch do:
a version gaining traffic is loaded and health-checked where agents are answered before the change
commits (the inference server when `BABYLON_INFERENCE_BASE_URL` is set, else the embedded local model
reading the object store), versions leaving service are unloaded after it, and the notifier configured
by the environment (`BABYLON_ALERT_*`; `alerts.jsonl` in the embedded profile) sends the change's alert,
or the adapter fault's. Then `deployments/current.json` is published.
"""

from __future__ import annotations

import json
import os
import sys
from argparse import Namespace
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from babylon_pipeline.resources.inference import inference_resource_from_env
from babylon_pipeline.resources.notifier import notifier_resource_from_env
from babylon_pipeline.resources.object_store import ObjectStoreResource, object_store_resource_from_env
from babylon_pipeline.serving.current_json import CURRENT_KEY, deployment_json, write_current_json
from babylon_pipeline.serving.deploy import deploy_canary, promote_canary, roll_back
from babylon_pipeline.serving.inference import Inference, InferenceError
from babylon_pipeline.serving.models_table import display_table, models_table
from babylon_pipeline.serving.routing import route, stable_unit
from babylon_pipeline.serving.state import Deployment, read_deployment
from babylon_pipeline.storage import ObjectStore
from babylon_pipeline.store.registry import model_id_of


def run_deployment_command(engine: sa.Engine, args: Namespace) -> int:
    if args.command == "models":
        print(_models_text(models_table(engine)))
        return 0
    if args.command == "route":
        return _route(engine, args)
    actor = f"cli:{os.environ.get('USER') or 'unknown'}"
    before = read_deployment(engine)
    with ExitStack() as stack:
        objects = stack.enter_context(_object_store(args.storage_url).process_config_and_initialize_cm())
        store = objects.open()
        inference = stack.enter_context(_inference(store))
        notifier = stack.enter_context(notifier_resource_from_env(objects).process_config_and_initialize_cm())
        common = {"actor": actor, "reason": args.reason, "alert": notifier.send}
        if args.command == "deploy":
            outcome = deploy_canary(engine, inference, args.version, args.fraction, **common)
        elif args.command == "promote":
            outcome = promote_canary(engine, inference, **common)
        else:
            outcome = roll_back(engine, inference, to=args.to, **common)
    for warning in outcome.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(describe_change(before, outcome.deployment))
    if write_current_json(store, outcome.deployment):
        print(f"published {CURRENT_KEY}")
    return 0


def describe_change(before: Deployment, after: Deployment) -> str:
    serving = after.in_service or "the base"
    if after.canary is not None:
        return f"canary {after.canary} on {after.canary_fraction:.0%} of agents; {serving} serves the rest"
    gone = [v for v in (before.canary, before.in_service) if v is not None and v != after.in_service]
    return f"{serving} serves all agents" + (f"; archived: {', '.join(gone)}" if gone else "")


def _object_store(storage_url: str | None) -> ObjectStoreResource:
    """`--storage-url`, else the environment's store (`BABYLON_STORAGE_URL` or the embedded profile's)."""
    return ObjectStoreResource(url=storage_url) if storage_url else object_store_resource_from_env()


@contextmanager
def _inference(store: ObjectStore) -> Iterator[Inference]:
    """The inference the environment configures; a half-configured server is a user's error, not a bug."""
    with inference_resource_from_env().process_config_and_initialize_cm() as resource:
        try:
            inference = resource.inference(store)
        except dg.Failure as failure:
            raise InferenceError(failure.description or "the inference settings are unusable") from None
        yield inference


def _route(engine: sa.Engine, args: Namespace) -> int:
    deployment = read_deployment(engine)
    version = route(args.agent_id, deployment)
    on_canary = deployment.canary is not None and version == deployment.canary
    if args.json:
        print(json.dumps({
            "agent_id": args.agent_id, "version": version, "model": model_id_of(version) if version else None,
            "arm": "canary" if on_canary else "in_service",
            "unit": stable_unit(deployment.salt, args.agent_id) if deployment.canary else None,
            "deployment": deployment_json(deployment),
        }))
    else:
        arm = f"canary, {deployment.canary_fraction:.0%} of agents" if on_canary else "in service"
        print(f"{args.agent_id}: {version or 'base'} ({arm})")
    return 0


def _models_text(table: pd.DataFrame) -> str:
    if table.empty:
        return "(no versions registered: train one with training_job)"
    return display_table(table).to_string(index=False)
