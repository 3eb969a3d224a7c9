"""What a window holds: the figures behind `babylon windows` and `babylon window-report`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.reader import QuarantinedRow, read_window, window_membership
from babylon_pipeline.store.records import Trajectory
from babylon_pipeline.windows import is_window_id, window_of

T = tables.trajectories


@dataclass
class WindowReport:
    window: str
    trajectories: int = 0
    valid: int = 0
    quarantined_by_reason: Counter[str] = field(default_factory=Counter)
    agents: set[str] = field(default_factory=set)
    scenarios: set[str] = field(default_factory=set)
    steps: int = 0
    steps_with_llm_calls: int = 0
    llm_calls: int = 0
    derived_window_ids: int = 0
    missing_scenario: int = 0
    reward_sum: float = 0.0
    reward_min: float | None = None
    reward_max: float | None = None

    def add(self, item: Trajectory | QuarantinedRow) -> None:
        self.trajectories += 1
        if isinstance(item, QuarantinedRow):
            self.quarantined_by_reason[item.reason.value] += 1
            return
        self.valid += 1
        self.agents.add(item.agent_id)
        self.scenarios.add(item.group_key)
        self.steps += len(item.steps)
        self.steps_with_llm_calls += item.steps_with_llm_calls
        self.llm_calls += item.llm_call_count
        self.derived_window_ids += item.window_id_derived
        self.missing_scenario += item.scenario_id is None
        reward = item.total_reward
        self.reward_sum += reward
        self.reward_min = reward if self.reward_min is None else min(self.reward_min, reward)
        self.reward_max = reward if self.reward_max is None else max(self.reward_max, reward)

    @property
    def quarantined(self) -> int:
        return sum(self.quarantined_by_reason.values())

    @property
    def data_quality(self) -> float:
        """Share of the window's rows that are usable; an empty window has nothing wrong with it."""
        return self.valid / self.trajectories if self.trajectories else 1.0

    @property
    def llm_exchange_fraction(self) -> float:
        return self.steps_with_llm_calls / self.steps if self.steps else 0.0

    @property
    def reward_mean(self) -> float | None:
        return self.reward_sum / self.valid if self.valid else None

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "window": self.window,
            "trajectories": self.trajectories,
            "valid": self.valid,
            "quarantined": {"count": self.quarantined, "by_reason": dict(sorted(self.quarantined_by_reason.items()))},
            "agents": len(self.agents),
            "scenarios": len(self.scenarios),
            "steps": self.steps,
            "steps_with_llm_calls": self.steps_with_llm_calls,
            "llm_calls": self.llm_calls,
            "window_ids_derived_from_start_time": self.derived_window_ids,
            "trajectories_without_scenario": self.missing_scenario,
        }


def window_report(engine: sa.Engine, window_id: str) -> WindowReport:
    report = WindowReport(window_id)
    for item in read_window(engine, window_id):
        report.add(item)
    return report


@dataclass(frozen=True)
class WindowIndex:
    windows: list[str]
    malformed_window_ids: dict[str, int]  # stored windowIds no window can claim, with their row counts


def window_has_rows(engine: sa.Engine, window_id: str) -> bool:
    """Whether any trajectory belongs to the window (one indexed lookup)."""
    with engine.connect() as conn:
        first = sa.select(T.c.id).where(window_membership(window_id, engine.dialect.name)).limit(1)
        return conn.execute(first).first() is not None


def window_index(engine: sa.Engine, since: str | None = None) -> WindowIndex:
    """Every window that has rows: stored window ids, and the hours of rows stored without one."""
    found: set[str] = set()
    malformed: dict[str, int] = {}
    with engine.connect() as conn:
        stored = sa.select(T.c.windowId, sa.func.count()).where(T.c.windowId.is_not(None)).group_by(T.c.windowId)
        for window_id, count in conn.execute(stored):
            if is_window_id(window_id):
                found.add(window_id)
            else:
                malformed[window_id] = count
        unassigned = sa.select(T.c.startTime).where(T.c.windowId.is_(None)).execution_options(yield_per=10_000)
        found.update(window_of(moment) for moment in conn.scalars(unassigned))
    return WindowIndex(sorted(w for w in found if since is None or w >= since), malformed)
