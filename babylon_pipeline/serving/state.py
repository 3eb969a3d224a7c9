"""The deployment state: which version serves all agents, which runs as a canary on a share of them.

`babylon_deployment` (one row) is the source of truth; `babylon_deployment_history` holds every change
with who made it and why. Each change is one transaction that locks the deployment row (`SELECT … FOR
UPDATE` on Postgres, `BEGIN IMMEDIATE` on SQLite) and moves `trained_models` in the same commit, so the
app's legacy selection (the pinned version if `ready`, else the newest `ready`/`deployed` row) always
picks the version in service: that row is the only one `deployed`, and the pipeline never writes `ready`.
A change decided on a deployment read earlier (the regression watch's verdict on one canary, a promotion
whose adapter was checked first) passes that deployment as `expected=`: under the lock, a deployment that
moved meanwhile refuses the change (`DeploymentMoved`), so a decision about one state never lands on another.

    candidate --start_canary--> canary --promote--> deployed --(superseded / rolled back)--> archived
                                  `--rollback--> archived           archived --rollback(to=)--> deployed

A database the pipeline has not changed yet (no deployment row, or one never written) is adopted on the
first change: the version the legacy rule picks is in service (`deployed`, `deployedAt` set to its
`createdAt` if unset, since the legacy rule served it from then) and every other `ready`/`deployed` row is
archived (the legacy rule had superseded it). Until then `read_deployment` reports that pick.

History columns: `version` is where the change goes, `from_version` where it comes from: `canary`/`stage`
(the canary, the version in service), `promote` (the canary, the version it replaces), `rollback` (the
version serving everyone afterwards, None for the base; the version taken out), `adopt` (the pick, None).

`agentsUsing` is an estimate: the distinct agents of the newest recorded window, split by the canary's
fraction (the pipeline cannot count the app's live agents); versions that stop serving get 0.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from babylon_pipeline.store import tables
from babylon_pipeline.store.registry import ARCHIVED, CANARY, CANDIDATE, DEPLOYED, legacy_pick
from babylon_pipeline.windows import to_utc_naive

D = tables.deployment
H = tables.deployment_history
M = tables.trained_models
T = tables.trajectories

ROW_ID = 1
VERDICTS = ("better", "no_difference", "worse")
HISTORY_COLUMNS = ["at", "actor", "action", "version", "from_version", "fraction", "reason"]


@dataclass(frozen=True)
class Deployment:
    in_service: str | None  # version serving all agents not on the canary; None = the base
    canary: str | None  # version on the canary, if one runs
    canary_fraction: float  # share of agents on the canary, 0.0 without one
    stage: int  # index into the promotion stages, 0 at canary start
    salt: str  # routing salt of this canary, fixed when it starts
    canary_started_at: datetime | None  # naive UTC
    changed_at: datetime | None


class DeploymentRefused(ValueError):
    """A change that makes no sense in the current state; nothing was changed."""


class DeploymentMoved(DeploymentRefused):
    """The deployment is no longer the one the change was decided on (`expected=`); nothing was changed."""


def read_deployment(engine: sa.Engine) -> Deployment:
    with engine.connect() as conn:
        row = conn.execute(sa.select(D).where(D.c.id == ROW_ID)).first()
        return _legacy_deployment(conn) if row is None or row.changed_at is None else _from_row(row)


def start_canary(engine: sa.Engine, version: str, fraction: float, *, actor: str, reason: str,
                 now: datetime | None = None, expected: Deployment | None = None) -> Deployment:
    """`version` serves `fraction` of the agents; refused unless it is an evaluated candidate not judged worse."""
    check_fraction(fraction)
    moment = _moment(now)
    with _locked(engine, actor, moment, expected) as (conn, current):
        if current.canary is not None:
            raise DeploymentRefused(f"canary {current.canary} is running at {current.canary_fraction:.0%}: promote it "
                                    f"or roll it back before starting another")
        model = _model(conn, version)
        if version == current.in_service:
            raise DeploymentRefused(f"{version} already serves all agents")
        if model.status != CANDIDATE:
            raise DeploymentRefused(f"{version} is {model.status}: only a candidate starts a canary (a version that "
                                    f"served before comes back with `rollback --to {version}`)")
        _check_evaluated(version, model.evalMetrics)
        after = replace(current, canary=version, canary_fraction=float(fraction), stage=0,
                        salt=secrets.token_hex(8), canary_started_at=moment, changed_at=moment)
        _set_status(conn, version, CANARY, moment)
        _commit(conn, after, moment, actor, "canary", version, current.in_service, fraction, reason)
    return after


def set_canary_fraction(engine: sa.Engine, fraction: float, *, actor: str, reason: str,
                        now: datetime | None = None, expected: Deployment | None = None) -> Deployment:
    """The next stage: a larger share on the canary; every agent already on it stays (routing is monotone)."""
    check_fraction(fraction)
    moment = _moment(now)
    with _locked(engine, actor, moment, expected) as (conn, current):
        canary = _running_canary(current, "change its fraction")
        if fraction <= current.canary_fraction:
            raise DeploymentRefused(f"canary {canary} is at {current.canary_fraction:.0%}: a stage only raises the "
                                    f"share (to {fraction:.0%}?); roll back to take it off")
        after = replace(current, canary_fraction=float(fraction), stage=current.stage + 1, changed_at=moment)
        _commit(conn, after, moment, actor, "stage", canary, current.in_service, fraction, reason)
    return after


def promote(engine: sa.Engine, *, actor: str, reason: str, now: datetime | None = None,
            expected: Deployment | None = None) -> Deployment:
    """The canary serves all agents; the version it replaces is archived."""
    moment = _moment(now)
    with _locked(engine, actor, moment, expected) as (conn, current):
        canary = _running_canary(current, "promote")
        if current.in_service is not None:
            _set_status(conn, current.in_service, ARCHIVED, moment, archivedAt=moment, agentsUsing=0)
        _set_status(conn, canary, DEPLOYED, moment, deployedAt=moment, archivedAt=None)
        after = _without_canary(current, in_service=canary, moment=moment)
        _commit(conn, after, moment, actor, "promote", canary, current.in_service, 1.0, reason)
    return after


def rollback(engine: sa.Engine, *, to: str | None = None, actor: str, reason: str,
             now: datetime | None = None, expected: Deployment | None = None) -> Deployment:
    """Take the canary off (if one runs) and, with `to` or without a canary, put an earlier version back in service.

    Without `to` and without a canary, the earlier version is the one the version in service replaced when
    it was promoted (the base if it replaced the base)."""
    moment = _moment(now)
    with _locked(engine, actor, moment, expected) as (conn, current):
        target = current.in_service if to is None and current.canary is not None else to
        if to is not None:
            _check_target(conn, current, to)
        elif current.canary is None:
            target = _previous(conn, current)
        if current.canary is not None:
            _set_status(conn, current.canary, ARCHIVED, moment, archivedAt=moment, agentsUsing=0)
            _history(conn, moment, actor, "rollback", target, current.canary, 0.0, reason)
        if target != current.in_service:
            if current.in_service is not None:
                _set_status(conn, current.in_service, ARCHIVED, moment, archivedAt=moment, agentsUsing=0)
            if target is not None:
                _set_status(conn, target, DEPLOYED, moment, deployedAt=moment, archivedAt=None)
            _history(conn, moment, actor, "rollback", target, current.in_service, 1.0, reason)
        after = _without_canary(current, in_service=target, moment=moment)
        _write(conn, after)
        _estimate_agents(conn, after)
    return after


def check_rollback(engine: sa.Engine, to: str | None) -> None:
    """`rollback`'s refusals on a plain read, without the lock: nothing is loaded for a rollback that would be
    refused (`rollback` checks again under its lock, and that is the answer that counts)."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(D).where(D.c.id == ROW_ID)).first()
        current = _legacy_deployment(conn) if row is None or row.changed_at is None else _from_row(row)
        if to is not None:
            _check_target(conn, current, to)
        elif current.canary is None:
            _previous(conn, current)


