"""The automatic path from a registered version to a canary: which step comes next, decided on a plain read.

Only the newest candidate registered after the version in service is released: an older candidate was
overtaken by a version trained on more data (a person can still evaluate and deploy it). That version
is evaluated first; an evaluation counts only against the model in service now (`evalMetrics.champion`),
so a version evaluated while another was in service is evaluated again once that changed. A version
judged not worse, with its guardrails kept, starts as a canary unless one is running (it waits for the
canary's promotion or rollback, then is evaluated against the new champion if that changed) or
`BABYLON_DEPLOY_APPROVAL=manual` asks for a person. The deploy job repeats these rules under the
deployment's lock (`serving.deploy.canary_refusal`, `serving.state.start_canary`); this only decides
what to ask for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa

from babylon_pipeline.serving.state import Deployment, eval_summary
from babylon_pipeline.store import tables
from babylon_pipeline.store.registry import CANDIDATE

M = tables.trained_models
BASE = "base"  # `evalMetrics.champion` when the bare base was the model in service


class Step(StrEnum):
    EVALUATE = "evaluate"
    DEPLOY = "deploy"
    WAIT = "wait"


@dataclass(frozen=True)
class Candidate:
    version: str
    created_at: datetime
    verdict: str | None  # None: never evaluated
    champion: str | None  # what it was evaluated against (`base` for the bare base)
    guardrails_passed: bool


@dataclass(frozen=True)
class ReleaseStep:
    step: Step
    explanation: str  # the sensor's skip reason or the run's reason
    version: str | None = None
    champion: str = BASE  # an evaluation's: the model in service it is measured against

    @property
    def run_key(self) -> str | None:
        """One run per version and champion (an evaluation) or per version (a deployment)."""
        if self.step is Step.WAIT or self.version is None:
            return None
        return f"{self.step}:{self.version}" + (f":{self.champion}" if self.step is Step.EVALUATE else "")


def release_candidates(engine: sa.Engine, deployment: Deployment) -> list[Candidate]:
    """Candidates registered after the version in service, newest first."""
    query = sa.select(M.c.version, M.c.createdAt, M.c.evalMetrics).where(M.c.status == CANDIDATE)
    with engine.connect() as conn:
        if deployment.in_service is not None:
            served_at = conn.scalar(sa.select(sa.func.max(M.c.createdAt)).where(M.c.version == deployment.in_service))
            if served_at is not None:
                query = query.where(M.c.createdAt > served_at)
        rows = conn.execute(query.order_by(M.c.createdAt.desc(), M.c.version.desc())).all()
    candidates = []
    for row in rows:
        summary = eval_summary(row.evalMetrics) or {}
        verdict = summary.get("verdict")
        candidates.append(Candidate(row.version, row.createdAt, verdict if isinstance(verdict, str) else None,
                                    summary.get("champion") if isinstance(summary.get("champion"), str) else None,
                                    summary.get("guardrails_passed") is True))
    return candidates


def next_release_step(candidates: Sequence[Candidate], deployment: Deployment, *, manual: bool) -> ReleaseStep:
    """What the automatic path asks for now; `WAIT` explains why nothing."""
    champion = deployment.in_service or BASE
    if not candidates:
        running = f" (canary {deployment.canary} is running)" if deployment.canary else ""
        return ReleaseStep(Step.WAIT, f"no candidate registered after {champion}: nothing to release{running}")
    newest = candidates[0]
    version = newest.version
    if newest.verdict is None or newest.champion != champion:
        again = "" if newest.verdict is None else f" again (its verdict was against {newest.champion})"
        return ReleaseStep(Step.EVALUATE, f"{version} is evaluated against {champion}{again}", version, champion)
    if newest.verdict == "worse" or not newest.guardrails_passed:
        why = "judged worse than" if newest.verdict == "worse" else "breached a guardrail against"
        return ReleaseStep(Step.WAIT, f"{version} {why} {champion}: not deployed; the next trained version is "
                                      "evaluated when it is registered")
    passed = f"{version} passed its evaluation ({newest.verdict} against {champion})"
    if deployment.canary is not None:
        return ReleaseStep(Step.WAIT, f"{passed}; waits for canary {deployment.canary} to be promoted or rolled back")
    if manual:
        return ReleaseStep(Step.WAIT, f"{passed}; BABYLON_DEPLOY_APPROVAL=manual: waiting for a person to start it "
                                      f"(`babylon deploy {version}` or deploy_job)")
    return ReleaseStep(Step.DEPLOY, f"{passed}: started as a canary", version, champion)
