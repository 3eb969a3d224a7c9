"""Per-window, per-model-version statistics: what the regression watch reads instead of trajectories.

A trajectory belongs to the arm of the model version that answered it, as its LLM calls recorded it
(`modelVersion`), not as routing would assign its agent now: the fraction changes at every stage and
an agent's calls may have been answered before the change. Calls recorded without a version were
answered by the base (`BASE_ARM`, the control while no trained version serves). A trajectory that
cannot be told (no call recorded, e.g. every step failed before the model answered; or calls from
two versions, a stage change mid-trajectory) is counted, not attributed.

Per arm the window keeps sums, so windows add up and the sequential test takes them as they are:
outcome reward (n, Σ, Σ²), the failed-action share per trajectory (Σ, Σ²; trajectories are the
units, as actions of one trajectory fail together), actions, failed actions, and errored
trajectories (final status `error` or `timeout`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from math import fsum
from typing import Any, NamedTuple

from babylon_pipeline.rewards.outcomes import OutcomeReward
from babylon_pipeline.serving.sequential import Moments
from babylon_pipeline.storage.keys import BASE_MODEL
from babylon_pipeline.store.records import TradeRecord

BASE_ARM = BASE_MODEL  # "base": the arm of calls recorded without a version
ERROR_STATUSES = frozenset({"error", "timeout"})


@dataclass(frozen=True)
class ArmStats:
    trajectories: int = 0
    reward_sum: float = 0.0
    reward_sum_sq: float = 0.0
    actions: int = 0
    failed_actions: int = 0
    failed_share_sum: float = 0.0
    failed_share_sum_sq: float = 0.0
    errors: int = 0

    def __add__(self, other: ArmStats) -> ArmStats:
        return ArmStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def reward(self) -> Moments:
        return Moments(self.trajectories, self.reward_sum, self.reward_sum_sq)

    @property
    def failed_share(self) -> Moments:
        return Moments(self.trajectories, self.failed_share_sum, self.failed_share_sum_sq)

    @property
    def error(self) -> Moments:
        return Moments(self.trajectories, float(self.errors), float(self.errors))


@dataclass(frozen=True)
class WindowArms:
    """The arms of one window (or of several, added up)."""

    arms: dict[str, ArmStats] = field(default_factory=dict)
    unattributed: int = 0  # no LLM call recorded
    mixed: int = 0  # calls answered by more than one version

    def __add__(self, other: WindowArms) -> WindowArms:
        arms = dict(self.arms)
        for name, stats in other.arms.items():
            arms[name] = arms.get(name, ArmStats()) + stats
        return WindowArms(arms, self.unattributed + other.unattributed, self.mixed + other.mixed)

    def arm(self, name: str) -> ArmStats:
        return self.arms.get(name, ArmStats())

    def to_json_dict(self) -> dict[str, Any]:
        return {"arms": {name: asdict(stats) for name, stats in sorted(self.arms.items())},
                "unattributed": self.unattributed, "mixed": self.mixed}

    @classmethod
    def from_json_dict(cls, document: Mapping[str, Any]) -> WindowArms:
        return cls({name: ArmStats(**stats) for name, stats in document["arms"].items()},
                   document["unattributed"], document["mixed"])


def arm_of(model_versions: Sequence[str | None]) -> str | None:
    """The arm of a trajectory whose calls recorded these versions; None when it cannot be told."""
    if len(model_versions) != 1:
        return None
    return model_versions[0] or BASE_ARM


def total(windows: Iterable[WindowArms]) -> WindowArms:
    return sum(windows, WindowArms())


class ArmFacts(NamedTuple):
    """What the arms need of one trade record: kept per trajectory while the window's records stream
    through scoring, where keeping the records themselves held the whole window in memory."""

    arm: str | None
    mixed: bool  # calls answered by more than one version
    actions: int
    errored: bool

    @classmethod
    def of(cls, trade: TradeRecord) -> ArmFacts:
        versions = trade.model_versions
        return cls(arm_of(versions), len(versions) > 1, len(trade.actions), trade.final_status in ERROR_STATUSES)


def window_arms(facts: Sequence[ArmFacts], rewards: Sequence[OutcomeReward]) -> WindowArms:
    """The arms of one window, from its trades' facts and their outcome rewards (in the same order)."""
    if len(facts) != len(rewards):
        raise ValueError(f"{len(facts)} trades but {len(rewards)} rewards")
    rows: dict[str, list[tuple[ArmFacts, OutcomeReward]]] = {}
    unattributed = mixed = 0
    for fact, reward in zip(facts, rewards):
        if fact.arm is None:
            mixed += fact.mixed
            unattributed += not fact.mixed
        else:
            rows.setdefault(fact.arm, []).append((fact, reward))
    return WindowArms({arm: _arm_stats(rows[arm]) for arm in sorted(rows)}, unattributed=unattributed, mixed=mixed)


def _arm_stats(rows: Sequence[tuple[ArmFacts, OutcomeReward]]) -> ArmStats:
    rewards = [reward.reward for _, reward in rows]
    shares = [reward.failed_actions / fact.actions if fact.actions > 0 else 0.0 for fact, reward in rows]
    return ArmStats(
        trajectories=len(rows),
        reward_sum=fsum(rewards),
        reward_sum_sq=fsum([r * r for r in rewards]),
        actions=sum(fact.actions for fact, _ in rows),
        failed_actions=sum(reward.failed_actions for _, reward in rows),
        failed_share_sum=fsum(shares),
        failed_share_sum_sq=fsum([s * s for s in shares]),
        errors=sum(fact.errored for fact, _ in rows),
    )
