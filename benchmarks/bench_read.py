"""Read throughput of `read_window` against the raw database COPY of the same rows.

Fills a scratch Postgres database with Babylon-shaped trajectories (5 steps, one LLM call each with
~1 KB of prompt) in two windows of different sizes, then for each window measures, in a fresh
process so peak RSS is the read's own:
  - `COPY (SELECT <the reader's columns> ... <the reader's WHERE>) TO STDOUT`: the baseline, bytes to the client;
  - `read_window`: stream, parse, validate and normalise every row; once with the cycle collector
    paused, as `window_trajectories` reads, once with it running.
Each pair is measured `--repeats` times (default 5; on a shared machine one pair can be off by half)
and the medians are printed, with the ratio's range. Prints trajectories/s, the reader's CPU seconds
(wall time also counts waiting for a core), peak RSS and the ratio (reader throughput / COPY
throughput; goal >= 0.5), then `babylon simulate` throughput into Postgres when the simulator is installed.

    python benchmarks/bench_read.py [--trajectories 50000] [--repeats 5] [--admin-url postgresql://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timedelta
from statistics import median

import sqlalchemy as sa

from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.reader import QuarantinedRow, read_window, window_rows_query
from babylon_pipeline.windowing.collector import collector_paused
from babylon_pipeline.windows import window_start

ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
BIG, SMALL = "2025-11-15T10:00", "2025-11-15T11:00"
PROMPT_WORDS = ["market", "price", "yes", "no", "position", "balance", "trend", "signal", "whale", "rumor", "volume", "perp", "long", "short"]


def _prompt(rng: random.Random, size: int = 1000) -> str:
    words: list[str] = []
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(PROMPT_WORDS))
    return " ".join(words)


def _steps(rng: random.Random, start_ms: int, prompts: list[str]) -> str:
    pnl = rng.uniform(-50, 50)
    steps = []
    for n in range(5):
        pnl += rng.uniform(-10, 10)
        steps.append({
            "stepNumber": n,
            "timestamp": start_ms + n * 1000,
            "environmentState": {"agentBalance": 1000 + pnl, "agentPnL": pnl, "openPositions": n},
            "providerAccesses": [{"providerName": "markets", "data": {"n": n}, "purpose": "observe"}],
            "llmCalls": [{
                "model": "qwen2.5-7b-instruct", "systemPrompt": "You are a Babylon trader.", "userPrompt": rng.choice(prompts),
                "response": f'I buy YES. {{"action": "BUY_SHARES", "marketId": "m{n}", "amount": 10}}',
                "temperature": 0.7, "maxTokens": 256, "purpose": "action", "actionType": "BUY_SHARES",
            }],
            "action": {"actionType": "BUY_SHARES", "parameters": {"marketId": f"m{n}", "amount": 10}, "success": True},
            "reward": rng.uniform(-1, 1),
        })
    return json.dumps(steps)


def fill(engine: sa.Engine, counts: dict[str, int]) -> int:
    """COPY the rows in: the fastest honest way to stand up a large window."""
    rng = random.Random(7)
    prompts = [_prompt(rng) for _ in range(64)]
    columns = ('id', '"trajectoryId"', '"agentId"', '"startTime"', '"endTime"', '"durationMs"', '"windowId"', '"scenarioId"',
               '"stepsJson"', '"rewardComponentsJson"', '"metricsJson"', '"metadataJson"', '"totalReward"',
               '"episodeLength"', '"finalStatus"', '"updatedAt"')
    total_bytes = 0
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for window_id, count in counts.items():
            start = window_start(window_id)
            buffer = io.StringIO()
            for i in range(count):
                moment = start + timedelta(seconds=i * 3600 / count)
                start_ms = int((moment - datetime(1970, 1, 1)).total_seconds() * 1000)
                steps = _steps(rng, start_ms, prompts)
                total_bytes += len(steps)
                values = [uuid.uuid4().hex, uuid.uuid4().hex, f"agent-{i % 500}", moment.isoformat(), moment.isoformat(), "5000",
                          window_id, f"{window_id}:s{i % 50}", steps, '{"environmentReward": 0.5}',
                          '{"episodeLength": 5, "finalStatus": "completed"}', '{"isTrainingData": true}', "0.5", "5",
                          "completed", moment.isoformat()]
                buffer.write("\t".join(v.replace("\\", "\\\\") for v in values) + "\n")
            buffer.seek(0)
            cursor.copy_expert(f"COPY trajectories ({', '.join(columns)}) FROM STDIN", buffer)
        raw.commit()
        cursor.execute("ANALYZE trajectories")
        raw.commit()
    finally:
        raw.close()
    return total_bytes


class _Sink(io.RawIOBase):
    def __init__(self) -> None:
        self.bytes = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.bytes += len(data)
        return len(data)


def measure_copy(engine: sa.Engine, window_id: str) -> tuple[float, int]:
    sql = str(window_rows_query(window_id).compile(engine, compile_kwargs={"literal_binds": True}))
    raw = engine.raw_connection()
    try:
        sink = _Sink()
        began = time.perf_counter()
        raw.cursor().copy_expert(f"COPY ({sql}) TO STDOUT", sink)
        return time.perf_counter() - began, sink.bytes
    finally:
        raw.close()


def peak_rss_mb() -> float:
    """VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec."""
    with open("/proc/self/status") as lines:
        status = dict(line.split(":", 1) for line in lines)
    return int(status["VmHWM"].split()[0]) / 1024


@contextmanager
def scratch_database(admin_url: str) -> Iterator[str]:
    """A database of the benchmark's own, dropped afterwards."""
    name = f"babylon_bench_{os.getpid()}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(make_engine(url))
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def child_read(url: str, window_id: str, collector: str) -> None:
    """Runs in its own process: read the window, print wall and CPU seconds, rows and peak RSS as JSON.

    `collector` "paused" reads as `window_trajectories` does (the cycle collector off while it builds
    the window's records, see `windowing/collector.py`); "on" as a caller that does not pause it."""
    engine = make_engine(url)
    began, cpu = time.perf_counter(), time.process_time()
    valid = quarantined = steps = 0
    with collector_paused() if collector == "paused" else nullcontext():
        for item in read_window(engine, window_id):
            if isinstance(item, QuarantinedRow):
                quarantined += 1
            else:
                valid += 1
                steps += len(item.steps)
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "valid": valid, "quarantined": quarantined,
                      "steps": steps, "peak_rss_mb": peak_rss_mb()}))


