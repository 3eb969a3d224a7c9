"""Deployment changes with their adapters: loaded and health-checked before the change commits, unloaded after.

The order is what keeps a fault from reaching agents. A version that is about to receive traffic
(a new canary, a canary promoted to everyone, a version brought back by a rollback) is loaded where
agents are answered and must answer the health check before `serving.state` commits the change;
a load or check that fails raises `InferenceError` and the deployment is unchanged (an adapter
loaded for the attempt is unloaded again). Versions the change takes out of service are unloaded
after the commit, and a failed unload is only a warning: the change is made, a stale adapter merely
holds memory.

`canary_refusal` repeats `start_canary`'s rules on a plain read so that nothing is loaded for a
version that would be refused; `start_canary` checks them again under its lock, and that is the
answer that counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from babylon_pipeline.serving.health import HealthCheck
from babylon_pipeline.serving.inference import Inference, InferenceError
from babylon_pipeline.serving.state import (
    Deployment,
    DeploymentRefused,
    deployment_history,
    eval_summary,
    promote,
    read_deployment,
    rollback,
    start_canary,
)
from babylon_pipeline.store import tables
from babylon_pipeline.store.registry import CANDIDATE

M = tables.trained_models


@dataclass(frozen=True)
class DeployOutcome:
    deployment: Deployment
    health: HealthCheck | None  # of the version that gained traffic; None when only the base gained it
    unloaded: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def canary_refusal(engine: sa.Engine, version: str) -> str | None:
    """Why `version` cannot start a canary now (the state's rules, read without a lock), or None."""
    current = read_deployment(engine)
    if current.canary is not None:
        return (f"canary {current.canary} is running at {current.canary_fraction:.0%}: promote it or roll it back "
                f"before starting another")
    if version == current.in_service:
        return f"{version} already serves all agents"
    with engine.connect() as conn:
        row = conn.execute(sa.select(M.c.status, M.c.evalMetrics).where(M.c.version == version)
                           .order_by(M.c.createdAt.desc()).limit(1)).first()
    if row is None:
        return f"unknown version {version!r}: it was never registered"
    if row.status != CANDIDATE:
        return f"{version} is {row.status}: only a candidate starts a canary"
    summary = eval_summary(row.evalMetrics) or {}
    if summary.get("verdict") not in ("better", "no_difference", "worse"):
        return f"{version} was never evaluated (no evalMetrics.verdict): materialize model_evaluation for it first"
    if summary["verdict"] == "worse":
        return f"{version} was judged worse than the model in service: it is not deployed"
    if summary.get("guardrails_passed") is not True:
        return f"{version} did not pass its evaluation guardrails: it is not deployed"
    return None


def deploy_canary(engine: sa.Engine, inference: Inference, version: str, fraction: float, *, actor: str,
                  reason: str) -> DeployOutcome:
    """`version` on `fraction` of the agents, its adapter loaded and answering before any agent is routed to it."""
    if (refusal := canary_refusal(engine, version)) is not None:
        raise DeploymentRefused(refusal)
    health = _ready(inference, version, lambda: start_canary(engine, version, fraction, actor=actor, reason=reason))
    return DeployOutcome(read_deployment(engine), health)


def promote_canary(engine: sa.Engine, inference: Inference, *, actor: str, reason: str) -> DeployOutcome:
    """The canary serves everyone once it answers; the version it replaces is unloaded."""
    before = read_deployment(engine)
    if before.canary is None:
        raise DeploymentRefused("no canary is running: nothing to promote")
    health = _ready(inference, before.canary, lambda: promote(engine, actor=actor, reason=reason))
    after = read_deployment(engine)
    return _unload_retired(inference, before, after, health)


def roll_back(engine: sa.Engine, inference: Inference, *, to: str | None, actor: str, reason: str) -> DeployOutcome:
    """The canary off (if one runs) and an earlier version back; the version coming back answers first."""
    before = read_deployment(engine)
    target = rollback_target(engine, before, to)
    change = lambda: rollback(engine, to=to, actor=actor, reason=reason)  # noqa: E731
    if target is None or target == before.in_service:
        change()
        health = None
    else:
        health = _ready(inference, target, change)
    return _unload_retired(inference, before, read_deployment(engine), health)


def rollback_target(engine: sa.Engine, before: Deployment, to: str | None) -> str | None:
    """The version that will serve everyone after the rollback: `to`; else the version in service when a
    canary runs; else the version the one in service replaced when it was promoted."""
    if to is not None:
        return to
    if before.canary is not None or before.in_service is None:
        return before.in_service
    history = deployment_history(engine)
    promoted = history[(history["action"] == "promote") & (history["version"] == before.in_service)]
    replaced = None if promoted.empty else promoted.iloc[-1]["from_version"]
    return replaced if isinstance(replaced, str) else None  # the base (pandas reads a missing text as NaN)


def _ready(inference: Inference, version: str, commit) -> HealthCheck:
    """Load and check `version`, then `commit()`; on any failure an adapter loaded here is unloaded again."""
    loaded_now = inference.load(version)
    try:
        health = inference.health_check(version)
        commit()
    except Exception:
        if loaded_now:
            _try_unload(inference, version)
        raise
    return health


def _unload_retired(inference: Inference, before: Deployment, after: Deployment,
                    health: HealthCheck | None) -> DeployOutcome:
    serving = {after.in_service, after.canary}
    retired = [v for v in (before.canary, before.in_service) if v is not None and v not in serving]
    unloaded, warnings = [], []
    for version in retired:
        problem = _try_unload(inference, version)
        if problem is None:
            unloaded.append(version)
        else:
            warnings.append(problem)
    return DeployOutcome(after, health, tuple(unloaded), tuple(warnings))


def _try_unload(inference: Inference, version: str) -> str | None:
    try:
        inference.unload(version)
    except InferenceError as error:
        return f"{version} is out of service but its adapter stays loaded: {error}"
    return None
