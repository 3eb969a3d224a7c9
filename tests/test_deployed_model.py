"""`deployed_model`, `deploy_job`, `promote_job`, `rollback_job` materialized against a real database and the
loopback inference server: the canary starts only with an answering adapter, refusals and faults fail the
run with a clear message and change nothing, and every move is reported on the versions' partitions."""

from __future__ import annotations

import json
import re
from datetime import datetime

import dagster as dg
import pytest
import sqlalchemy as sa

from babylon_pipeline.assets.deployed_model import deployed_model
from babylon_pipeline.jobs.deployment import promote_job, rollback_job
from babylon_pipeline.partitions import model_version_partitions
from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.serving.current_json import read_current_json
from babylon_pipeline.serving.state import deployment_history, read_deployment
from babylon_pipeline.storage import open_object_store
from babylon_pipeline.store.migrate import upgrade
from tests.inference_server import InferenceServer, inference_server  # noqa: F401
from tests.test_serving_state import add_model, statuses

T0 = datetime(2025, 11, 15, 12, 0)
VERSIONS = ("v1.0.0", "v1.1.0")


@pytest.fixture
def engine(empty_db: sa.Engine) -> sa.Engine:
    upgrade(empty_db)
    for i, version in enumerate(VERSIONS):
        add_model(empty_db, version, created=T0.replace(hour=12 + i))
    return empty_db


@pytest.fixture
def instance() -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(model_version_partitions.name, list(VERSIONS))
    return instance


def resources(engine: sa.Engine, server: InferenceServer, tmp_path) -> dict:
    objects = ObjectStoreResource(url=tmp_path.as_uri())
    return {
        "trajectory_store": TrajectoryStore(database_url=engine.url.render_as_string(hide_password=False)),
        "object_store": objects,
        "inference": InferenceResource(base_url=server.base_url, adapter_root="/adapters", api_key="sk-x",
                                       max_retries=0, timeout_s=5),
        "notifier": NotifierResource(object_store=objects, jsonl_path=str(tmp_path / "alerts.jsonl")),
    }


def alerts(tmp_path) -> list[dict]:
    """What the notifier sent, from its `alerts.jsonl`."""
    path = tmp_path / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def deploy(engine, server, tmp_path, instance, version: str, fraction: float | None = None):
    config = {} if fraction is None else {"fraction": fraction}
    return dg.materialize([deployed_model], partition_key=version, instance=instance, raise_on_error=False,
                          resources=resources(engine, server, tmp_path),
                          run_config={"ops": {"deployed_model": {"config": config}}})


def failure(result: dg.ExecuteInProcessResult) -> str:
    [event] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return event.step_failure_data.error.message


def deployed_events(result: dg.ExecuteInProcessResult, node: str) -> list[dg.AssetMaterialization]:
    """The node's `deployed_model` materializations (it records `model_versions` too)."""
    return [e for e in result.asset_materializations_for_node(node) if e.asset_key == dg.AssetKey("deployed_model")]


def check_results(result: dg.ExecuteInProcessResult) -> list[dg.AssetCheckEvaluation]:
    return [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]


def test_deploy_starts_a_canary_at_ten_percent_with_an_answering_adapter(engine, inference_server, tmp_path,
                                                                        instance) -> None:
    inference_server.publish("v1.0.0")
    result = deploy(engine, inference_server, tmp_path, instance, "v1.0.0")
    assert result.success
    deployment = read_deployment(engine)
    assert (deployment.canary, deployment.canary_fraction) == ("v1.0.0", 0.1)
    [check] = check_results(result)
    assert check.passed and check.metadata["adapter"].value == "babylon-agent-v1.0.0"
    [materialization] = deployed_events(result, "deployed_model")
    metadata = materialization.metadata
    assert {k: metadata[k].value for k in ("fraction", "role", "stage", "in_service", "canary")} == \
        {"fraction": 0.1, "role": "canary", "stage": 0, "in_service": "base", "canary": "v1.0.0"}
    assert "| canary" in metadata["history"].value and "v1.0.0" in metadata["history"].value
    published = read_current_json(open_object_store(tmp_path.as_uri()))
    assert (published.canary, published.canary_fraction, published.salt) == ("v1.0.0", 0.1, deployment.salt)
    [sent] = alerts(tmp_path)
    assert (sent["key"], sent["severity"]) == (f"deploy:v1.0.0:{deployment.changed_at.isoformat()}", "info")
    assert sent["fields"]["actor"].startswith("deploy_job run ") and "Reason: deployed by hand" in sent["text"]


