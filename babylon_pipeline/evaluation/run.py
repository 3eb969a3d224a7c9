"""The paired evaluation: every scenario of the suite played by the candidate, the champion and the base.

The champion is the version in service (the base when none serves). A policy that is the same model
as another (champion = base, or the candidate re-evaluated while in service) plays once and its
plays count for both roles: with the same seed it would play the same game. Before each policy plays
the suite the policy source is reseeded with the suite's first seed; a local model answers every
scenario's tick in one batch in seed order (`play_suite`), so every policy meets the same scenarios
with the same random draws and the per-scenario differences are paired.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from babylon_pipeline.evaluation.compare import (
    NO_DIFFERENCE,
    STATISTIC,
    WORSE,
    BootstrapSettings,
    Guardrail,
    GuardrailMargins,
    Interval,
    guardrails,
    paired_bootstrap,
)
from babylon_pipeline.evaluation.play import Play, play_suite
from babylon_pipeline.evaluation.policies import PolicySource
from babylon_pipeline.evaluation.suite import SuiteDefinition

CANDIDATE, CHAMPION, BASE = "candidate", "champion", "base"
ROLES = (CANDIDATE, CHAMPION, BASE)


@dataclass(frozen=True)
class PolicyFigures:
    """One policy over the whole suite: rewards and P&L are means over scenarios, shares over all steps."""

    version: str | None  # None: the base
    scenarios: int
    trajectories: int
    steps: int
    reward: float
    window_pnl: float
    valid_share: float
    grounded_share: float
    trade_share: float
    rejected_trade_share: float
    hold_share: float
    failed_share: float
    tokens: int
    seconds: float

    @classmethod
    def of(cls, version: str | None, plays: Sequence[Play]) -> PolicyFigures:
        steps = sum(p.steps for p in plays)
        return cls(
            version=version, scenarios=len(plays), trajectories=sum(p.trajectories for p in plays), steps=steps,
            reward=math.fsum(p.reward for p in plays) / len(plays),
            window_pnl=math.fsum(p.window_pnl for p in plays) / len(plays),
            valid_share=sum(p.valid for p in plays) / steps, grounded_share=sum(p.grounded for p in plays) / steps,
            trade_share=sum(p.trades for p in plays) / steps,
            rejected_trade_share=sum(p.rejected_trades for p in plays) / steps,
            hold_share=sum(p.holds for p in plays) / steps,
            failed_share=sum(p.failed for p in plays) / steps, tokens=sum(p.tokens for p in plays),
            seconds=math.fsum(p.seconds for p in plays),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    version: str
    champion: str | None
    suite: SuiteDefinition
    suite_hash: str
    plays: dict[str, list[Play]]  # by role, in the suite's scenario order
    figures: dict[str, PolicyFigures]  # by role
    interval: Interval
    guardrails: list[Guardrail]
    bootstrap: BootstrapSettings
    seconds: float

    @property
    def verdict(self) -> str:
        return self.interval.verdict

    @property
    def guardrails_passed(self) -> bool:
        return all(g.passed for g in self.guardrails)

    @property
    def passed(self) -> bool:
        """What `not_worse_than_service` checks: not `worse`, and every guardrail held."""
        return self.verdict != WORSE and self.guardrails_passed


def run_evaluation(suite: SuiteDefinition, suite_hash: str, source: PolicySource, version: str, champion: str | None,
                   *, bootstrap: BootstrapSettings = BootstrapSettings(),
                   margins: GuardrailMargins = GuardrailMargins(), work_dir: Path | None = None,
                   progress: Callable[[str], object] = lambda message: None) -> Evaluation:
    began = time.perf_counter()
    versions = {CANDIDATE: version, CHAMPION: champion, BASE: None}
    distinct = list(dict.fromkeys(versions.values()))
    policies = {v: source.policy(v) for v in distinct}
    plays: dict[str | None, list[Play]] = {}
    for v in distinct:
        source.reseed(suite.first_seed)
        played = time.perf_counter()
        plays[v] = play_suite(policies[v], suite, work_dir)
        progress(f"{v or BASE} played {suite.scenarios} scenarios in {time.perf_counter() - played:.1f} s")
    for i, seed in enumerate(suite.seeds):
        rewards = ", ".join(f"{role} {plays[v][i].reward:+.3f}" for role, v in versions.items())
        progress(f"scenario {i + 1}/{suite.scenarios} (seed {seed}): reward {rewards}")
    by_role = {role: plays[v] for role, v in versions.items()}
    figures = {role: PolicyFigures.of(versions[role], by_role[role]) for role in ROLES}
    differences = [c.reward - s.reward for c, s in zip(by_role[CANDIDATE], by_role[CHAMPION], strict=True)]
    cand, champ = figures[CANDIDATE], figures[CHAMPION]
    return Evaluation(
        version=version, champion=champion, suite=suite, suite_hash=suite_hash, plays=by_role, figures=figures,
        interval=paired_bootstrap(differences, bootstrap),
        guardrails=guardrails(cand.valid_share, champ.valid_share, cand.failed_share, champ.failed_share, margins),
        bootstrap=bootstrap, seconds=time.perf_counter() - began,
    )


def eval_metrics(evaluation: Evaluation) -> dict[str, Any]:
    """`trained_models.evalMetrics`: what deploy reads (`verdict`, `guardrails_passed`) and the figures behind it."""
    e = evaluation
    return {
        "verdict": e.verdict,
        "guardrails_passed": e.guardrails_passed,
        "diff_mean": e.interval.mean,
        "diff_low": e.interval.low,
        "diff_high": e.interval.high,
        "confidence": e.interval.confidence,
        "statistic": STATISTIC,
        "champion": e.champion or BASE,
        "suite": e.suite.name,
        "suite_hash": e.suite_hash,
        "scenarios": e.suite.scenarios,
        "guardrails": {g.name: g.as_dict() for g in e.guardrails},
        "policies": {role: f.as_dict() for role, f in e.figures.items()},
    }


def report(evaluation: Evaluation) -> dict[str, Any]:
    """`evaluations/{version}/report.json`: the summary and one row per scenario and role."""
    e = evaluation
    rows = [{"role": role, "version": e.figures[role].version or BASE, **play.as_dict()}
            for role in ROLES for play in e.plays[role]]
    return {
        "version": e.version,
        "summary": eval_metrics(e),
        "suite": {"definition": e.suite.as_dict(), "hash": e.suite_hash},
        "bootstrap": asdict(e.bootstrap),
        "seconds": e.seconds,
        "scenarios": rows,
    }


FIGURES = ("reward", "window_pnl", "valid_share", "grounded_share", "trade_share", "rejected_trade_share",
           "hold_share", "failed_share", "tokens")


def metadata(evaluation: Evaluation) -> dict[str, float | int | str | bool]:
    """Numeric figures under stable names (the UI plots them across versions), and the verdict."""
    e = evaluation
    values: dict[str, float | int | str | bool] = {
        "verdict": e.verdict, "guardrails_passed": e.guardrails_passed, "champion": e.champion or BASE,
        "diff_mean": e.interval.mean, "diff_low": e.interval.low, "diff_high": e.interval.high,
        "verdict_score": {WORSE: -1, NO_DIFFERENCE: 0}.get(e.verdict, 1), "scenarios": e.suite.scenarios,
        "suite_hash": e.suite_hash[:12], "seconds": round(e.seconds, 2),
    }
    for role, f in e.figures.items():
        values |= {f"{role}_{name}": getattr(f, name) for name in FIGURES}
    return values


def comparison_table(evaluation: Evaluation) -> str:
    """A markdown table: one row per figure, one column per role, and candidate − champion."""
    import pandas as pd

    e = evaluation
    table = pd.DataFrame({f"{role} ({e.figures[role].version or BASE})": [getattr(e.figures[role], n) for n in FIGURES]
                          for role in ROLES}, index=list(FIGURES))
    table["candidate − champion"] = [getattr(e.figures[CANDIDATE], n) - getattr(e.figures[CHAMPION], n)
                                     for n in FIGURES]
    return table.to_markdown(floatfmt=".4f")
