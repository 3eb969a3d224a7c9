"""Stage 2: outcome rewards for a window's trajectories, from the market outcomes known so far.

Trades on markets that resolve after the window stay pending; `outcome_rewards.json` names those
markets and tickers, so the late-outcome sensor knows when re-scoring the window would change it.
Beside it, in the same publish, `arms.json`: the rewards summed per model version that answered
(`serving.arms`), so the regression watch reads a few numbers per window, not its trajectories.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, fields
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.rewards import RewardWeights, score_outcomes
from babylon_pipeline.rewards.outcomes import OutcomeReward, OutcomeRewards
from babylon_pipeline.serving.arms import ArmFacts, WindowArms, window_arms
from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.store.outcomes import read_outcomes_since
from babylon_pipeline.store.records import TradeRecord
from babylon_pipeline.windowing.collector import collector_paused
from babylon_pipeline.windowing.files import ARMS, OUTCOME_REWARDS, read_window_json, write_window_jsons
from babylon_pipeline.windowing.index import iter_window_trades

_REWARD_FIELDS = tuple(field.name for field in fields(OutcomeReward))


@collector_paused()
def score_window(engine: sa.Engine, store: ObjectStore, window_id: str, weights: RewardWeights) -> OutcomeRewards:
    facts: list[ArmFacts] = []
    trades = _noting_arm_facts(iter_window_trades(store, window_id), facts)
    outcomes = score_outcomes(trades, read_outcomes_since(engine, window_id), weights)
    document = {
        "window": window_id,
        "weights": asdict(weights),
        "summary": outcomes.summary.as_metadata(),
        "pending_markets": sorted({m for r in outcomes.rewards for m in r.pending_markets}),
        "pending_tickers": sorted({t for r in outcomes.rewards for t in r.pending_tickers}),
        "rewards": {r.trajectory_id: _fields_of(r) for r in outcomes.rewards},
    }
    arms = {"window": window_id, **window_arms(facts, outcomes.rewards).to_json_dict()}
    write_window_jsons(store, window_id, {OUTCOME_REWARDS: document, ARMS: arms}, writer="outcome_rewards")
    return outcomes


def _noting_arm_facts(trades: Iterable[TradeRecord], facts: list[ArmFacts]) -> Iterator[TradeRecord]:
    """The trades passed on to scoring one at a time, each one's `ArmFacts` appended to `facts`: one read
    of the window, without holding its records (a list of them tripled the export's peak RSS)."""
    for trade in trades:
        facts.append(ArmFacts.of(trade))
        yield trade


def _fields_of(reward: OutcomeReward) -> dict[str, Any]:
    """`asdict` without its deep copy (a seventh of the time): the document only needs the values."""
    return {name: getattr(reward, name) for name in _REWARD_FIELDS}


def read_outcome_rewards(store: ObjectStore, window_id: str) -> dict[str, Any]:
    return read_window_json(store, window_id, OUTCOME_REWARDS)


def read_window_arms(store: ObjectStore, window_id: str) -> WindowArms:
    """The window's per-version sums; `WindowFileMissing` until `outcome_rewards` has run for it."""
    return WindowArms.from_json_dict(read_window_json(store, window_id, ARMS))
