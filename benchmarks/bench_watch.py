"""The regression watch's tick with a canary running over 1,000,000 trajectories: goal < 1 s.

Builds 48 hourly windows since the canary started, 1,000,000 trajectories in all (a 10 % canary
for the first day, 50 % for the second), each window through the real path of `outcome_rewards`:
trade records (with the calls' `modelVersion`) → `score_outcomes` → `window_arms` → `arms.json`
published with the window's manifest in a local object store. The deployment state lives in SQLite
(the embedded profile) or the database given by --database-url. Then it times (median of --runs
after a warm-up):
  - tick: `watch_tick` as the sensor runs it (read the deployment, read and add the 48 summaries,
    decide; with manual approval, so the ready canary is held and every run does the same work);
  - baseline "raw read": only reading the 48 `arms.json` files through their manifests;
  - baseline "groupby": a pandas groupby of the same numbers from the 1,000,000 per-trajectory rows
    already in memory (what the tick would at least pay without the per-window summaries, before
    reading a single trajectory).
It also prints what the summaries add to `outcome_rewards` per window (`window_arms` against
`score_outcomes` of the same window), and applies one tick without manual approval (next stage).

    python benchmarks/bench_watch.py [--trajectories 1000000] [--windows 48] [--runs 7] [--database-url URL]
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from babylon_pipeline.rewards import score_outcomes
from babylon_pipeline.serving.arms import ArmFacts, window_arms
from babylon_pipeline.serving.state import start_canary
from babylon_pipeline.serving.watch import WatchConfig
from babylon_pipeline.serving.embedded import EmbeddedInference
from babylon_pipeline.serving.watcher import read_canary_arms, watch_tick
from babylon_pipeline.storage.factory import open_object_store
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.records import Action, TradeRecord
from babylon_pipeline.windowing.files import ARMS, OUTCOME_REWARDS, write_window_jsons
from babylon_pipeline.windows import WINDOW, window_of

STARTED = datetime(2026, 12, 3, 0, 0)
CANARY, CONTROL = "v1.2.0", "v1.1.0"


def trades_of(window_id: str, count: int, canary_share: float, rng: random.Random) -> list[TradeRecord]:
    """Agents betting on the window's market (resolves YES), canary and control alike (the tick holds)."""
    market = f"m-{window_id}"
    trades = []
    for i in range(count):
        on_canary = rng.random() < canary_share
        right = rng.random() < 0.7
        failed = rng.random() < 0.03
        actions = [Action(action_type="BUY_SHARES", success=not failed,
                          parameters={"marketId": market, "side": "YES" if right else "NO", "amount": 10})]
        trades.append(TradeRecord(trajectory_id=f"{window_id}-{i}", window_id=window_id, window_pnl=rng.uniform(-50, 50),
                                  actions=actions, model_versions=(CANARY if on_canary else CONTROL,),
                                  final_status="error" if rng.random() < 0.01 else "completed"))
    return trades


