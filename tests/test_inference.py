"""Adapter loading on an OpenAI-compatible server (vLLM's runtime-LoRA endpoints), against a loopback server.

Every fault (server down, an error status, an answer that is no game action, another model answering)
is one `InferenceError` whose message names the adapter and never the key, and leaves nothing loaded
that was not loaded before.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from babylon_pipeline.serving.inference import InferenceError, ServerInference
from babylon_pipeline.sim import simulate
from babylon_pipeline.store.reader import read_window
from tests.inference_server import BASE, InferenceServer, inference_server  # noqa: F401
from tests.judge_server import unused_port_url

KEY = "sk-inference-secret-123"
NAME = "babylon-agent-v1.0.0"


def client(server: InferenceServer, **options) -> ServerInference:
    return ServerInference(server.base_url, "/adapters/", KEY, max_retries=0, timeout_s=5, **options)


def test_load_check_and_unload_speak_vllms_endpoints(inference_server: InferenceServer) -> None:
    inference_server.publish("v1.0.0")
    inference = client(inference_server)

    assert inference.load("v1.0.0") is True
    assert inference_server.loaded == {NAME: "/adapters/v1.0.0"}
    [load] = inference_server.paths("/v1/load_lora_adapter")
    assert load.body == {"lora_name": NAME, "lora_path": "/adapters/v1.0.0"} and load.authorization == f"Bearer {KEY}"
    assert inference.load("v1.0.0") is False  # already listed: not loaded twice (vLLM would refuse the name)
    assert len(inference_server.paths("/v1/load_lora_adapter")) == 1

    check = inference.health_check("v1.0.0")
    assert (check.version, check.model, check.action_type) == ("v1.0.0", NAME, "HOLD")
    [chat] = inference_server.paths("/v1/chat/completions")
    assert chat.body["model"] == NAME and chat.body["temperature"] == 0.0
    assert "HOLD" in chat.body["messages"][0]["content"]  # the simulator's own system prompt, with its actions

    assert inference.unload("v1.0.0") is True
    assert inference_server.loaded == {}
    assert [r.body for r in inference_server.paths("/v1/unload_lora_adapter")] == [{"lora_name": NAME}]
    assert inference.unload("v1.0.0") is False


def test_a_server_that_is_down_is_one_clear_error() -> None:
    inference = ServerInference(unused_port_url(), "/adapters", KEY, max_retries=0, timeout_s=2)
    for attempt in (lambda: inference.load("v1.0.0"), lambda: inference.health_check("v1.0.0")):
        with pytest.raises(InferenceError, match=r"inference server at 127\.0\.0\.1:\d+") as caught:
            attempt()
        assert KEY not in str(caught.value)
    with pytest.raises(InferenceError, match="unreachable: could not list its models"):
        inference.load("v1.0.0")


def test_a_refused_load_says_why_and_loads_nothing(inference_server: InferenceServer) -> None:
    inference = client(inference_server)
    with pytest.raises(InferenceError, match=r"refused to load babylon-agent-v1\.0\.0 from /adapters/v1\.0\.0: "
                                             r"HTTP 400: .*No adapter found for /adapters/v1\.0\.0"):
        inference.load("v1.0.0")  # the adapter is not where the server reads adapters from
    assert inference_server.loaded == {}


def test_an_error_body_echoing_the_key_never_reaches_the_message(inference_server: InferenceServer) -> None:
    inference_server.publish("v1.0.0")
    inference_server.fail("load_lora_adapter", 500, echo_auth=True)
    with pytest.raises(InferenceError, match="HTTP 500: scripted 500 for Bearer \\*\\*\\*") as caught:
        client(inference_server).load("v1.0.0")
    assert KEY not in str(caught.value) and inference_server.loaded == {}
    inference_server.fail("chat/completions", 503, echo_auth=True)
    inference_server.publish("v1.0.0")
    client(inference_server).load("v1.0.0")
    with pytest.raises(InferenceError, match="refused the health check of babylon-agent-v1.0.0: HTTP 503") as caught:
        client(inference_server).health_check("v1.0.0")
    assert KEY not in str(caught.value)


def test_a_health_check_answered_with_no_game_action_fails(inference_server: InferenceServer) -> None:
    inference_server.publish("v1.0.0")
    inference = client(inference_server)
    inference.load("v1.0.0")
    inference_server.answer("I like turtles.")
    with pytest.raises(InferenceError, match=r"babylon-agent-v1\.0\.0 failed its health check .*no game action "
                                             r"in its answer \(no JSON action found in the response; it answered "
                                             r"'I like turtles\.'\)"):
        inference.health_check("v1.0.0")
    inference_server.answer('{"action": "LAUNCH_ROCKET"}')
    with pytest.raises(InferenceError, match="unknown action 'LAUNCH_ROCKET'"):
        inference.health_check("v1.0.0")


def test_a_proxys_html_page_is_no_answer(inference_server: InferenceServer) -> None:
    inference_server.publish("v1.0.0")
    inference = client(inference_server)
    inference_server.fail("models", 200, html=True)
    with pytest.raises(InferenceError, match="listed its models in an unreadable shape"):
        inference.load("v1.0.0")
    inference.load("v1.0.0")
    inference_server.fail("chat/completions", 200, html=True)
    with pytest.raises(InferenceError, match="health check of babylon-agent-v1.0.0 with no chat completion"):
        inference.health_check("v1.0.0")


def test_a_health_check_answered_by_another_model_or_an_unloaded_name_fails(inference_server: InferenceServer) -> None:
    inference_server.publish("v1.0.0")
    inference = client(inference_server)
    with pytest.raises(InferenceError, match=r"refused the health check of babylon-agent-v1\.0\.0: HTTP 404: "
                                             r"The model `babylon-agent-v1\.0\.0` does not exist"):
        inference.health_check("v1.0.0")
    inference.load("v1.0.0")
    inference_server.answer_model = BASE  # a proxy that falls back to the base: the adapter is not serving
    with pytest.raises(InferenceError, match="as 'babylon-base': the adapter is not what answers its name"):
        inference.health_check("v1.0.0")


def test_versions_are_checked_before_any_request(inference_server: InferenceServer) -> None:
    with pytest.raises(InferenceError, match="not a model version"):
        client(inference_server).load("../etc")
    assert inference_server.requests == []


def test_agents_answered_by_an_adapter_record_its_version(inference_server: InferenceServer, db) -> None:
    inference_server.publish("v1.0.0")
    inference = client(inference_server)
    inference.load("v1.0.0")
    policies = {"v1.0.0": inference.policy("v1.0.0"), None: inference.policy(None)}
    simulate(db, hours=1, agents=4, seed=3, start=datetime(2025, 11, 15, 10), steps_per_window=2,
             policy_for=lambda agent: policies["v1.0.0" if agent.index % 2 else None])
    calls = [(t.agent_id, c.model, c.model_version) for t in read_window(db, "2025-11-15T10:00")
             for s in t.steps for c in s.llm_calls]
    assert len(calls) == 8
    assert {(model, version) for _, model, version in calls} == {(NAME, "v1.0.0"), (BASE, None)}
    assert {c.body["model"] for c in inference_server.paths("/v1/chat/completions")} == {NAME, BASE}


def test_the_resource_picks_the_server_or_the_embedded_model_and_refuses_half(
        monkeypatch, tmp_path, inference_server: InferenceServer) -> None:
    import dagster as dg

    from babylon_pipeline.definitions import build_definitions
    from babylon_pipeline.resources.inference import InferenceResource, inference_resource_from_env
    from babylon_pipeline.serving.embedded import EmbeddedInference
    from babylon_pipeline.storage import open_object_store

    store = open_object_store(tmp_path.as_uri())
    for name in ("BABYLON_INFERENCE_BASE_URL", "BABYLON_INFERENCE_API_KEY", "BABYLON_INFERENCE_ADAPTER_ROOT"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(build_definitions().resources["inference"], InferenceResource)
    assert isinstance(inference_resource_from_env().inference(store), EmbeddedInference)

    monkeypatch.setenv("BABYLON_INFERENCE_BASE_URL", inference_server.base_url)
    monkeypatch.setenv("BABYLON_INFERENCE_API_KEY", KEY)
    with dg.build_resources({"inference": inference_resource_from_env()}) as resources:
        with pytest.raises(dg.Failure, match="half configured: BABYLON_INFERENCE_BASE_URL set, "
                                             "BABYLON_INFERENCE_ADAPTER_ROOT not") as caught:
            resources.inference.inference(store)
        assert KEY not in str(caught.value) and inference_server.base_url not in str(caught.value)

    monkeypatch.setenv("BABYLON_INFERENCE_ADAPTER_ROOT", "/adapters")
    inference_server.publish("v1.0.0")
    with dg.build_resources({"inference": inference_resource_from_env()}) as resources:
        served = resources.inference.inference(store)
        assert resources.inference.describe() == f"inference server at {served.host}" and KEY not in repr(served)
        assert served.load("v1.0.0") and served.health_check("v1.0.0").model == NAME
    assert inference_server.paths("/v1/load_lora_adapter")[0].authorization == f"Bearer {KEY}"
