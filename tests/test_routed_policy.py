"""Simulated agents routed by the deployment: each agent's LLM calls name the version `route` gives it, through
the inference server (`babylon simulate --policy openai --routed`) and through the embedded local model."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa

from babylon_pipeline.cli import main
from babylon_pipeline.model.base_record import BaseRecord, write_base_record
from babylon_pipeline.serving.embedded import EmbeddedInference
from babylon_pipeline.serving.inference import InferenceError
from babylon_pipeline.serving.routed_policy import RoutedPolicies
from babylon_pipeline.serving.routing import route
from babylon_pipeline.serving.state import read_deployment, start_canary
from babylon_pipeline.sim import simulate
from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.reader import read_window
from tests.inference_server import BASE, InferenceServer, inference_server  # noqa: F401
from tests.test_local_policy import _store_adapter
from tests.test_serving_state import add_model
from tests.training_data import local_store, shared_tiny_base

WINDOW = "2025-11-15T10:00"


MIXED_SALT = "routing-test-0"
"""Puts 4 of seed 5's first 6 agents and 3 of seed 7's first 12 on the canary: a canary's own salt is random, and
with it these tests would see all agents in one arm once in 64 (4,096) runs."""


def with_canary(engine: sa.Engine) -> sa.Engine:
    """v1.0.0 on half the agents, the base on the rest, with `MIXED_SALT`."""
    upgrade(engine)
    add_model(engine, "v1.0.0", created=datetime(2025, 11, 15, 9))
    start_canary(engine, "v1.0.0", 0.5, actor="test", reason="routing test")
    with engine.begin() as conn:
        conn.execute(sa.update(tables.deployment).values(salt=MIXED_SALT))
    return engine


@pytest.fixture
def canary_db(empty_db: sa.Engine) -> sa.Engine:
    return with_canary(empty_db)


@pytest.fixture
def canary_sqlite(empty_sqlite: sa.Engine) -> sa.Engine:
    """For the local model's test: which database holds the calls does not matter to it, one is enough."""
    return with_canary(empty_sqlite)


def versions_by_agent(engine: sa.Engine) -> dict[str, set]:
    calls: dict[str, set] = {}
    for t in read_window(engine, WINDOW):
        for step in t.steps:
            for call in step.llm_calls:
                calls.setdefault(t.agent_id, set()).add((call.model, call.model_version))
    return calls


def test_the_cli_routes_agents_through_the_inference_server(canary_db, inference_server: InferenceServer,
                                                            monkeypatch, capsys) -> None:
    inference_server.publish("v1.0.0")
    inference_server.loaded["babylon-agent-v1.0.0"] = "/adapters/v1.0.0"
    monkeypatch.setenv("BABYLON_INFERENCE_BASE_URL", inference_server.base_url)
    monkeypatch.delenv("BABYLON_INFERENCE_API_KEY", raising=False)
    url = canary_db.url.render_as_string(hide_password=False)
    common = ["simulate", "--hours", "1", "--agents", "12", "--steps", "1", "--start", WINDOW, "--database-url", url]

    assert main([*common, "--policy", "scripted", "--routed"]) == 2
    assert "--routed needs --policy local or openai" in capsys.readouterr().err
    assert main([*common, "--policy", "openai", "--routed"]) == 0
    out = capsys.readouterr().out
    deployment = read_deployment(canary_db)
    by_agent = versions_by_agent(canary_db)
    assert len(by_agent) == 12
    for agent_id, calls in by_agent.items():
        version = route(agent_id, deployment)
        assert calls == {("babylon-agent-v1.0.0", "v1.0.0") if version else (BASE, None)}
    on_canary = sum(route(a, deployment) == "v1.0.0" for a in by_agent)
    assert 0 < on_canary < 12
    assert f"agents routed by the deployment: base: {12 - on_canary} agents, v1.0.0 (canary, 50%): {on_canary} " in out


def test_embedded_routing_loads_each_version_once_and_records_it(canary_sqlite, tmp_path, tmp_path_factory) -> None:
    canary_db = canary_sqlite
    store = local_store(tmp_path / "store", shared_tiny_base(tmp_path_factory))
    _store_adapter(store, tmp_path)
    write_base_record(store, BaseRecord(name="tiny", spec="store:base", source="embedded", parameters=1,
                                        context_tokens=256))
    local = EmbeddedInference(store, work_dir=tmp_path / "work", max_new_tokens=8)
    routed = RoutedPolicies(read_deployment(canary_db), local.policy)
    simulate(canary_db, hours=1, agents=6, seed=5, start=datetime(2025, 11, 15, 10), steps_per_window=1,
             policy_for=routed)
    assert local.loaded() == {"v1.0.0"} and routed.agents == {"v1.0.0": 4, None: 2}
    for agent_id, calls in versions_by_agent(canary_db).items():
        version = route(agent_id, routed.deployment)
        assert calls == {("babylon-agent-v1.0.0", "v1.0.0") if version else ("tiny", None)}

    # the untrained tiny model answers noise: the embedded health check refuses it
    with pytest.raises(InferenceError, match=r"babylon-agent-v1\.0\.0 failed its health check in the embedded local "
                                             r"model: none of 4 answers holds a game action"):
        local.health_check("v1.0.0")
    with pytest.raises(InferenceError, match=r"babylon-agent-v9\.0\.0 is not loaded"):
        local.health_check("v9.0.0")
    with pytest.raises(InferenceError, match=r"could not load babylon-agent-v9\.0\.0 in the embedded local model: "
                                             r"version v9\.0\.0 is not a complete adapter"):
        local.load("v9.0.0")
    assert local.unload("v1.0.0") and not local.unload("v1.0.0") and local.loaded() == frozenset()
