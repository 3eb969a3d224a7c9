"""Scenarios played by one policy, each in a throw-away SQLite store, and the figures read back from them.

`play_suite` plays all of a suite's scenarios at once when the policy answers batches (a local
model): each scenario in its own thread and store, their ticks answered together (`lockstep`).

The scenario runs through the simulator and the recorder exactly as training data does, then is read
with the window reader and scored with the outcome reward (`rewards.outcomes`, the formula of
`outcome_rewards`): what is measured is what the pipeline would have recorded and rewarded. A fresh
store per play keeps the scenario the same whoever played before (the simulator avoids markets a
window already holds). Per step: valid when the simulator's parser reads an action from the answer,
grounded when that action names at least one market, ticker or post and only ones the observation
showed (`model.valid_actions`; a HOLD or a post is not grounded), a trade when it buys, sells, opens or
closes (`store.recorder.TRADE_ACTIONS`), a rejected trade when the game refused that trade, a hold when
it is HOLD, failed when the game rejected the step's action (or the policy did not answer). Valid and
grounded alone do not tell a policy that only holds from one that trades: the trade figures do.
"""

from __future__ import annotations

import math
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.evaluation.lockstep import LockstepBatcher
from babylon_pipeline.evaluation.suite import SuiteDefinition
from babylon_pipeline.rewards import score_outcomes
from babylon_pipeline.sim import simulate
from babylon_pipeline.sim.actions import ParsedAction, parse_response
from babylon_pipeline.sim.policy import BatchPolicy, Policy
from babylon_pipeline.store import tables
from babylon_pipeline.store.outcomes import read_outcomes_since
from babylon_pipeline.store.reader import read_window
from babylon_pipeline.store.recorder import TRADE_ACTIONS
from babylon_pipeline.store.records import Trajectory


@dataclass(frozen=True)
class Play:
    """One policy's figures on one scenario; rewards and P&L are means over the scenario's agents."""

    seed: int
    trajectories: int
    reward: float
    window_pnl: float
    steps: int
    valid: int
    grounded: int
    trades: int
    rejected_trades: int
    holds: int
    failed: int
    tokens: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def play_suite(policy: Policy, suite: SuiteDefinition, work_dir: Path | None = None) -> list[Play]:
    """Every scenario of `suite`, in seed order."""
    if not isinstance(policy, BatchPolicy):
        return [play_scenario(policy, suite, seed, work_dir) for seed in suite.seeds]
    batcher = LockstepBatcher(policy, suite.scenarios)

    def play(seat: int, seed: int) -> Play:
        try:
            return play_scenario(batcher.seat(seat), suite, seed, work_dir)
        finally:
            batcher.leave(seat)

    with ThreadPoolExecutor(max_workers=suite.scenarios, thread_name_prefix="babylon-eval") as pool:
        return list(pool.map(play, range(suite.scenarios), suite.seeds))


def play_scenario(policy: Policy, suite: SuiteDefinition, seed: int, work_dir: Path | None = None) -> Play:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="babylon-eval-", dir=work_dir) as scratch:
        engine = _scratch_engine(Path(scratch) / "play.db")
        try:
            tables.metadata.create_all(engine)
            simulate(engine, hours=1, agents=suite.agents, seed=seed, start=suite.start, steps_per_window=suite.ticks,
                     policy_for=lambda agent: policy, evaluation=True)
            trajectories = _trajectories(engine, suite.window)
            scored = score_outcomes(trajectories, read_outcomes_since(engine, suite.window))
        finally:
            engine.dispose()
    return _figures(seed, trajectories, [r.reward for r in scored.rewards], time.perf_counter() - began)


def _scratch_engine(path: Path) -> sa.Engine:
    """A SQLite store that need not survive a crash: no syncing to disk (creating the tables synced 30 times)."""
    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _unsynced(connection, _record) -> None:
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA journal_mode = MEMORY")

    return engine


def _trajectories(engine: sa.Engine, window: str) -> list[Trajectory]:
    rows = list(read_window(engine, window))
    if refused := [r for r in rows if not isinstance(r, Trajectory)]:
        raise RuntimeError(f"the simulator wrote {len(refused)} rows the reader quarantines, e.g. {refused[0].detail}")
    return rows  # type: ignore[return-value]


def _figures(seed: int, trajectories: list[Trajectory], rewards: list[float], seconds: float) -> Play:
    from babylon_pipeline.model.valid_actions import is_grounded  # torch: imported when a scenario is played

    steps = valid = grounded = trades = rejected_trades = holds = failed = tokens = 0
    for trajectory in trajectories:
        for step in trajectory.steps:
            steps += 1
            rejected = step.action is None or not step.action.success
            failed += rejected
            if not step.llm_calls:  # the policy did not answer: nothing valid
                continue
            call = step.llm_calls[0]
            tokens += call.completion_tokens or 0
            parsed = parse_response(call.response)
            if isinstance(parsed, ParsedAction):
                valid += 1
                grounded += is_grounded(parsed, call.user_prompt)
                trade = parsed.action_type in TRADE_ACTIONS
                trades += trade
                rejected_trades += trade and rejected
                holds += parsed.action_type == "HOLD"
    count = len(trajectories)
    return Play(seed=seed, trajectories=count, reward=math.fsum(rewards) / count,
                window_pnl=math.fsum(t.window_pnl for t in trajectories) / count, steps=steps, valid=valid,
                grounded=grounded, trades=trades, rejected_trades=rejected_trades, holds=holds, failed=failed,
                tokens=tokens, seconds=seconds)
