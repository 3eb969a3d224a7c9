"""One tick of the regression watch: read the deployment and the canary's window summaries, decide, apply.

The summaries are the `arms.json` files `outcome_rewards` writes per window (`serving.arms`): a tick reads
one small file per hour the canary has run, whatever the number of trajectories. The decision
(`serving.watch`) is applied through `serving.state` under the actor `regression_watch`, with the
decision's explanation as the reason in the deployment history. Rollbacks, a regression whose rollback
could not be applied, and starvation are reported through the `alert` callable (the notifier
deduplicates by key: one alert per canary and incident).

The deployment is read again just before a change and the change is dropped if it moved meanwhile (a
person promoted, rolled back or started another canary): a decision about one canary is never applied
to another. (The state's lock makes each change atomic; this check narrows, but cannot close, the gap
between reading and changing, which only an "expected canary" argument of the state functions would.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa

from babylon_pipeline.alerts import Alert
from babylon_pipeline.serving import state
from babylon_pipeline.serving.arms import WindowArms, total
from babylon_pipeline.serving.watch import Action, Decision, WatchConfig, canary_windows, decide
from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.windowing.files import WindowFileMissing
from babylon_pipeline.windowing.rewards import read_window_arms

ACTOR = "regression_watch"


@dataclass(frozen=True)
class Tick:
    summary: str  # what the sensor shows: the decision's line and what was done
    decision: Decision | None = None  # None: no canary running
    applied: bool = False  # the deployment was changed


def read_canary_arms(store: ObjectStore, windows: list[str]) -> tuple[WindowArms, int]:
    """The windows' arms added up, and how many windows have none yet."""
    found, missing = [], 0
    for window_id in windows:
        try:
            found.append(read_window_arms(store, window_id))
        except WindowFileMissing:
            missing += 1
    return total(found), missing


def watch_tick(engine: sa.Engine, store: ObjectStore, config: WatchConfig, now: datetime,
               alert: Callable[[Alert], object]) -> Tick:
    deployment = state.read_deployment(engine)
    if deployment.canary is None:
        serving = deployment.in_service or "the base model"
        return Tick(f"no canary running; {serving} serves all agents")
    windows = canary_windows(deployment.canary_started_at or deployment.changed_at or now, now)
    arms, unscored = read_canary_arms(store, windows)
    decision = decide(deployment, arms, config, now)
    scope = f" [{len(windows)} windows, {unscored} not scored yet; {arms.unattributed + arms.mixed} unattributed]"
    tick = Tick(decision.explanation + scope, decision)
    if decision.action is Action.STARVED:
        alert(_alert(decision, f"canary-starved:{decision.canary}:{deployment.canary_started_at}", "warning",
                     f"Canary {decision.canary} gets too little traffic"))
    if decision.action not in (Action.NEXT_STAGE, Action.PROMOTE, Action.ROLLBACK):
        return tick
    not_applied = apply_decision(engine, deployment, decision, now)
    if decision.action is Action.ROLLBACK and not_applied:
        alert(_alert(decision, f"regression:{decision.canary}", "critical",
                     f"Canary {decision.canary} regressed; its automatic rollback was not applied: {not_applied}"))
    elif decision.action is Action.ROLLBACK:
        alert(_alert(decision, f"rollback:{decision.canary}", "error",
                     f"Canary {decision.canary} rolled back: {decision.control} serves all agents again"))
    if not_applied:
        return replace(tick, summary=f"{tick.summary}; not applied: {not_applied}")
    return replace(tick, applied=True)


def apply_decision(engine: sa.Engine, deployment: state.Deployment, decision: Decision, now: datetime) -> str | None:
    """Change the deployment as decided; why not, if it was not changed."""
    if state.read_deployment(engine) != deployment:
        return "the deployment changed meanwhile"
    try:
        if decision.action is Action.NEXT_STAGE:
            state.set_canary_fraction(engine, decision.next_fraction, actor=ACTOR, reason=decision.explanation, now=now)
        elif decision.action is Action.PROMOTE:
            state.promote(engine, actor=ACTOR, reason=decision.explanation, now=now)
        else:
            state.rollback(engine, actor=ACTOR, reason=decision.explanation, now=now)
    except state.DeploymentRefused as refused:
        return str(refused)
    return None


def _alert(decision: Decision, key: str, severity: str, title: str) -> Alert:
    return Alert(key=key, title=title, text=decision.explanation, severity=severity,
                      fields={name.removeprefix("babylon/"): value for name, value in decision.tags().items()})