def copy_then_child(engine: sa.Engine, window_id: str, child: list[str]) -> tuple[float, int, dict]:
    """The COPY baseline, then `child` (a command printing JSON) in a fresh process, back to back, so
    that a slow spell of a shared machine slows both sides."""
    copy_seconds, copy_bytes = measure_copy(engine, window_id)
    done = subprocess.run(child, check=True, capture_output=True, text=True)
    return copy_seconds, copy_bytes, json.loads(done.stdout)


def simulate_throughput(url: str) -> None:
    try:
        from babylon_pipeline.sim import simulate
    except ImportError:
        print("simulate: the simulator is not installed")
        return
    engine = make_engine(url)
    began = time.perf_counter()
    summary = simulate(engine, hours=24, agents=100, seed=7, start=datetime(2025, 12, 1, 0, 0))
    seconds = time.perf_counter() - began
    print(f"babylon simulate --hours 24 --agents 100: {summary.trajectories} trajectories in {seconds:.2f} s "
          f"= {summary.trajectories / seconds:,.0f} trajectories/s written to Postgres")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trajectories", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5, help="COPY/read pairs per measurement; medians are printed")
    parser.add_argument("--admin-url", default=os.environ.get("BABYLON_TEST_POSTGRES", ADMIN_URL))
    parser.add_argument("--child-read", nargs=3, metavar=("URL", "WINDOW", "COLLECTOR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_read:
        child_read(*args.child_read)
        return

    with scratch_database(args.admin_url) as url:
        engine = make_engine(url)
        counts = {BIG: args.trajectories, SMALL: max(1, args.trajectories // 5)}
        began = time.perf_counter()
        steps_bytes = fill(engine, counts)
        print(f"filled {sum(counts.values()):,} trajectories ({steps_bytes / 1e6:,.0f} MB of stepsJson) "
              f"in {time.perf_counter() - began:.1f} s")
        print(f"medians of {args.repeats} runs, each a COPY then a read in a fresh process; ratio range in brackets")
        print(f"{'window':<17} {'rows':>7} {'collector':>9} {'COPY s':>7} {'COPY MB':>8} {'read s':>7} {'CPU s':>6} "
              f"{'traj/s':>8} {'peak RSS MB':>11} {'ratio':>6}  {'(min-max)':<11}")
        collectors = ("paused", "on")
        for window_id, count in sorted(counts.items(), key=lambda kv: kv[1]):
            runs: dict[str, list] = {collector: [] for collector in collectors}
            for _ in range(args.repeats):  # the two modes take turns, so a slow spell cannot favour one
                for collector in collectors:
                    child = [sys.executable, __file__, "--child-read", url, window_id, collector]
                    runs[collector].append(copy_then_child(engine, window_id, child))
            for collector in collectors:
                pairs = runs[collector]
                for _, _, read in pairs:
                    assert read["valid"] == count, read
                ratios = [copy_seconds / read["seconds"] for copy_seconds, _, read in pairs]
                copy_seconds = median(pair[0] for pair in pairs)
                seconds = median(read["seconds"] for _, _, read in pairs)
                print(f"{window_id:<17} {count:>7,} {collector:>9} {copy_seconds:>7.2f} {pairs[0][1] / 1e6:>8.0f} "
                      f"{seconds:>7.2f} {median(read['cpu_seconds'] for _, _, read in pairs):>6.2f} {count / seconds:>8,.0f} "
                      f"{max(read['peak_rss_mb'] for _, _, read in pairs):>11.0f} {median(ratios):>6.2f}  "
                      f"({min(ratios):.2f}-{max(ratios):.2f})")
        print("ratio = read_window throughput / COPY throughput of the same rows (goal >= 0.5); "
              "peak RSS should not grow with the window's size; CPU s is the reader's own (wall minus it: waiting "
              "for the server, or for a busy machine); collector paused is how window_trajectories reads")
        simulate_throughput(url)
        engine.dispose()


if __name__ == "__main__":
    main()
