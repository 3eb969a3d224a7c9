"""The automatic release path: `serving.release` decides the next step, `release_sensor` asks for it once.

The sensor runs against a real database (SQLite and Postgres), a Dagster instance and the loopback
inference server: a registered version is sent to evaluation, then (once it passed against the model in
service) deployed by the `deploy_job` run it requests, never twice; `BABYLON_DEPLOY_APPROVAL=manual`
stops it before the canary starts; a failed deploy run is named, not repeated.
"""

from __future__ import annotations

from datetime import datetime

import dagster as dg
import pytest
import sqlalchemy as sa

from babylon_pipeline.assets.deployed_model import deployed_model
from babylon_pipeline.partitions import model_version_partitions
from babylon_pipeline.sensors.release import release_sensor
from babylon_pipeline.serving.release import Candidate, Step, next_release_step, release_candidates
from babylon_pipeline.serving.state import Deployment, read_deployment, start_canary
from babylon_pipeline.store.migrate import upgrade
from tests.inference_server import InferenceServer, inference_server  # noqa: F401
from tests.test_deployed_model import resources
from tests.test_serving_state import add_model, evaluate

T0 = datetime(2025, 11, 15, 12, 0)
PASSED = {"verdict": "no_difference", "guardrails_passed": True, "champion": "base"}


def deployment(in_service: str | None = None, canary: str | None = None) -> Deployment:
    return Deployment(in_service, canary, 0.1 if canary else 0.0, 0, "salt", T0 if canary else None, T0)


def candidate(version: str, verdict: str | None = None, champion: str | None = "base",
              guardrails: bool = True) -> Candidate:
    return Candidate(version, T0, verdict, champion if verdict else None, guardrails)


@pytest.mark.parametrize(("candidates", "state", "manual", "step", "key", "says"), [
    ([], deployment(), False, Step.WAIT, None, "no candidate registered after base: nothing to release"),
    ([], deployment("v1.0.0", "v1.1.0"), False, Step.WAIT, None, "(canary v1.1.0 is running)"),
    ([candidate("v1.2.0"), candidate("v1.1.0", "better")], deployment(), False, Step.EVALUATE,
     "evaluate:v1.2.0:base", "v1.2.0 is evaluated against base"),
    ([candidate("v1.2.0", "better", champion="base")], deployment("v1.1.0"), False, Step.EVALUATE,
     "evaluate:v1.2.0:v1.1.0", "against v1.1.0 again (its verdict was against base)"),
    ([candidate("v1.2.0", "worse")], deployment(), False, Step.WAIT, None, "v1.2.0 judged worse than base"),
    ([candidate("v1.2.0", "better", guardrails=False)], deployment(), False, Step.WAIT, None,
     "breached a guardrail"),
    ([candidate("v1.2.0", "better", champion="v1.0.0")], deployment("v1.0.0", "v1.1.0"), False, Step.WAIT, None,
     "waits for canary v1.1.0 to be promoted or rolled back"),
    ([candidate("v1.2.0", "no_difference")], deployment(), True, Step.WAIT, None,
     "BABYLON_DEPLOY_APPROVAL=manual: waiting for a person to start it (`babylon deploy v1.2.0`"),
    ([candidate("v1.2.0", "no_difference")], deployment(), False, Step.DEPLOY, "deploy:v1.2.0",
     "v1.2.0 passed its evaluation (no_difference against base): started as a canary"),
])
def test_the_next_step_of_the_release(candidates, state, manual, step, key, says) -> None:
    decided = next_release_step(candidates, state, manual=manual)
    assert (decided.step, decided.run_key) == (step, key)
    assert says in decided.explanation


def test_only_candidates_registered_after_the_version_in_service_are_released(empty_db: sa.Engine) -> None:
    upgrade(empty_db)
    add_model(empty_db, "v1.0.0", created=T0, metrics=None)  # older than what serves: overtaken
    add_model(empty_db, "v1.1.0", created=T0.replace(hour=13), status="deployed", deployed=T0.replace(hour=14))
    add_model(empty_db, "v1.2.0", created=T0.replace(hour=15), metrics=PASSED)
    add_model(empty_db, "v1.3.0", created=T0.replace(hour=16), metrics=None)
    with empty_db.begin() as conn:  # an app's database may hold the JSON as text
        conn.execute(sa.text("UPDATE trained_models SET \"evalMetrics\" = :m WHERE version = 'v1.2.0'"),
                     {"m": '{"verdict": "better", "guardrails_passed": true, "champion": "v1.1.0"}'})
    state = read_deployment(empty_db)
    assert state.in_service == "v1.1.0"
    found = release_candidates(empty_db, state)
    assert [c.version for c in found] == ["v1.3.0", "v1.2.0"]
    assert (found[1].verdict, found[1].champion, found[1].guardrails_passed) == ("better", "v1.1.0", True)
    assert found[0].verdict is None


