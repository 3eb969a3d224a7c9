"""Deployment changes with their adapters, on SQLite and Postgres against the loopback inference server:
a version gains traffic only after its adapter loads and answers, a fault leaves the deployment as it was,
and versions taken out of service are unloaded."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import sqlalchemy as sa

from babylon_pipeline.alerts import Alert
from babylon_pipeline.serving.deploy import deploy_canary, promote_canary, roll_back
from babylon_pipeline.serving.inference import InferenceError, ServerInference
from babylon_pipeline.serving.state import DeploymentRefused, deployment_history, read_deployment
from babylon_pipeline.store.migrate import upgrade
from tests.inference_server import InferenceServer, inference_server  # noqa: F401
from tests.judge_server import unused_port_url
from tests.test_serving_state import add_model, statuses

T0 = datetime(2025, 11, 15, 12, 0)


@pytest.fixture
def engine(empty_db: sa.Engine) -> sa.Engine:
    upgrade(empty_db)
    for i, version in enumerate(("v1.0.0", "v1.1.0")):
        add_model(empty_db, version, created=T0.replace(hour=12 + i))
    return empty_db


@pytest.fixture
def sent() -> list[Alert]:
    return []


def server_inference(server: InferenceServer) -> ServerInference:
    return ServerInference(server.base_url, "/adapters", "key", max_retries=0, timeout_s=5)


def test_a_canary_starts_after_its_adapter_loads_and_answers(engine, inference_server: InferenceServer,
                                                             sent) -> None:
    inference_server.publish("v1.0.0")
    outcome = deploy_canary(engine, server_inference(inference_server), "v1.0.0", 0.1, actor="test", reason="ok",
                            alert=sent.append)
    assert (outcome.deployment.canary, outcome.deployment.canary_fraction, outcome.deployment.in_service) == \
        ("v1.0.0", 0.1, None)
    assert outcome.health is not None and outcome.health.action_type == "HOLD"
    assert list(inference_server.loaded) == ["babylon-agent-v1.0.0"]
    order = [r.path for r in inference_server.requests if r.method == "POST"]
    assert order == ["/v1/load_lora_adapter", "/v1/chat/completions"]
    assert statuses(engine)["v1.0.0"] == "canary"
    [deployed] = sent
    assert (deployed.key, deployed.severity) == (f"deploy:v1.0.0:{outcome.deployment.changed_at.isoformat()}", "info")
    assert deployed.title == "v1.0.0 deployed as a canary on 10% of agents" and "Reason: ok" in deployed.text


@pytest.mark.parametrize("fault", ["server_down", "load_400", "load_500", "garbage_answer"])
def test_an_adapter_fault_leaves_the_deployment_unchanged_and_alerts(engine, inference_server: InferenceServer,
                                                                     fault, sent) -> None:
    inference_server.publish("v1.0.0")
    inference = server_inference(inference_server)
    if fault == "server_down":
        inference = ServerInference(unused_port_url(), "/adapters", "key", max_retries=0, timeout_s=2)
    elif fault == "load_400":
        inference_server.readable.clear()
    elif fault == "load_500":
        inference_server.fail("load_lora_adapter", 500)
    else:
        inference_server.answer("The markets look great today!")
    before, history = read_deployment(engine), deployment_history(engine)
    with pytest.raises(InferenceError):
        deploy_canary(engine, inference, "v1.0.0", 0.1, actor="test", reason="fault", alert=sent.append)
    assert read_deployment(engine) == before and deployment_history(engine).equals(history)
    assert statuses(engine) == {"v1.0.0": "candidate", "v1.1.0": "candidate"}
    assert inference_server.loaded == {}  # the garbage answerer was loaded for the check, and unloaded again
    [alert] = sent
    assert (alert.key, alert.severity) == ("adapter-fault:deploy:v1.0.0:never", "error")
    assert alert.title == "v1.0.0 not deployed: its adapter failed" and "Nothing changed: the base serves" in alert.text


@pytest.mark.parametrize(("metrics", "message"), [
    (None, "never evaluated"),
    ({"verdict": "worse", "guardrails_passed": True}, "judged worse"),
    ({"verdict": "better", "guardrails_passed": False}, "guardrails"),
])
def test_a_refused_version_loads_nothing(engine, inference_server: InferenceServer, metrics, message,
                                         sent) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE trained_models SET \"evalMetrics\" = :m WHERE version = 'v1.0.0'"),
                     {"m": None if metrics is None else json.dumps(metrics)})
    inference_server.publish("v1.0.0")
    with pytest.raises(DeploymentRefused, match=message):
        deploy_canary(engine, server_inference(inference_server), "v1.0.0", 0.1, actor="test", reason="no",
                      alert=sent.append)
    with pytest.raises(DeploymentRefused, match="unknown version 'v9.0.0'"):
        deploy_canary(engine, server_inference(inference_server), "v9.0.0", 0.1, actor="test", reason="no",
                      alert=sent.append)
    assert inference_server.requests == [] and sent == []  # a refusal is the caller's answer, not an incident


def test_promotion_and_rollback_move_the_adapters_with_the_traffic_and_alert(engine, inference_server, sent) -> None:
    for version in ("v1.0.0", "v1.1.0"):
        inference_server.publish(version)
    inference = server_inference(inference_server)
    deploy_canary(engine, inference, "v1.0.0", 0.1, actor="test", reason="first", alert=sent.append)
    promoted = promote_canary(engine, inference, actor="test", reason="good", alert=sent.append)
    assert promoted.deployment.in_service == "v1.0.0"
    deploy_canary(engine, inference, "v1.1.0", 0.5, actor="test", reason="second", alert=sent.append)
    with pytest.raises(DeploymentRefused, match="canary v1.1.0 is running at 50%"):
        deploy_canary(engine, inference, "v1.1.0", 0.1, actor="test", reason="again", alert=sent.append)

    rolled = rolled_canary = roll_back(engine, inference, to=None, actor="test", reason="regression",
                                       alert=sent.append)
    assert (rolled.deployment.in_service, rolled.deployment.canary, rolled.unloaded) == ("v1.0.0", None, ("v1.1.0",))
    assert set(inference_server.loaded) == {"babylon-agent-v1.0.0"}

    # the version in service is rolled back to the base it replaced: nothing to load, its adapter unloaded
    rolled = roll_back(engine, inference, to=None, actor="test", reason="back to base",
                       alert=sent.append)
    assert (rolled.deployment.in_service, rolled.health, rolled.unloaded) == (None, None, ("v1.0.0",))
    assert inference_server.loaded == {}

    # bringing v1.0.0 back loads and checks it first; a fault refuses the rollback and changes nothing
    inference_server.answer("garbage")
    with pytest.raises(InferenceError, match="failed its health check"):
        roll_back(engine, inference, to="v1.0.0", actor="test", reason="restore", alert=sent.append)
    assert read_deployment(engine).in_service is None and inference_server.loaded == {}
    inference_server.answer('{"action": "HOLD"}')
    restored = roll_back(engine, inference, to="v1.0.0", actor="test", reason="restore", alert=sent.append)
    assert restored.deployment.in_service == "v1.0.0" and restored.health.model == "babylon-agent-v1.0.0"
    assert list(inference_server.loaded) == ["babylon-agent-v1.0.0"] and statuses(engine)["v1.0.0"] == "deployed"
    assert [(a.key.split(":")[0], a.severity) for a in sent] == [
        ("deploy", "info"), ("promote", "info"), ("deploy", "info"), ("rollback", "error"), ("rollback", "error"),
        ("adapter-fault", "error"), ("rollback", "error")]
    assert sent[3].key == f"rollback:v1.1.0:{rolled_canary.deployment.changed_at.isoformat()}"
    assert sent[3].title == "Canary v1.1.0 rolled back: v1.0.0 serves all agents again"
    assert sent[4].title == "v1.0.0 rolled back: the base serves all agents again"
    assert sent[5].title == "v1.0.0 not brought back: its adapter failed"
    assert len({a.key for a in sent}) == len(sent)


def test_a_failed_unload_still_rolls_back_with_a_warning(engine, inference_server, sent) -> None:
    for version in ("v1.0.0", "v1.1.0"):
        inference_server.publish(version)
    inference = server_inference(inference_server)
    deploy_canary(engine, inference, "v1.0.0", 0.2, actor="test", reason="first", alert=sent.append)
    inference_server.fail("unload_lora_adapter", 500)
    rolled = roll_back(engine, inference, to=None, actor="test", reason="regression", alert=sent.append)
    assert (rolled.deployment.in_service, rolled.deployment.canary, rolled.unloaded) == (None, None, ())
    assert rolled.warnings and "v1.0.0 is out of service but its adapter stays loaded" in rolled.warnings[0]
    assert statuses(engine)["v1.0.0"] == "archived" and "babylon-agent-v1.0.0" in inference_server.loaded
    assert sent[-1].severity == "error" and rolled.warnings[0] in sent[-1].text
