"""Routing: decisions per second of `route`, and what the deployment state costs a process that routes
every agent tick.

1. `route` over N agent ids with a canary running, against the baselines of a bare BLAKE2b (8-byte) and
   a bare SHA-256 digest of each id (the hash alone, no salt, no comparison), same ids, same run; best of
   several rounds.
2. `DeploymentReader.route` (the cached state) over the same ids for a few seconds of wall time with a
   short refresh interval, on a scratch Postgres database: calls, database reads, and the reads the
   rule allows (one per interval, plus the first); the cost of one uncached `read_deployment`.

    python benchmarks/bench_route.py [--agents 1000000] [--refresh 0.25] [--seconds 3] [--admin-url ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from datetime import datetime
from hashlib import blake2b, sha256

import sqlalchemy as sa
from bench_read import ADMIN_URL, scratch_database

from babylon_pipeline.serving.routing import DeploymentReader, route
from babylon_pipeline.serving.state import Deployment, promote, read_deployment, start_canary
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine

ROUNDS = 5


def best_rate(count: int, run) -> float:
    """Calls per second of the fastest of a few rounds (a shared VM's noise only ever slows a round)."""
    best = min(_timed(run) for _ in range(ROUNDS))
    return count / best


def _timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def pure_route(ids: list[str]) -> None:
    deployment = Deployment("v1.0.0", "v1.1.0", 0.1, 0, "5f3a9c0d1e2b4a67", datetime(2025, 11, 15), None)
    canary_share = sum(route(agent, deployment) == "v1.1.0" for agent in ids) / len(ids)
    route_rate = best_rate(len(ids), lambda: [route(agent, deployment) for agent in ids])
    print(f"route: {route_rate:,.0f} decisions/s over {len(ids):,} ids ({1e6 / route_rate:.2f} µs each); "
          f"canary share {canary_share:.4f} at fraction 0.1")
    for name, digest in (("blake2b", lambda a: blake2b(a.encode(), digest_size=8).digest()),
                         ("sha256", lambda a: sha256(a.encode()).digest())):
        hash_rate = best_rate(len(ids), lambda: [digest(agent) for agent in ids])
        print(f"baseline {name}(id): {hash_rate:,.0f} hashes/s ({1e6 / hash_rate:.2f} µs each); "
              f"route / baseline time = {hash_rate / route_rate:.2f}")


def cached_reader(url: str, ids: list[str], refresh: float, seconds: float) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for version in ("v1.0.0", "v1.1.0"):
            conn.execute(sa.insert(tables.trained_models).values(
                id=f"tm-{version}", modelId=f"babylon-agent-{version}", version=version, baseModel="base",
                status="candidate", storagePath=f"models/{version}", updatedAt=datetime(2025, 11, 15),
                evalMetrics={"verdict": "better", "guardrails_passed": True}))
    start_canary(engine, "v1.0.0", 0.5, actor="bench", reason="")
    promote(engine, actor="bench", reason="")
    start_canary(engine, "v1.1.0", 0.1, actor="bench", reason="")
    uncached = statistics.median(_timed(lambda: read_deployment(engine)) for _ in range(50))

    reader = DeploymentReader(engine, refresh_seconds=refresh)
    calls, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        for agent in ids[:10_000]:
            reader.route(agent)
        calls += 10_000
    allowed = int(elapsed / refresh) + 1
    print(f"cached reader: {calls:,} route calls in {elapsed:.2f} s ({calls / elapsed:,.0f}/s) with refresh "
          f"{refresh} s: {reader.reads} database reads (allowed ≤ {allowed}); one read_deployment "
          f"{uncached * 1000:.2f} ms (Postgres, median of 50)")
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=1_000_000)
    parser.add_argument("--refresh", type=float, default=0.25)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--admin-url", default=os.environ.get("BABYLON_TEST_POSTGRES", ADMIN_URL))
    args = parser.parse_args()
    ids = [f"agent-{i:07d}" for i in range(args.agents)]
    pure_route(ids)
    with scratch_database(args.admin_url) as url:
        cached_reader(url, ids, args.refresh, args.seconds)


if __name__ == "__main__":
    main()