def check_expected(current: Deployment, expected: Deployment | None) -> None:
    """`DeploymentMoved` unless `current` is still `expected` (None: anything goes)."""
    if expected is not None and current != expected:
        raise DeploymentMoved(f"the deployment changed meanwhile (now: {describe(current)}; decided on: "
                              f"{describe(expected)})")


def describe(deployment: Deployment) -> str:
    """One line: who serves whom."""
    serving = deployment.in_service or "the base"
    if deployment.canary is None:
        return f"{serving} serves all agents"
    return (f"canary {deployment.canary} at {deployment.canary_fraction:.0%} stage {deployment.stage}, "
            f"{serving} the rest")


def deployment_history(engine: sa.Engine) -> pd.DataFrame:
    """Every change, oldest first: at, actor, action, version, from_version, fraction, reason."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(*(H.c[name] for name in HISTORY_COLUMNS)).order_by(H.c.id)).all()
    return pd.DataFrame([tuple(row) for row in rows], columns=HISTORY_COLUMNS)


def eval_summary(value: Any) -> dict[str, Any] | None:
    """`trained_models.evalMetrics` as a dict (a JSON column, or JSON text in an app's database), None if unreadable."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


# --- inside the locked transaction ---------------------------------------------------------------------------

@contextmanager
def _locked(engine: sa.Engine, actor: str, moment: datetime,
            expected: Deployment | None) -> Iterator[tuple[sa.Connection, Deployment]]:
    """One transaction holding the deployment row's lock; a legacy database is adopted first; refused when
    the deployment is no longer `expected`."""
    if not actor:
        raise ValueError("a deployment change names its actor (a person, a job or a sensor)")
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":  # SQLite has no row locks: take the database's write lock now
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        insert = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(D)
        conn.execute(insert.values(id=ROW_ID).on_conflict_do_nothing(index_elements=["id"]))
        row = conn.execute(sa.select(D).where(D.c.id == ROW_ID).with_for_update()).one()
        current = _from_row(row) if row.changed_at is not None else _adopt(conn, actor, moment)
        check_expected(current, expected)
        yield conn, current


def _adopt(conn: sa.Connection, actor: str, moment: datetime) -> Deployment:
    """The legacy rule's pick becomes the version in service, every other row it could pick is archived."""
    current = _legacy_deployment(conn)
    served = sa.func.coalesce(M.c.deployedAt, M.c.createdAt)
    pickable = M.c.status.in_(("ready", DEPLOYED))
    if current.in_service is not None:
        conn.execute(sa.update(M).where(M.c.version == current.in_service, pickable)
                     .values(status=DEPLOYED, deployedAt=served, updatedAt=moment))
    conn.execute(sa.update(M).where(pickable, M.c.version != (current.in_service or ""))
                 .values(status=ARCHIVED, deployedAt=served, archivedAt=moment, agentsUsing=0, updatedAt=moment))
    _history(conn, moment, actor, "adopt", current.in_service, None, None,
             f"{current.in_service or 'the base'} served (the app's legacy rule) when the pipeline took over")
    return current


def _commit(conn: sa.Connection, after: Deployment, moment: datetime, actor: str, action: str,
            version: str | None, from_version: str | None, fraction: float | None, reason: str) -> None:
    _write(conn, after)
    _history(conn, moment, actor, action, version, from_version, fraction, reason)
    _estimate_agents(conn, after)


def _write(conn: sa.Connection, after: Deployment) -> None:
    conn.execute(sa.update(D).where(D.c.id == ROW_ID).values(
        in_service=after.in_service, canary=after.canary, canary_fraction=after.canary_fraction, stage=after.stage,
        salt=after.salt, canary_started_at=after.canary_started_at, changed_at=after.changed_at,
    ))


def _history(conn: sa.Connection, moment: datetime, actor: str, action: str, version: str | None,
             from_version: str | None, fraction: float | None, reason: str) -> None:
    conn.execute(sa.insert(H).values(at=moment, actor=actor, action=action, version=version,
                                     from_version=from_version, fraction=fraction, reason=reason or ""))


def _set_status(conn: sa.Connection, version: str, status: str, moment: datetime, **values: Any) -> None:
    conn.execute(sa.update(M).where(M.c.version == version).values(status=status, updatedAt=moment, **values))


def _estimate_agents(conn: sa.Connection, after: Deployment) -> None:
    """`agentsUsing` from the newest window's distinct agents, split by the canary's fraction."""
    newest = conn.scalar(sa.select(sa.func.max(T.c.windowId)))
    agents = 0 if newest is None else conn.scalar(
        sa.select(sa.func.count(sa.distinct(T.c.agentId))).where(T.c.windowId == newest))
    on_canary = round(agents * after.canary_fraction) if after.canary else 0
    if after.canary is not None:
        conn.execute(sa.update(M).where(M.c.version == after.canary).values(agentsUsing=on_canary))
    if after.in_service is not None:
        conn.execute(sa.update(M).where(M.c.version == after.in_service).values(agentsUsing=agents - on_canary))


def _model(conn: sa.Connection, version: str) -> sa.Row:
    row = conn.execute(sa.select(M.c.status, M.c.evalMetrics, M.c.deployedAt).where(M.c.version == version)
                       .order_by(M.c.createdAt.desc()).limit(1)).first()
    if row is None:
        known = sorted(conn.scalars(sa.select(M.c.version).distinct()))
        listed = ", ".join(known[-8:]) if known else "none"
        raise DeploymentRefused(f"unknown version {version!r} (registered: {listed})")
    return row


def _check_evaluated(version: str, eval_metrics: Any) -> None:
    summary = eval_summary(eval_metrics) or {}
    verdict = summary.get("verdict")
    if verdict not in VERDICTS:
        raise DeploymentRefused(f"{version} was never evaluated (no evalMetrics.verdict): run model_evaluation "
                                f"for it first")
    if verdict == "worse":
        raise DeploymentRefused(f"{version} was judged worse than the model in service: it is not deployed")
    if summary.get("guardrails_passed") is not True:
        raise DeploymentRefused(f"{version} did not pass its evaluation guardrails (guardrails_passed="
                                f"{summary.get('guardrails_passed')!r}): it is not deployed")


def _check_target(conn: sa.Connection, current: Deployment, to: str) -> None:
    model = _model(conn, to)
    if to == current.canary:
        raise DeploymentRefused(f"{to} is the canary being rolled back, not a version to roll back to")
    if to == current.in_service:
        if current.canary is None:
            raise DeploymentRefused(f"{to} already serves all agents and no canary runs: nothing to roll back")
        return
    if model.status != ARCHIVED or model.deployedAt is None:
        raise DeploymentRefused(f"{to} is {model.status} and never served all agents: only a version that served "
                                f"before can be brought back (deploy a candidate as a canary instead)")


def _previous(conn: sa.Connection, current: Deployment) -> str | None:
    if current.in_service is None:
        raise DeploymentRefused("nothing to roll back to: the base serves all agents and no canary runs")
    replaced = conn.execute(sa.select(H.c.from_version).where(H.c.action == "promote",
                                                               H.c.version == current.in_service)
                            .order_by(H.c.id.desc()).limit(1)).first()
    if replaced is None:
        raise DeploymentRefused(f"nothing known to roll back to: {current.in_service} was not promoted by this "
                                f"pipeline; name a version that served before with --to")
    return replaced.from_version


def _running_canary(current: Deployment, what: str) -> str:
    if current.canary is None:
        raise DeploymentRefused(f"no canary is running: nothing to {what}")
    return current.canary


def _without_canary(current: Deployment, *, in_service: str | None, moment: datetime) -> Deployment:
    return Deployment(in_service=in_service, canary=None, canary_fraction=0.0, stage=0, salt="",
                      canary_started_at=None, changed_at=moment)


def _legacy_deployment(conn: sa.Connection) -> Deployment:
    return Deployment(legacy_pick(conn), None, 0.0, 0, "", None, None)


def _from_row(row: sa.Row) -> Deployment:
    return Deployment(row.in_service, row.canary, float(row.canary_fraction), int(row.stage), row.salt,
                      row.canary_started_at, row.changed_at)


def check_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction) \
            or not 0 < fraction <= 1:
        raise DeploymentRefused(f"a canary fraction is a share of agents in (0, 1], not {fraction!r}")


def _moment(now: datetime | None) -> datetime:
    """Naive UTC to the millisecond, as the app's `TIMESTAMP(3)` keeps it: what is returned is what is stored."""
    moment = to_utc_naive(now or datetime.now(UTC))
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
