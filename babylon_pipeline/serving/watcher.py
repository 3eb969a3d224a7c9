"""One tick of the regression watch: read the deployment and the canary's window summaries, decide, apply.

The summaries are the `arms.json` files `outcome_rewards` writes per window (`serving.arms`): a tick reads
one small file per hour the canary has run, whatever the number of trajectories. The decision
(`serving.watch`) is applied through `serving.deploy` under the actor `regression_watch`, with the
decision's explanation as the reason in the deployment history, so adapters are handled as for any other
change: a promotion only after the canary's adapter answers (a fault leaves the deployment as it was and
alerts; the next tick tries again), a rollback always, its retired adapter unloaded after the commit.
Every change sends its alert there (`serving.change_alerts`, with the decision's numbers as fields) and
is published to `deployments/current.json`. Starvation and a regression whose rollback could not be
applied are alerted here (the notifier deduplicates by key: one alert per canary and incident).

A decision is applied with the deployment it was made on as `expected`: when a person promoted, rolled
back or raised the canary meanwhile, `serving.state` refuses it under its lock, so a decision about one
state never lands on another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa

from babylon_pipeline.alerts import Alert
from babylon_pipeline.serving import state
from babylon_pipeline.serving.arms import WindowArms, total
from babylon_pipeline.serving.current_json import write_current_json
from babylon_pipeline.serving.deploy import promote_canary, raise_canary, roll_back
from babylon_pipeline.serving.inference import Inference, InferenceError
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


def watch_tick(engine: sa.Engine, store: ObjectStore, inference: Inference, config: WatchConfig, now: datetime,
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
    not_applied = apply_decision(engine, store, inference, deployment, decision, now, alert)
    if decision.action is Action.ROLLBACK and not_applied and state.read_deployment(engine) == deployment:
        # Unchanged, so the regressed canary still serves: critical. A deployment that moved meanwhile (a
        # person, another tick) is no incident: the next tick decides again on what is there now.
        alert(_alert(decision, f"regression:{decision.canary}:{deployment.canary_started_at}", "critical",
                     f"Canary {decision.canary} regressed; its automatic rollback was not applied: {not_applied}"))
    if not_applied:
        return replace(tick, summary=f"{tick.summary}; not applied: {not_applied}")
    return replace(tick, applied=True)


def apply_decision(engine: sa.Engine, store: ObjectStore, inference: Inference, deployment: state.Deployment,
                   decision: Decision, now: datetime, alert: Callable[[Alert], object]) -> str | None:
    """Change the deployment as decided, through `serving.deploy` (adapters checked before a promotion,
    unloaded after a rollback; one alert per change or fault) and published to `deployments/current.json`;
    why not, if it was not changed. The change is refused under the state's lock when the deployment is no
    longer the one decided on."""
    common = {"actor": ACTOR, "reason": decision.explanation, "alert": alert, "expected": deployment, "now": now,
              "details": _details(decision)}
    try:
        if decision.action is Action.NEXT_STAGE:
            outcome = raise_canary(engine, decision.next_fraction, **common)
        elif decision.action is Action.PROMOTE:
            outcome = promote_canary(engine, inference, **common)
        else:
            outcome = roll_back(engine, inference, to=None, **common)
    except (state.DeploymentRefused, InferenceError) as refused:
        return str(refused)
    write_current_json(store, outcome.deployment)
    return None


def _alert(decision: Decision, key: str, severity: str, title: str) -> Alert:
    return Alert(key=key, title=title, text=decision.explanation, severity=severity, fields=_details(decision))


def _details(decision: Decision) -> dict[str, str]:
    return {name.removeprefix("babylon/"): value for name, value in decision.tags().items()}
