"""Windows recorded by agents served by different model versions, for the regression watch's tests.

Each arm (a version, or None for the base) has a behaviour: the share of its trajectories that bet
on the side the market resolves to, the share that fail their actions, the share that end in error.
Recorded through the recorder SDK with each call's `modelVersion`, then turned into window files by
the real window assets, so the watch reads what production would write.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import dagster as dg
import sqlalchemy as sa

from babylon_pipeline.assets.windows import outcome_rewards, window_trajectories
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.store import tables
from babylon_pipeline.store.recorder import TrajectoryRecorder
from babylon_pipeline.windows import window_start


@dataclass(frozen=True)
class Behaviour:
    trajectories: int
    right: float = 0.7  # share of trajectories betting on the outcome
    failed: float = 0.0  # share of trajectories whose actions all fail
    errored: float = 0.0  # share of trajectories that end with status `error`


def record_arms(engine: sa.Engine, window_id: str, arms: Mapping[str | None, Behaviour], *, seed: int = 0) -> None:
    """One scenario per window; market `m-{window}` resolves YES. Steps call the arm's version."""
    start = window_start(window_id)
    ticks = itertools.count()
    recorder = TrajectoryRecorder(engine, clock=lambda: start + timedelta(milliseconds=10 * next(ticks)))
    market = f"m-{window_id}"
    for version, behaviour in arms.items():
        rng = random.Random(f"{version}:{seed}")  # not the window: tests record whatever hour it is now
        for i in range(behaviour.trajectories):
            side = "YES" if rng.random() < behaviour.right else "NO"
            failing = rng.random() < behaviour.failed
            status = "error" if rng.random() < behaviour.errored else "completed"
            with recorder.trajectory(f"agent-{version}-{i}", scenario_id=window_id) as t:
                for n in range(2):
                    t.start_step({"agentBalance": 1000.0, "agentPnL": 0.0})
                    t.log_llm_call(model="babylon-agent", model_version=version, system_prompt="trade",
                                   user_prompt=f"tick {n}", response=side, temperature=1.0, max_tokens=16)
                    t.complete_step({"actionType": "BUY_SHARES", "success": not failing,
                                     "parameters": {"marketId": market, "side": side, "amount": 10}}, reward=0.0)
                t.finish(final_status=status)
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.market_outcomes).values(
            id=market, windowId=window_id, predictionMarketId=market, question="?", outcome="YES",
            finalProbability=0.9, volume=100.0))


def materialize_rewards(resources: Mapping[str, object], window_id: str, instance: dg.DagsterInstance) -> None:
    """window_trajectories → outcome_rewards for the window: what writes its `arms.json`."""
    result = dg.materialize([window_trajectories, outcome_rewards], partition_key=partition_key_of(window_id),
                            resources=dict(resources), instance=instance)
    assert result.success