@pytest.mark.parametrize(("setup", "fraction", "message"), [
    ("unevaluated", None, "v1.0.0 is not deployed: v1.0.0 was never evaluated"),
    ("worse", None, "v1.0.0 is not deployed: v1.0.0 was judged worse"),
])
def test_deploy_refuses_what_makes_no_sense(engine, inference_server, tmp_path, instance, setup, fraction,
                                            message) -> None:
    metrics = {"unevaluated": None, "worse": '{"verdict": "worse", "guardrails_passed": true}'}
    if setup in metrics:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE trained_models SET \"evalMetrics\" = :m"), {"m": metrics[setup]})
    inference_server.publish("v1.0.0")
    result = deploy(engine, inference_server, tmp_path, instance, "v1.0.0", fraction)
    assert not result.success
    assert re.search(message, failure(result))
    assert read_deployment(engine).canary is None and deployment_history(engine).empty
    assert inference_server.requests == [] and read_current_json(open_object_store(tmp_path.as_uri())) is None
    assert alerts(tmp_path) == []


def test_a_second_canary_is_refused(engine, inference_server, tmp_path, instance) -> None:
    for version in VERSIONS:
        inference_server.publish(version)
    assert deploy(engine, inference_server, tmp_path, instance, "v1.0.0").success
    result = deploy(engine, inference_server, tmp_path, instance, "v1.1.0", 0.5)
    assert not result.success and "canary v1.0.0 is running at 10%" in failure(result)
    assert statuses(engine)["v1.1.0"] == "candidate" and "babylon-agent-v1.1.0" not in inference_server.loaded


def test_an_adapter_that_answers_garbage_fails_the_check_and_deploys_nothing(engine, inference_server, tmp_path,
                                                                              instance) -> None:
    inference_server.publish("v1.0.0")
    inference_server.answer("lol")
    result = deploy(engine, inference_server, tmp_path, instance, "v1.0.0")
    assert not result.success
    assert "v1.0.0 is not deployed, the deployment is unchanged: babylon-agent-v1.0.0 failed its health check" \
        in failure(result)
    [check] = check_results(result)
    assert not check.passed and "no game action" in check.metadata["error"].value
    assert read_deployment(engine).canary is None and statuses(engine)["v1.0.0"] == "candidate"
    assert inference_server.loaded == {} and "sk-x" not in failure(result)
    [sent] = alerts(tmp_path)
    assert (sent["key"], sent["severity"], sent["title"]) == (
        "adapter-fault:deploy:v1.0.0:never", "error", "v1.0.0 not deployed: its adapter failed")
    assert "failed its health check" in sent["text"] and "sk-x" not in json.dumps(sent)


def test_promote_and_rollback_jobs_move_the_service_and_report_each_version(engine, inference_server, tmp_path,
                                                                            instance) -> None:
    for version in VERSIONS:
        inference_server.publish(version)
    res = resources(engine, inference_server, tmp_path)
    assert deploy(engine, inference_server, tmp_path, instance, "v1.0.0").success

    wrong = promote_job.execute_in_process(instance=instance, resources=res, raise_on_error=False,
                                           run_config={"ops": {"promote_canary_op": {"config": {"version": "v1.1.0"}}}})
    assert not wrong.success and "the canary is v1.0.0, not v1.1.0" in failure(wrong)
    promoted = promote_job.execute_in_process(instance=instance, resources=res)
    assert read_deployment(engine).in_service == "v1.0.0"
    [event] = deployed_events(promoted, "promote_canary_op")
    assert (event.partition, event.metadata["role"].value, event.metadata["fraction"].value) == \
        ("v1.0.0", "in service", 1.0)

    assert deploy(engine, inference_server, tmp_path, instance, "v1.1.0", 0.5).success
    rolled = rollback_job.execute_in_process(instance=instance, resources=res,
                                             run_config={"ops": {"rollback_op": {"config": {"reason": "bad"}}}})
    reported = {e.partition: e.metadata["role"].value for e in deployed_events(rolled, "rollback_op")}
    assert reported == {"v1.1.0": "out of service", "v1.0.0": "in service"}
    assert set(inference_server.loaded) == {"babylon-agent-v1.0.0"} and statuses(engine)["v1.1.0"] == "archived"
    assert deployment_history(engine).iloc[-1][["action", "reason"]].tolist() == ["rollback", "bad"]
    assert read_current_json(open_object_store(tmp_path.as_uri())) == read_deployment(engine)

    nothing = rollback_job.execute_in_process(instance=instance, resources=res, raise_on_error=False,
                                              run_config={"ops": {"rollback_op": {"config": {"to": "v1.1.0"}}}})
    assert not nothing.success and "refused, nothing changed: v1.1.0 is archived and never served" in failure(nothing)
    assert read_deployment(engine).in_service == "v1.0.0"
    sent = alerts(tmp_path)
    assert [(a["key"].split(":")[0], a["severity"]) for a in sent] == [
        ("deploy", "info"), ("promote", "info"), ("deploy", "info"), ("rollback", "error")]
    assert sent[1]["title"] == "v1.0.0 promoted: it serves all agents" and "Reason: bad" in sent[3]["text"]
    assert sent[3]["title"] == "Canary v1.1.0 rolled back: v1.0.0 serves all agents again"
