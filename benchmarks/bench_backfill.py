"""Backfilling a week of windows: one single run over the range against one run per partition.

Fills a scratch Postgres database with 168 hourly windows of 200 Babylon-shaped trajectories, then
materialises the four window assets (embedded heuristic judge, a local object store) both ways on
fresh object stores, in the same process: as one run over the partition range (the assets'
`BackfillPolicy.single_run()`), and as 168 runs of one partition each, as Dagster's default
backfill would launch them. Prints both wall times and their ratio.

    python benchmarks/bench_backfill.py [--windows 168] [--per-window 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).parent))
from bench_read import ADMIN_URL, fill, scratch_database

from babylon_pipeline.jobs.windows import WINDOW_ASSETS
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.judge import JudgeResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.windows import window_of, window_start, windows_between


def _resources(url: str, objects: Path) -> dict:
    return {
        "trajectory_store": TrajectoryStore(database_url=url),
        "object_store": ObjectStoreResource(url=objects.as_uri()),
        "judge": JudgeResource(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--windows", type=int, default=168)
    parser.add_argument("--per-window", type=int, default=200)
    parser.add_argument("--admin-url", default=os.environ.get("BABYLON_TEST_POSTGRES", ADMIN_URL))
    args = parser.parse_args()
    logging.getLogger("dagster").setLevel(logging.WARNING)
    first = "2025-11-01T00:00"
    last = window_of(window_start(first) + timedelta(hours=args.windows - 1))
    windows = list(windows_between(first, last))
    with scratch_database(args.admin_url) as url, tempfile.TemporaryDirectory() as tmp:
        fill(make_engine(url), {w: args.per_window for w in windows})
        print(f"{len(windows)} windows x {args.per_window} trajectories = {len(windows) * args.per_window:,} trajectories")

        began = time.perf_counter()
        single = dg.materialize(
            WINDOW_ASSETS, resources=_resources(url, Path(tmp) / "single"), instance=dg.DagsterInstance.ephemeral(),
            tags={"dagster/asset_partition_range_start": partition_key_of(first),
                  "dagster/asset_partition_range_end": partition_key_of(last)},
        )
        single_seconds = time.perf_counter() - began
        assert single.success

        began = time.perf_counter()
        instance = dg.DagsterInstance.ephemeral()
        for window in windows:
            assert dg.materialize(WINDOW_ASSETS, partition_key=partition_key_of(window),
                                  resources=_resources(url, Path(tmp) / "per-partition"), instance=instance).success
        per_partition_seconds = time.perf_counter() - began

        n = len(windows) * args.per_window
        print(f"single run over the range : {single_seconds:7.1f} s  ({n / single_seconds:,.0f} trajectories/s, 1 run)")
        print(f"one run per partition     : {per_partition_seconds:7.1f} s  ({n / per_partition_seconds:,.0f} trajectories/s, "
              f"{len(windows)} runs, in-process: no run-launch or pod overhead counted)")
        print(f"ratio per-partition / single run = {per_partition_seconds / single_seconds:.2f}")


if __name__ == "__main__":
    main()
