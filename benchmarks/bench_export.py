"""A large window through the export stages, against the raw database COPY of the same rows.

Fills a scratch Postgres database with one window of Babylon-shaped trajectories (see
`bench_read.py`), then, in a fresh process (so peak RSS is the export's own), runs the logic of
`window_trajectories` → `outcome_rewards` → `art_groups` into a local object store. Prints
trajectories/s per stage and overall, the process's CPU seconds, peak RSS, and the ratio to
`COPY (SELECT ...) TO STDOUT` of the same rows (export throughput / COPY throughput; goal >= 0.3).

Each COPY/export pair runs `--repeats` times (default 3); medians are printed, ratios with their range.

    python benchmarks/bench_export.py [--trajectories 50000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from bench_read import ADMIN_URL, BIG, copy_then_child, fill, peak_rss_mb, scratch_database

from babylon_pipeline.rewards import RewardWeights
from babylon_pipeline.storage.local import LocalObjectStore
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.windowing.groups import export_window_groups
from babylon_pipeline.windowing.rewards import score_window
from babylon_pipeline.windowing.trajectories import export_window_trajectories


def child_export(url: str, window_id: str) -> None:
    engine = make_engine(url)
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalObjectStore(Path(tmp))
        seconds, cpu = {}, {}

        def timed(stage: str, run: Callable[[], Any]) -> Any:
            began, cpu_began = time.perf_counter(), time.process_time()
            result = run()
            seconds[stage], cpu[stage] = time.perf_counter() - began, time.process_time() - cpu_began
            return result

        report = timed("window_trajectories", lambda: export_window_trajectories(engine, store, window_id))
        timed("outcome_rewards", lambda: score_window(engine, store, window_id, RewardWeights()))
        counts = timed("art_groups", lambda: export_window_groups(store, window_id))
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "valid": report.valid, "groups": counts.groups,
                      "peak_rss_mb": peak_rss_mb()}))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trajectories", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3, help="COPY/export pairs; medians are printed")
    parser.add_argument("--admin-url", default=os.environ.get("BABYLON_TEST_POSTGRES", ADMIN_URL))
    parser.add_argument("--child-export", nargs=2, metavar=("URL", "WINDOW"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_export:
        child_export(*args.child_export)
        return
    with scratch_database(args.admin_url) as url:
        engine = make_engine(url)
        fill(engine, {BIG: args.trajectories})
        child = [sys.executable, __file__, "--child-export", url, BIG]
        pairs = [copy_then_child(engine, BIG, child) for _ in range(args.repeats)]
        runs = [(copy_seconds, result) for copy_seconds, _, result in pairs]
        copy_bytes = pairs[0][1]
        copy_seconds = median(copy for copy, _ in runs)
        stages = list(runs[0][1]["seconds"])
        seconds = {stage: median(result["seconds"][stage] for _, result in runs) for stage in stages}
        cpu = {stage: median(result["cpu_seconds"][stage] for _, result in runs) for stage in stages}
        result = runs[0][1]
        n = result["valid"]
        print(f"window {BIG}: {n:,} trajectories in {result['groups']} groups; COPY {copy_seconds:.2f} s ({copy_bytes / 1e6:.0f} MB); "
              f"medians of {args.repeats} runs")
        for stage in stages:
            print(f"  {stage:<20} {seconds[stage]:7.2f} s  {n / seconds[stage]:9,.0f} trajectories/s   CPU {cpu[stage]:6.2f} s")
        total = sum(seconds.values())
        print(f"  {'all three':<20} {total:7.2f} s  {n / total:9,.0f} trajectories/s   CPU {sum(cpu.values()):6.2f} s   "
              f"peak RSS {max(result['peak_rss_mb'] for _, result in runs):.0f} MB")

        def ratio(*names: str) -> str:
            per_run = [copy / sum(result["seconds"][name] for name in names) for copy, result in runs]
            return f"{median(per_run):.3f} ({min(per_run):.3f}-{max(per_run):.3f})"

        print(f"ratio = export throughput / COPY throughput (goal >= 0.3), median (range): all three {ratio(*stages)}; "
              f"window_trajectories + art_groups {ratio('window_trajectories', 'art_groups')}; "
              f"window_trajectories alone {ratio('window_trajectories')}")
        engine.dispose()


if __name__ == "__main__":
    main()
