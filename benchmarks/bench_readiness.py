"""`readiness_snapshot` on a million trajectories: what the readiness sensor pays every tick.

Fills a scratch Postgres database with 1,000,000 trajectory rows (tiny `stepsJson`) over 1,000
hourly windows of 125 scenarios × 8 agents, the way a long-running deployment leaves them: old
windows trained on, recent ones judged but untrained, the newest not judged yet, some evaluation
rows and some without a scenario. Then, for two shapes of the table:
  - steady state: ~10% of the rows are candidates (the last ~100 windows);
  - backlog: every training-data row is a candidate (nothing trained yet),
it times the snapshot (median of several runs after a warm-up) against the baseline of a bare
`count(*)` over the same candidate filter, and prints the Postgres plan of the snapshot's query.

    python benchmarks/bench_readiness.py [--trajectories 1000000] [--runs 7] [--admin-url ...]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import sqlalchemy as sa
from bench_read import ADMIN_URL, scratch_database

from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.training_data import candidate_filter, candidate_windows_query, readiness_snapshot
from babylon_pipeline.windows import window_of

FIRST_HOUR = datetime(2025, 10, 1)
ROWS_PER_WINDOW = 1000
AGENTS_PER_SCENARIO = 8
COLUMNS = ("id", "trajectoryId", "agentId", "startTime", "endTime", "durationMs", "windowId", "scenarioId", "stepsJson",
           "rewardComponentsJson", "metricsJson", "metadataJson", "totalReward", "episodeLength", "finalStatus",
           "aiJudgeReward", "judgedAt", "isTrainingData", "usedInTraining", "trainedInBatch", "updatedAt")
COLUMN_LIST = ", ".join(f'"{c}"' for c in COLUMNS)
STEPS = '[{"stepNumber": 0, "timestamp": 0, "llmCalls": [], "action": {"actionType": "HOLD"}}]'


def fill(engine: sa.Engine, count: int) -> None:
    """COPY the rows in, window by window: the last 10% of windows untrained, the last 1% of them unjudged."""
    rng = random.Random(7)
    windows = max(1, count // ROWS_PER_WINDOW)
    trained_until, judged_until = int(windows * 0.9), int(windows * 0.99)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        buffer = io.StringIO()
        for n in range(count):
            w = min(n // ROWS_PER_WINDOW, windows - 1)
            moment = FIRST_HOUR + timedelta(hours=w, seconds=(n % ROWS_PER_WINDOW) * 3.6)
            window_id = window_of(moment)
            scenario = r"\N" if rng.random() < 0.01 else f"{window_id}:s{(n % ROWS_PER_WINDOW) // AGENTS_PER_SCENARIO}"
            judged = w < judged_until
            values = [f"c{n}", str(10**17 + n), f"agent-{n % AGENTS_PER_SCENARIO}", moment.isoformat(), moment.isoformat(),
                      "1000", window_id, scenario, STEPS, "{}", "{}", "{}", "0", "1", "completed",
                      f"{rng.random():.6f}" if judged else r"\N", (moment + timedelta(hours=1)).isoformat() if judged else r"\N",
                      "f" if rng.random() < 0.02 else "t", "t" if w < trained_until else "f",
                      f"batch-{w // 24}" if w < trained_until else r"\N", moment.isoformat()]
            buffer.write("\t".join(values) + "\n")
            if buffer.tell() > 32_000_000 or n == count - 1:
                buffer.seek(0)
                cursor.copy_expert(f"COPY trajectories ({COLUMN_LIST}) FROM STDIN", buffer)
                buffer = io.StringIO()
        raw.commit()
    finally:
        raw.close()
    analyze(engine)


def analyze(engine: sa.Engine) -> None:
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text("VACUUM ANALYZE trajectories"))


def median_seconds(action: Callable[[], object], runs: int) -> float:
    action()  # warm-up: plan cache and buffers, as a sensor that ticks every few minutes finds them
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        action()
        timings.append(time.perf_counter() - began)
    return statistics.median(timings)


def plan(engine: sa.Engine) -> str:
    sql = str(candidate_windows_query().compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        return "\n".join(conn.scalars(sa.text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}")))


def measure(engine: sa.Engine, label: str, runs: int) -> None:
    now = datetime(2026, 1, 1)
    count_query = sa.select(sa.func.count()).select_from(tables.trajectories).where(candidate_filter())

    def count() -> int:
        with engine.connect() as conn:
            return conn.scalar(count_query)

    snapshot = readiness_snapshot(engine, now)
    snapshot_s = median_seconds(lambda: readiness_snapshot(engine, now), runs)
    count_s = median_seconds(count, runs)
    print(f"{label:<13} {snapshot.scored_trajectories:>10,} {snapshot.trainable_groups:>9,} {len(snapshot.windows):>7,} "
          f"{snapshot_s * 1000:>12.0f} {count_s * 1000:>9.0f} {snapshot_s / count_s:>6.1f}")
    print(f"plan ({label}):\n{plan(engine)}\n")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trajectories", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--admin-url", default=os.environ.get("BABYLON_TEST_POSTGRES", ADMIN_URL))
    args = parser.parse_args()

    with scratch_database(args.admin_url) as url:
        engine = make_engine(url)
        began = time.perf_counter()
        fill(engine, args.trajectories)
        print(f"filled {args.trajectories:,} trajectories in {time.perf_counter() - began:.1f} s")
        header = f"{'shape':<13} {'candidates':>10} {'trainable':>9} {'windows':>7} {'snapshot ms':>12} {'count ms':>9} {'ratio':>6}"
        print(header)
        measure(engine, "steady state", args.runs)
        with engine.begin() as conn:
            conn.execute(sa.update(tables.trajectories).values(usedInTraining=False, trainedInBatch=None))
        analyze(engine)
        print(header)
        measure(engine, "backlog", args.runs)
        print(f"snapshot = readiness_snapshot (median of {args.runs}); count = count(*) over the same candidate filter; "
              "goal: snapshot well under 1 s")
        engine.dispose()


if __name__ == "__main__":
    main()