@pytest.fixture
def release(empty_db: sa.Engine, inference_server: InferenceServer, tmp_path):
    """A store with one registered version, the instance knowing its partition, and a sensor tick."""
    upgrade(empty_db)
    add_model(empty_db, "v1.0.0", created=T0, metrics=None)
    inference_server.publish("v1.0.0")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(model_version_partitions.name, ["v1.0.0"])
    bound = resources(empty_db, inference_server, tmp_path)

    def tick() -> dg.RunRequest | dg.SkipReason:
        with dg.build_sensor_context(instance=instance, resources=bound, sensor_name="release_sensor") as context:
            return release_sensor(context)

    def run(request: dg.RunRequest) -> dg.ExecuteInProcessResult:
        """The deploy run the daemon would launch for `request`, with its tags (run key, sensor)."""
        tags = {**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": "release_sensor"}
        return dg.materialize([deployed_model], partition_key=request.partition_key, instance=instance,
                              resources=bound, run_config=request.run_config, tags=tags, raise_on_error=False)

    return tick, run


def test_a_registered_version_is_evaluated_then_deployed_once(empty_db: sa.Engine, release) -> None:
    tick, run = release
    ask = tick()
    assert isinstance(ask, dg.RunRequest)
    assert (ask.job_name, ask.partition_key, ask.run_key) == ("evaluation_job", "v1.0.0", "evaluate:v1.0.0:base")
    assert isinstance(tick(), dg.RunRequest)  # no verdict yet: the same key, which the daemon does not run twice

    evaluate(empty_db, "v1.0.0", PASSED)  # what the evaluation run writes
    ask = tick()
    assert isinstance(ask, dg.RunRequest)
    assert (ask.job_name, ask.partition_key, ask.run_key) == ("deploy_job", "v1.0.0", "deploy:v1.0.0")
    assert run(ask).success
    state = read_deployment(empty_db)
    assert (state.canary, state.canary_fraction) == ("v1.0.0", 0.1)
    waiting = tick()
    assert isinstance(waiting, dg.SkipReason) and "(canary v1.0.0 is running)" in waiting.skip_message


def test_manual_approval_stops_before_the_canary_starts(empty_db: sa.Engine, release, monkeypatch) -> None:
    tick, _ = release
    evaluate(empty_db, "v1.0.0", PASSED)
    monkeypatch.setenv("BABYLON_DEPLOY_APPROVAL", "manual")
    waiting = tick()
    assert isinstance(waiting, dg.SkipReason)
    assert "waiting for a person to start it (`babylon deploy v1.0.0`" in waiting.skip_message
    assert read_deployment(empty_db).canary is None
    monkeypatch.setenv("BABYLON_DEPLOY_APPROVAL", "sometimes")
    with pytest.raises(ValueError, match="BABYLON_DEPLOY_APPROVAL must be auto or manual"):
        tick()


def test_a_failed_deploy_run_is_named_and_not_asked_for_again(empty_db: sa.Engine, release,
                                                              inference_server: InferenceServer) -> None:
    tick, run = release
    evaluate(empty_db, "v1.0.0", PASSED)
    ask = tick()
    inference_server.fail("load_lora_adapter", 500)
    failed = run(ask)
    assert not failed.success and read_deployment(empty_db).canary is None
    after = tick()
    assert isinstance(after, dg.SkipReason)
    assert f"run {failed.run_id[:8]} (FAILURE) was started for it; re-run it by hand" in after.skip_message


def test_a_version_deployed_by_a_person_meanwhile_is_not_deployed_again(empty_db: sa.Engine, release) -> None:
    tick, _ = release
    evaluate(empty_db, "v1.0.0", PASSED)
    start_canary(empty_db, "v1.0.0", 0.2, actor="a person", reason="by hand")
    waiting = tick()
    assert isinstance(waiting, dg.SkipReason) and "(canary v1.0.0 is running)" in waiting.skip_message