def build(store, trajectories: int, windows: int) -> tuple[pd.DataFrame, float, float]:
    """Publish every window's summaries; return the per-trajectory rows and the per-window seconds of scoring
    and of the summaries."""
    rng = random.Random(14)
    per_window = trajectories // windows
    rows, scoring, summing = [], [], []
    for w in range(windows):
        window_id = window_of(STARTED + w * WINDOW)
        trades = trades_of(window_id, per_window + (trajectories % windows if w == windows - 1 else 0),
                           0.1 if w < windows // 2 else 0.5, rng)
        began = time.perf_counter()
        outcomes = score_outcomes(trades, [{"windowId": window_id, "predictionMarketId": f"m-{window_id}",
                                            "outcome": "YES"}])
        scored = time.perf_counter()
        arms = window_arms([ArmFacts.of(t) for t in trades], outcomes.rewards)
        scoring.append(scored - began)
        summing.append(time.perf_counter() - scored)
        write_window_jsons(store, window_id, {OUTCOME_REWARDS: {"window": window_id},
                                              ARMS: {"window": window_id, **arms.to_json_dict()}}, writer="bench")
        failed = np.array([r.failed_actions for r in outcomes.rewards], dtype=float)
        rows.append(pd.DataFrame({"arm": [t.model_versions[0] for t in trades],
                                  "reward": [r.reward for r in outcomes.rewards],
                                  "failed_share": failed,  # one action per trajectory
                                  "error": [t.final_status == "error" for t in trades]}))
    return pd.concat(rows, ignore_index=True), statistics.median(scoring), statistics.median(summing)


def deployment(engine: sa.Engine) -> None:
    upgrade(engine)
    with engine.begin() as conn:
        for version, status in ((CONTROL, "deployed"), (CANARY, "candidate")):
            conn.execute(sa.insert(tables.trained_models).values(
                id=f"tm-{version}", modelId=f"babylon-agent-{version}", version=version, baseModel="base",
                status=status, storagePath=f"models/{version}", createdAt=STARTED - timedelta(days=2),
                updatedAt=STARTED, deployedAt=STARTED - timedelta(days=2) if status == "deployed" else None,
                evalMetrics={"verdict": "no_difference", "guardrails_passed": True}))
    start_canary(engine, CANARY, 0.1, actor="bench", reason="benchmark", now=STARTED)


def groupby(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(reward_sq=rows["reward"] ** 2, failed_sq=rows["failed_share"] ** 2)
    return rows.groupby("arm").agg(n=("reward", "size"), reward_sum=("reward", "sum"), reward_sq=("reward_sq", "sum"),
                                   failed_sum=("failed_share", "sum"), failed_sq=("failed_sq", "sum"),
                                   errors=("error", "sum"))


def median_seconds(action: Callable[[], object], runs: int) -> float:
    action()
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        timings.append(time.perf_counter() - began)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trajectories", type=int, default=1_000_000)
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="default: a scratch SQLite file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="babylon-bench-watch-") as tmp:
        engine = make_engine(args.database_url or f"sqlite:///{Path(tmp) / 'babylon.db'}")
        store = open_object_store((Path(tmp) / "objects").as_uri())
        deployment(engine)
        began = time.perf_counter()
        rows, scoring_s, summing_s = build(store, args.trajectories, args.windows)
        print(f"built {len(rows):,} trajectories in {args.windows} windows in {time.perf_counter() - began:.1f} s")
        print(f"per window of {len(rows) // args.windows:,}: score_outcomes {scoring_s * 1000:.0f} ms, "
              f"window_arms {summing_s * 1000:.0f} ms (+{summing_s / scoring_s:.0%} on the scoring)")

        now = STARTED + args.windows * WINDOW + timedelta(minutes=5)
        held = WatchConfig(manual_approval=True)
        inference = EmbeddedInference(store)  # a tick that only holds or raises the stage loads nothing
        tick = watch_tick(engine, store, inference, held, now, print)
        windows = [window_of(STARTED + w * WINDOW) for w in range(args.windows + 1)]
        tick_s = median_seconds(lambda: watch_tick(engine, store, inference, held, now, print), args.runs)
        read_s = median_seconds(lambda: read_canary_arms(store, windows), args.runs)
        group_s = median_seconds(lambda: groupby(rows), args.runs)
        print(f"tick: {tick.summary}")
        print(f"{'tick ms':>9} {'raw read ms':>12} {'groupby ms':>11}  (median of {args.runs})")
        print(f"{tick_s * 1000:>9.1f} {read_s * 1000:>12.1f} {group_s * 1000:>11.1f}")
        print(f"tick / raw read = {tick_s / read_s:.2f}; groupby / tick = {group_s / tick_s:.1f}; goal: tick < 1000 ms")
        applied = watch_tick(engine, store, inference, WatchConfig(), now, print)
        print(f"applied tick: {applied.decision.action.value}, applied={applied.applied}")
        engine.dispose()


if __name__ == "__main__":
    main()
