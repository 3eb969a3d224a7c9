"""What `babylon models | deploy | promote | rollback | route` do, behind the argument parsing in `cli.py`.

The commands change the deployment state in the database and then publish `deployments/current.json`.
They do not load adapters on an inference server: the deploy job does that (a person who deploys by hand
on a server that does not already hold the adapter runs the job instead).
"""

from __future__ import annotations

import json
import os
from argparse import Namespace

import pandas as pd
import sqlalchemy as sa

from babylon_pipeline.serving.current_json import CURRENT_KEY, deployment_json, write_current_json
from babylon_pipeline.serving.models_table import models_table
from babylon_pipeline.serving.routing import route, stable_unit
from babylon_pipeline.serving.state import Deployment, promote, read_deployment, rollback, start_canary
from babylon_pipeline.store.registry import model_id_of


def run_deployment_command(engine: sa.Engine, args: Namespace) -> int:
    if args.command == "models":
        print(_models_text(models_table(engine)))
        return 0
    if args.command == "route":
        return _route(engine, args)
    actor = f"cli:{os.environ.get('USER') or 'unknown'}"
    before = read_deployment(engine)
    if args.command == "deploy":
        after = start_canary(engine, args.version, args.fraction, actor=actor, reason=args.reason)
    elif args.command == "promote":
        after = promote(engine, actor=actor, reason=args.reason)
    else:
        after = rollback(engine, to=args.to, actor=actor, reason=args.reason)
    print(describe_change(before, after))
    _publish(args.storage_url, after)
    return 0


def describe_change(before: Deployment, after: Deployment) -> str:
    serving = after.in_service or "the base"
    if after.canary is not None:
        return f"canary {after.canary} on {after.canary_fraction:.0%} of agents; {serving} serves the rest"
    gone = [v for v in (before.canary, before.in_service) if v is not None and v != after.in_service]
    return f"{serving} serves all agents" + (f"; archived: {', '.join(gone)}" if gone else "")


def _publish(storage_url: str | None, deployment: Deployment) -> None:
    from babylon_pipeline.resources.object_store import embedded_storage_url
    from babylon_pipeline.storage import open_object_store

    store = open_object_store(storage_url or os.environ.get("BABYLON_STORAGE_URL") or embedded_storage_url())
    if write_current_json(store, deployment):
        print(f"published {CURRENT_KEY}")


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
    shown = table.assign(
        traffic_share=table["traffic_share"].map("{:.0%}".format),
        benchmark_reward=table["benchmark_reward"].map(lambda v: "-" if pd.isna(v) else f"{v:.4f}"),
        trained_at=table["trained_at"].map(lambda t: "-" if pd.isna(t) else t.strftime("%Y-%m-%d %H:%M")),
    ).fillna("-")
    return shown.to_string(index=False)
