"""Routing: the same answer in every process, the configured share, monotone, and one read per interval."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import sys
from datetime import datetime

import pytest
import sqlalchemy as sa

from babylon_pipeline.serving.routing import DeploymentReader, route, stable_unit
from babylon_pipeline.serving.state import Deployment, start_canary
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade

IDS = [f"agent-{i}" for i in range(100_000)]


def _canary(fraction: float, salt: str = "5f3a9c0d1e2b4a67") -> Deployment:
    return Deployment("v1.0.0", "v1.1.0", fraction, 0, salt, datetime(2025, 11, 15), datetime(2025, 11, 15))


def test_another_process_routes_every_agent_alike() -> None:
    deployment = _canary(0.3)
    here = [route(agent, deployment) for agent in IDS[:2000]]
    code = (
        "import json, sys; from datetime import datetime\n"
        "from babylon_pipeline.serving.routing import route\n"
        "from babylon_pipeline.serving.state import Deployment\n"
        "t = datetime(2025, 11, 15)\n"
        "d = Deployment('v1.0.0', 'v1.1.0', 0.3, 0, '5f3a9c0d1e2b4a67', t, t)\n"
        "print(json.dumps([route(f'agent-{i}', d) for i in range(2000)]))\n"
    )
    # a different hash seed: Python's own hash() would route differently here
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "12345", "PYTHONPATH": os.environ.get("PYTHONPATH", os.getcwd())}
                           ).stdout
    assert json.loads(there) == here
    assert set(here) == {"v1.0.0", "v1.1.0"}


def test_the_canary_share_is_within_one_point_of_the_fraction_over_100000_agents() -> None:
    for fraction in (0.01, 0.1, 0.5, 0.9):
        for salt in ("a", "b3c1"):
            share = sum(route(agent, _canary(fraction, salt)) == "v1.1.0" for agent in IDS) / len(IDS)
            assert abs(share - fraction) <= 0.01, (fraction, salt, share)
    assert all(route(agent, _canary(1.0)) == "v1.1.0" for agent in IDS[:1000])


def test_raising_the_fraction_keeps_every_agent_already_on_the_canary() -> None:
    on = [set(a for a in IDS if route(a, _canary(f)) == "v1.1.0") for f in (0.05, 0.1, 0.5, 1.0)]
    assert all(smaller < larger for smaller, larger in zip(on, on[1:]))
    other_salt = {a for a in IDS if route(a, _canary(0.1, "another")) == "v1.1.0"}
    assert len(other_salt & on[1]) < 0.2 * len(on[1])  # a new canary draws its own agents


def test_without_a_canary_everyone_gets_the_version_in_service_or_the_base() -> None:
    assert route("x", Deployment("v2.0.0", None, 0.0, 0, "", None, None)) == "v2.0.0"
    assert route("x", Deployment(None, None, 0.0, 0, "", None, None)) is None
    assert 0 <= stable_unit("", "") < 1 and stable_unit("s", "x") == stable_unit("s", "x") != stable_unit("t", "x")


def test_the_reader_reads_the_database_once_per_refresh_interval(empty_sqlite: sa.Engine) -> None:
    upgrade(empty_sqlite)
    with empty_sqlite.begin() as conn:
        conn.execute(sa.insert(tables.trained_models).values(
            id="m", modelId="babylon-agent-v1.0.0", version="v1.0.0", baseModel="b", status="candidate",
            storagePath="models/v1.0.0", evalMetrics={"verdict": "better", "guardrails_passed": True},
            updatedAt=datetime(2025, 11, 15)))
    clock = [0.0]
    reader = DeploymentReader(empty_sqlite, refresh_seconds=5.0, clock=lambda: clock[0])
    assert {reader.route(agent) for agent in IDS[:10_000]} == {None} and reader.reads == 1
    start_canary(empty_sqlite, "v1.0.0", 0.5, actor="t", reason="")
    clock[0] = 4.9
    assert reader.current().canary is None and reader.reads == 1  # still the cached copy
    clock[0] = 5.0
    assert {reader.route(agent) for agent in IDS[:1000]} == {None, "v1.0.0"} and reader.reads == 2


def test_threads_sharing_a_reader_read_once_per_interval(empty_sqlite: sa.Engine) -> None:
    upgrade(empty_sqlite)
    clock = [0.0]
    reader = DeploymentReader(empty_sqlite, refresh_seconds=1.0, clock=lambda: clock[0])
    threads = [threading.Thread(target=lambda: [reader.route(agent) for agent in IDS[:5000]]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert reader.reads == 1


def test_a_failed_refresh_keeps_routing_on_the_last_state_and_the_first_failure_is_raised(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'babylon.db'}")
    upgrade(engine)
    clock = [0.0]
    reader = DeploymentReader(engine, refresh_seconds=1.0, clock=lambda: clock[0])
    assert reader.route("agent-1") is None
    with engine.begin() as conn:  # the database goes away under the reader
        conn.execute(sa.text("DROP TABLE babylon_deployment"))
    clock[0] = 1.0
    assert reader.route("agent-1") is None and reader.reads == 2 and reader.last_error is not None
    clock[0] = 1.5
    assert reader.route("agent-1") is None and reader.reads == 2  # retried an interval later, not every call
    with pytest.raises(sa.exc.OperationalError):
        DeploymentReader(engine).current()
    engine.dispose()
