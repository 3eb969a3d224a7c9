"""Deployment changes with their adapters: loaded and health-checked before the change commits, unloaded after.

The order is what keeps a fault from reaching agents. A version that is about to receive traffic
(a new canary, a canary promoted to everyone, a version brought back by a rollback) is loaded where
agents are answered and must answer the health check before `serving.state` commits the change;
a load or check that fails raises `InferenceError` and the deployment is unchanged (an adapter
loaded for the attempt is unloaded again). Versions the change takes out of service are unloaded
after the commit, and a failed unload is only a warning: the change is made, a stale adapter merely
holds memory.

Every change sends one alert after its commit (`serving.change_alerts`: deployments and promotions
`info`, rollbacks `error`), and a load or check fault sends one before it is raised, whichever path
(a job, the regression watch, the CLI) asked for the change. A change passes the deployment it read
first as `expected` to `serving.state`, so a deployment that moved while an adapter was loaded (or
since a caller decided, given as `expected=`) refuses the change under the lock.

`canary_refusal` (and `serving.state.check_rollback`) repeats `start_canary`'s (`rollback`'s) rules on a
plain read so that nothing is loaded for a change that would be refused; the state checks them again
under its lock, and that is the answer that counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from babylon_pipeline.alerts import Alert
from babylon_pipeline.alerts.alert import FieldValue
from babylon_pipeline.serving.change_alerts import adapter_fault_alert, canary_alert, promotion_alert, rollback_alert
from babylon_pipeline.serving.health import HealthCheck
from babylon_pipeline.serving.inference import Inference, InferenceError
from babylon_pipeline.serving.state import (
    Deployment,
    DeploymentRefused,
    check_expected,
    check_fraction,
    check_rollback,
    deployment_history,
    eval_summary,
    promote,
    read_deployment,
    rollback,
    set_canary_fraction,
    start_canary,
)
from babylon_pipeline.store import tables
from babylon_pipeline.store.registry import CANDIDATE

M = tables.trained_models
Alerter = Callable[[Alert], object]
"""The notifier's `send` (never raises), or any sink of alerts."""
NO_DETAILS: Mapping[str, FieldValue] = {}


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
                  reason: str, alert: Alerter, now: datetime | None = None,
                  details: Mapping[str, FieldValue] = NO_DETAILS) -> DeployOutcome:
    """`version` on `fraction` of the agents, its adapter loaded and answering before any agent is routed to it."""
    check_fraction(fraction)
    if (refusal := canary_refusal(engine, version)) is not None:
        raise DeploymentRefused(refusal)
    before = read_deployment(engine)
    fault = _fault_alert(alert, "deploy", version, before, actor, inference, details)
    health, after = _ready(inference, version, fault, lambda: start_canary(
        engine, version, fraction, actor=actor, reason=reason, now=now, expected=before))
    alert(canary_alert(before, after, actor, reason, health, details))
    return DeployOutcome(after, health)


def raise_canary(engine: sa.Engine, fraction: float, *, actor: str, reason: str, alert: Alerter,
                 expected: Deployment | None = None, now: datetime | None = None,
                 details: Mapping[str, FieldValue] = NO_DETAILS) -> DeployOutcome:
    """The canary's next stage: its adapter already serves, so nothing is loaded."""
    before = read_deployment(engine)
    check_expected(before, expected)
    after = set_canary_fraction(engine, fraction, actor=actor, reason=reason, now=now, expected=before)
    alert(canary_alert(before, after, actor, reason, None, details))
    return DeployOutcome(after, None)


def promote_canary(engine: sa.Engine, inference: Inference, *, actor: str, reason: str, alert: Alerter,
                   expected: Deployment | None = None, now: datetime | None = None,
                   details: Mapping[str, FieldValue] = NO_DETAILS) -> DeployOutcome:
    """The canary serves everyone once it answers; the version it replaces is unloaded."""
    before = read_deployment(engine)
    check_expected(before, expected)
    if before.canary is None:
        raise DeploymentRefused("no canary is running: nothing to promote")
    fault = _fault_alert(alert, "promote", before.canary, before, actor, inference, details)
    health, after = _ready(inference, before.canary, fault, lambda: promote(
        engine, actor=actor, reason=reason, now=now, expected=before))
    outcome = _unload_retired(inference, before, after, health)
    alert(promotion_alert(before, after, actor, reason, outcome.warnings, details))
    return outcome


def roll_back(engine: sa.Engine, inference: Inference, *, to: str | None, actor: str, reason: str, alert: Alerter,
              expected: Deployment | None = None, now: datetime | None = None,
              details: Mapping[str, FieldValue] = NO_DETAILS) -> DeployOutcome:
    """The canary off (if one runs) and an earlier version back; the version coming back answers first.
    Versions taken out are unloaded after the commit: a failed unload is a warning, the rollback stands."""
    before = read_deployment(engine)
    check_expected(before, expected)
    check_rollback(engine, to)
    target = rollback_target(engine, before, to)
    change = lambda: rollback(engine, to=to, actor=actor, reason=reason, now=now, expected=before)  # noqa: E731
    if target is None or target == before.in_service:
        health, after = None, change()
    else:
        fault = _fault_alert(alert, "roll back to", target, before, actor, inference, details)
        health, after = _ready(inference, target, fault, change)
    outcome = _unload_retired(inference, before, after, health)
    alert(rollback_alert(before, after, actor, reason, outcome.warnings, details))
    return outcome


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


def _ready(inference: Inference, version: str, fault: Callable[[InferenceError], object],
           commit: Callable[[], Deployment]) -> tuple[HealthCheck, Deployment]:
    """Load and check `version`, then `commit()`; on any failure an adapter loaded here is unloaded again,
    and a load or check fault is reported through `fault` before it is raised."""
    loaded_now = False
    try:
        loaded_now = inference.load(version)
        health = inference.health_check(version)
        after = commit()
    except Exception as error:
        if isinstance(error, InferenceError):
            fault(error)
        if loaded_now:
            _try_unload(inference, version)
        raise
    return health, after


def _fault_alert(alert: Alerter, action: str, version: str, before: Deployment, actor: str, inference: Inference,
                 details: Mapping[str, FieldValue]) -> Callable[[InferenceError], object]:
    return lambda error: alert(adapter_fault_alert(action, version, before, actor, inference.describe(), error,
                                                   details))


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
