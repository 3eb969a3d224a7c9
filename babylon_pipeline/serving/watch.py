"""The regression watch's decision for a running canary: hold, next stage, promote, roll back, or starved.

Pure: from the deployment, the canary's and the control's statistics summed over the windows since
the canary started (`serving.arms`), the configuration and the time. Each decision carries the line
that explains it, e.g. "canary v1.2.0 at 10 %: 41/200 trajectories (control v1.1.0: 380), diff +0.03
[-0.05, +0.11]; hold: 41/200 canary trajectories".

Order of the rules, and why:
1. Roll back on a significant regression of the outcome reward (the always-valid interval of canary −
   control lies below 0, `serving.sequential`) or a guardrail breach (failed-action share or error rate
   significantly higher on the canary *and* higher by more than its margin). Checked first and always:
   rollback does not wait for enough data for promotion, for the stage's duration, or for a person
   (`BABYLON_DEPLOY_APPROVAL=manual` gates promotion only). The three tests share alpha (alpha/3 each),
   so a good canary is rolled back by chance at most with probability alpha over its whole life.
2. Below the minimum trajectories in either arm: hold, or `starved` once the canary has run longer than
   the starvation timeout (an alert instead of waiting forever: a canary that gets no traffic).
3. Before the minimum duration of the stage (since the last change): hold.
4. Otherwise the next stage (the first configured fraction above the current one), or promotion when
   that is 100 %; with manual approval, a hold saying it waits for a person.
Promotion does not need the canary to be significantly better: no worse, with enough data, is enough.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from babylon_pipeline.serving.arms import BASE_ARM, ArmStats, WindowArms
from babylon_pipeline.serving.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_EFFECT_SCALE,
    DEFAULT_MIN_N,
    Moments,
    SequentialResult,
    Verdict,
    compare,
)
from babylon_pipeline.windows import to_utc_naive, window_of, windows_between

if TYPE_CHECKING:
    from babylon_pipeline.serving.state import Deployment

APPROVAL_ENV = "BABYLON_DEPLOY_APPROVAL"
TESTS = 3  # outcome reward, failed-action share, error rate: alpha is split between them


class Action(StrEnum):
    HOLD = "hold"
    NEXT_STAGE = "next_stage"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    STARVED = "starved"


@dataclass(frozen=True)
class WatchConfig:
    """Read from `BABYLON_CANARY_*` (and `BABYLON_DEPLOY_APPROVAL`) at every tick; empty = default."""

    stages: tuple[float, ...] = (0.1, 0.5, 1.0)
    """BABYLON_CANARY_STAGES: increasing shares of agents, comma-separated, the last 1 (promotion)."""
    min_trajectories: int = 200
    """BABYLON_CANARY_MIN_TRAJECTORIES: per arm since the canary started, before any promotion."""
    min_stage_minutes: float = 60.0
    """BABYLON_CANARY_MIN_STAGE_MINUTES: at a stage before the next (at least one whole window)."""
    failed_action_margin: float = 0.05
    """BABYLON_CANARY_FAILED_ACTION_MARGIN: the canary's failed-action share may exceed the control's by this."""
    error_rate_margin: float = 0.02
    """BABYLON_CANARY_ERROR_RATE_MARGIN: the canary's share of errored trajectories may exceed the control's by this."""
    starvation_minutes: float = 180.0
    """BABYLON_CANARY_STARVATION_MINUTES: a canary still short of data after this long is reported starved."""
    alpha: float = DEFAULT_ALPHA
    """BABYLON_CANARY_ALPHA: chance of rolling back a canary that is no worse, over its whole life."""
    effect_scale: float = DEFAULT_EFFECT_SCALE
    """BABYLON_CANARY_EFFECT_SCALE: reward difference worth detecting (the mSPRT's mixing scale)."""
    manual_approval: bool = False
    """BABYLON_DEPLOY_APPROVAL=manual: stages and promotion wait for a person; rollback never does."""

    def __post_init__(self) -> None:
        stages = self.stages
        problems = {
            "STAGES": (bool(stages) and all(a < b for a, b in zip((0.0, *stages), stages)) and stages[-1] == 1.0,
                       "increasing shares in (0, 1] ending at 1"),
            "MIN_TRAJECTORIES": (self.min_trajectories >= DEFAULT_MIN_N, f"a whole number >= {DEFAULT_MIN_N}"),
            "MIN_STAGE_MINUTES": (self.min_stage_minutes >= 0, "a number >= 0"),
            "FAILED_ACTION_MARGIN": (0 <= self.failed_action_margin < 1, "a number from 0 to 1"),
            "ERROR_RATE_MARGIN": (0 <= self.error_rate_margin < 1, "a number from 0 to 1"),
            "STARVATION_MINUTES": (self.starvation_minutes > 0, "a number > 0"),
            "ALPHA": (0 < self.alpha < 1, "a number between 0 and 1"),
            "EFFECT_SCALE": (self.effect_scale > 0, "a number > 0"),
        }
        for name, (valid, want) in problems.items():
            if not valid:
                raise ValueError(f"BABYLON_CANARY_{name} must be {want}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> WatchConfig:
        values: dict[str, object] = {}
        kinds = {"min_trajectories": int, "min_stage_minutes": float, "failed_action_margin": float,
                 "error_rate_margin": float, "starvation_minutes": float, "alpha": float, "effect_scale": float}
        for name, kind in kinds.items():
            if text := environ.get(f"BABYLON_CANARY_{name.upper()}", "").strip():
                try:
                    values[name] = kind(text)
                except ValueError:
                    raise ValueError(f"BABYLON_CANARY_{name.upper()} must be a number, got {text!r}") from None
        if text := environ.get("BABYLON_CANARY_STAGES", "").strip():
            try:
                values["stages"] = tuple(float(part) for part in text.split(","))
            except ValueError:
                raise ValueError(f"BABYLON_CANARY_STAGES must be numbers separated by commas, got {text!r}") from None
        return cls(**values, manual_approval=manual_approval(environ))  # type: ignore[arg-type]


def manual_approval(environ: Mapping[str, str] = os.environ) -> bool:
    """`BABYLON_DEPLOY_APPROVAL`: `manual` (a person starts canaries and approves stages) or `auto` (default)."""
    approval = environ.get(APPROVAL_ENV, "").strip().lower()
    if approval not in ("", "auto", "manual"):
        raise ValueError(f"{APPROVAL_ENV} must be auto or manual, got {approval!r}")
    return approval == "manual"


@dataclass(frozen=True)
class Decision:
    action: Action
    explanation: str
    canary: str
    control: str
    fraction: float  # the canary's share now
    next_fraction: float | None = None  # NEXT_STAGE: the share to set
    reward: SequentialResult | None = None
    canary_stats: ArmStats = field(default_factory=ArmStats)
    control_stats: ArmStats = field(default_factory=ArmStats)

    def tags(self) -> dict[str, str]:
        """Short string values for run tags and alert fields."""
        tags = {"babylon/watch_action": self.action.value, "babylon/canary": self.canary,
                "babylon/control": self.control, "babylon/canary_fraction": f"{self.fraction:g}",
                "babylon/canary_trajectories": str(self.canary_stats.trajectories),
                "babylon/control_trajectories": str(self.control_stats.trajectories)}
        if self.reward is not None and self.reward.verdict is not Verdict.INSUFFICIENT:
            tags |= {"babylon/reward_diff": f"{self.reward.diff:.4f}",
                     "babylon/reward_diff_low": f"{self.reward.low:.4f}",
                     "babylon/reward_diff_high": f"{self.reward.high:.4f}"}
        return tags


def canary_windows(started_at: datetime, now: datetime) -> list[str]:
    """The windows a canary started at `started_at` has had traffic in, up to the one `now` is in."""
    return list(windows_between(window_of(started_at), window_of(now)))


def decide(deployment: Deployment, arms: WindowArms, config: WatchConfig, now: datetime) -> Decision:
    """What to do with the running canary (raises ValueError when none runs)."""
    if deployment.canary is None:
        raise ValueError("no canary is running")
    canary_name, control_name = deployment.canary, deployment.in_service or BASE_ARM
    canary, control = arms.arm(canary_name), arms.arm(control_name)
    level = config.alpha / TESTS
    reward = compare(canary.reward, control.reward, alpha=level, effect_scale=config.effect_scale)
    now = to_utc_naive(now)
    started = deployment.canary_started_at or deployment.changed_at or now
    stage_since = deployment.changed_at or started
    head = (f"canary {canary_name} at {_percent(deployment.canary_fraction)}: {canary.trajectories}/"
            f"{config.min_trajectories} trajectories (control {control_name}: {control.trajectories}), "
            f"diff {_interval(reward) if min(canary.trajectories, control.trajectories) else 'n/a (an arm has none)'}")

    def decision(action: Action, why: str, next_fraction: float | None = None) -> Decision:
        return Decision(action, f"{head}; {action.value}: {why}", canary_name, control_name,
                        deployment.canary_fraction, next_fraction, reward, canary, control)

    if reward.verdict is Verdict.LOWER:
        return decision(Action.ROLLBACK, f"outcome reward significantly lower (p = {reward.p_value:.2g})")
    breaches = [why for why in (
        _breach("failed-action share", canary.failed_share, control.failed_share, config.failed_action_margin,
                level, config.effect_scale),
        _breach("error rate", canary.error, control.error, config.error_rate_margin, level, config.effect_scale),
    ) if why]
    if breaches:
        return decision(Action.ROLLBACK, "; ".join(breaches))
    if short := [f"{name} {n}/{config.min_trajectories}" for name, n in
                 (("canary", canary.trajectories), ("control", control.trajectories)) if n < config.min_trajectories]:
        running = _minutes(now - started)
        if running >= config.starvation_minutes:
            return decision(Action.STARVED, f"only {', '.join(short)} trajectories after {running:.0f} min "
                                            f"(starvation timeout {config.starvation_minutes:g} min)")
        return decision(Action.HOLD, f"waiting for data: {', '.join(short)} trajectories")
    at_stage = _minutes(now - stage_since)
    if at_stage < config.min_stage_minutes:
        return decision(Action.HOLD, f"{at_stage:.0f}/{config.min_stage_minutes:g} min at this stage")
    target = next((stage for stage in config.stages if stage > deployment.canary_fraction), 1.0)
    action = Action.PROMOTE if target >= 1.0 else Action.NEXT_STAGE
    step = "promotion to all agents" if action is Action.PROMOTE else f"the next stage ({_percent(target)})"
    if config.manual_approval:
        return decision(Action.HOLD, f"ready for {step}: waiting for manual approval ({APPROVAL_ENV}=manual)")
    return decision(action, f"no regression with enough data: {step}", None if action is Action.PROMOTE else target)


def _breach(name: str, canary: Moments, control: Moments, margin: float, alpha: float,
            effect_scale: float) -> str | None:
    """Why the canary breaches this guardrail (significantly higher, and by more than the margin), or None."""
    result = compare(canary, control, alpha=alpha, effect_scale=effect_scale)
    if result.verdict is Verdict.HIGHER and result.diff > margin:
        return (f"{name} {canary.mean:.2f} vs {control.mean:.2f}, diff {_interval(result)} "
                f"above the margin {margin:g}")
    return None


def _interval(result: SequentialResult) -> str:
    if math.isinf(result.low):
        return f"{result.diff:+.2f} (no interval below {DEFAULT_MIN_N} per arm)"
    return result.interval()


def _percent(fraction: float) -> str:
    return f"{fraction * 100:g} %"


def _minutes(span: timedelta) -> float:
    return span.total_seconds() / 60
