"""A small, hand-made window: scenarios of agents that trade markets, with known outcomes.

Recorded through the recorder SDK (as a Python agent would), so the window assets have real rows
to read, independent of the simulator.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.recorder import TrajectoryRecorder
from babylon_pipeline.windows import window_start


def record_window(
    engine: sa.Engine, window_id: str, *, scenarios: int = 2, agents: int = 4, pending_market: bool = False
) -> list[str]:
    """Agents bet YES or NO on `m-<scenario>` (which resolves YES) with different stakes and P&L."""
    start = window_start(window_id)
    ticks = itertools.count()
    recorder = TrajectoryRecorder(engine, clock=lambda: start + timedelta(seconds=next(ticks)))
    ids = []
    for s in range(scenarios):
        scenario = f"{window_id}:s{s}"
        for a in range(agents):
            side = "YES" if a % 2 == 0 else "NO"
            market = "m-late" if pending_market and a == 0 else f"m-{s}"
            with recorder.trajectory(f"agent-{a}", scenario_id=scenario, metadata={"persona": f"p{a}"}) as t:
                for n in range(3):
                    t.start_step({"agentBalance": 1000.0 - 10 * n, "agentPnL": float(a * n * (1 if side == "YES" else -1))})
                    t.log_llm_call(
                        model="tiny", system_prompt="You are a Babylon trader.", user_prompt=f"{scenario} tick {n}",
                        response=f'Buying {side}. {{"action": "BUY_SHARES", "marketId": "{market}", "side": "{side}", "amount": {10 + a}}}',
                        temperature=1.0, max_tokens=64,
                    )
                    t.complete_step(
                        {"actionType": "BUY_SHARES", "parameters": {"marketId": market, "side": side, "amount": 10 + a},
                         "success": True},
                        reward=0.1 * a,
                    )
            ids.append(t.trajectory_id)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tables.market_outcomes),
            [{"id": f"{window_id}-m-{s}", "windowId": window_id, "predictionMarketId": f"m-{s}", "question": "?",
              "outcome": "YES", "finalProbability": 0.8, "volume": 100.0} for s in range(scenarios)],
        )
    return ids


def add_malformed_rows(engine: sa.Engine, window_id: str, count: int) -> None:
    if not count:
        return
    moment = window_start(window_id) + timedelta(minutes=30)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tables.trajectories),
            [{"id": f"bad-{window_id}-{i}", "trajectoryId": f"bad-{window_id}-{i}", "agentId": "broken",
              "startTime": moment, "endTime": moment, "durationMs": 0, "windowId": window_id,
              "stepsJson": "[{not json", "rewardComponentsJson": "{}", "metricsJson": "{}",
              "metadataJson": json.dumps({}), "totalReward": 0.0, "episodeLength": 0, "finalStatus": "error",
              "updatedAt": moment} for i in range(count)],
        )


def resolve_market(engine: sa.Engine, window_id: str, market: str, outcome: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.market_outcomes).values(
            id=f"{window_id}-{market}", windowId=window_id, predictionMarketId=market, question="?",
            outcome=outcome, finalProbability=1.0, volume=5.0, createdAt=datetime(2026, 1, 1),
        ))
