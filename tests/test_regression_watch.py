"""The regression watch sensor against real windows: the window assets write `arms.json` from recorded
trajectories, the sensor reads them and changes the deployment through `serving.deploy` on the loopback
inference server (adapters checked before a promotion, unloaded after a rollback), on SQLite and Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import dagster as dg
import pytest
import sqlalchemy as sa

from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sensors.regression_watch import regression_watch_sensor
from babylon_pipeline.serving.current_json import read_current_json
from babylon_pipeline.serving.deploy import deploy_canary
from babylon_pipeline.serving.inference import ServerInference
from babylon_pipeline.serving.state import deployment_history, read_deployment, set_canary_fraction
from babylon_pipeline.serving.watch import Action, WatchConfig, decide
from babylon_pipeline.serving.watcher import apply_decision, read_canary_arms, watch_tick
from babylon_pipeline.storage.factory import open_object_store
from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.registry import model_in_service
from babylon_pipeline.windows import WINDOW, window_of, window_start
from tests.canary_windows import Behaviour, materialize_rewards, record_arms
from tests.inference_server import InferenceServer, inference_server  # noqa: F401

GOOD = {"verdict": "no_difference", "guardrails_passed": True}
SMALL = {"BABYLON_CANARY_MIN_TRAJECTORIES": "40", "BABYLON_CANARY_MIN_STAGE_MINUTES": "0",
         "BABYLON_CANARY_STARVATION_MINUTES": "600"}


def _add_model(engine: sa.Engine, version: str, status: str, created: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.trained_models).values(
            id=f"tm-{version}", modelId=f"babylon-agent-{version}", version=version, baseModel="base", status=status,
            storagePath=f"models/{version}", evalMetrics=GOOD, createdAt=created, updatedAt=created,
            deployedAt=created if status == "deployed" else None))


@pytest.fixture
def watch(empty_db, tmp_path, monkeypatch, inference_server: InferenceServer):
    """v1.1.0 serves everyone; v1.2.0 has run as a 10 % canary since the start of the window three hours ago,
    both adapters loaded on the loopback inference server."""
    for name, value in SMALL.items():
        monkeypatch.setenv(name, value)
    upgrade(empty_db)
    this_hour = window_start(window_of(datetime.now(UTC)))
    started = this_hour - 3 * WINDOW
    _add_model(empty_db, "v1.1.0", "deployed", started - timedelta(days=1))
    _add_model(empty_db, "v1.2.0", "candidate", started - timedelta(hours=1))
    for version in ("v1.1.0", "v1.2.0"):
        inference_server.publish(version)
    inference = ServerInference(inference_server.base_url, "/adapters", max_retries=0, timeout_s=5)
    inference.load("v1.1.0")
    deploy_canary(empty_db, inference, "v1.2.0", 0.1, actor="test", reason="passed evaluation", now=started,
                  alert=lambda alert: None)
    url = (tmp_path / "objects").as_uri()
    objects = ObjectStoreResource(url=url)
    resources = {"trajectory_store": TrajectoryStore(database_url=empty_db.url.render_as_string(hide_password=False)),
                 "object_store": objects,
                 "notifier": NotifierResource(object_store=objects, jsonl_path=str(tmp_path / "alerts.jsonl")),
                 "inference": InferenceResource(base_url=inference_server.base_url, adapter_root="/adapters",
                                                max_retries=0, timeout_s=5)}
    instance = dg.DagsterInstance.ephemeral()

    def tick() -> str:
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            result = regression_watch_sensor(context)
        assert isinstance(result, dg.SkipReason)
        return result.skip_message

    def window(hour: int, arms: dict) -> None:
        """Agents' trajectories in the canary's `hour`-th window, then its window assets."""
        window_id = window_of(started + hour * WINDOW)
        record_arms(empty_db, window_id, arms)
        materialize_rewards(resources, window_id, instance)

    def alerts() -> list[dict]:
        path = tmp_path / "alerts.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    return SimpleNamespace(tick=tick, window=window, alerts=alerts, engine=empty_db, store=open_object_store(url),
                           started=started, server=inference_server, inference=inference)


def test_a_good_canary_is_promoted_stage_by_stage(watch):
    watch.window(0, {"v1.2.0": Behaviour(45), "v1.1.0": Behaviour(60)})
    first = watch.tick()
    assert first.startswith("canary v1.2.0 at 10 %: 45/40 trajectories (control v1.1.0: 60), diff ")
    assert "; next_stage: no regression with enough data: the next stage (50 %) [4 windows, 3 not scored yet" in first
    assert read_deployment(watch.engine).canary_fraction == 0.5
    second = watch.tick()
    assert "; promote: no regression with enough data: promotion to all agents" in second
    deployment = read_deployment(watch.engine)
    assert (deployment.in_service, deployment.canary) == ("v1.2.0", None) and model_in_service(watch.engine).version == "v1.2.0"
    assert watch.tick() == "no canary running; v1.2.0 serves all agents"
    history = deployment_history(watch.engine)
    watched = history[history["actor"] == "regression_watch"]
    assert list(watched["action"]) == ["stage", "promote"] and watched["reason"].iloc[0].startswith("canary v1.2.0 at 10 %")
    # promoted through serving.deploy: the canary's adapter answered first, the replaced one was unloaded
    assert [r.body.get("model") for r in watch.server.paths("/v1/chat/completions")][-1] == "babylon-agent-v1.2.0"
    assert set(watch.server.loaded) == {"babylon-agent-v1.2.0"} and read_current_json(watch.store) == deployment
    stage, promoted = watch.alerts()
    assert (stage["key"], stage["severity"], stage["title"]) == (
        f"stage:v1.2.0:{history['at'].iloc[-2].isoformat()}", "info", "Canary v1.2.0 raised to 50% of agents")
    assert (promoted["key"], promoted["severity"]) == (f"promote:v1.2.0:{deployment.changed_at.isoformat()}", "info")
    assert promoted["fields"]["watch_action"] == "promote" and promoted["fields"]["actor"] == "regression_watch"


def test_a_promotion_whose_adapter_fails_leaves_the_service_unchanged_and_alerts_once(watch):
    watch.window(0, {"v1.2.0": Behaviour(45), "v1.1.0": Behaviour(60)})
    watch.tick()  # the next stage: 50 %
    watch.server.answer("The markets look great today!")
    for _ in range(2):  # the next tick tries again: still one alert for the incident
        reason = watch.tick()
        assert "; promote: no regression with enough data" in reason and "; not applied: " in reason
        assert "failed its health check" in reason
        deployment = read_deployment(watch.engine)
        assert (deployment.in_service, deployment.canary, deployment.canary_fraction) == ("v1.1.0", "v1.2.0", 0.5)
    faults = [a for a in watch.alerts() if a["key"].startswith("adapter-fault:")]
    assert [(a["key"], a["severity"]) for a in faults] == [
        (f"adapter-fault:promote:v1.2.0:{deployment.changed_at.isoformat()}", "error")]
    assert "Nothing changed: canary v1.2.0 at 50% stage 1, v1.1.0 the rest." in faults[0]["text"]
    assert {"babylon-agent-v1.1.0", "babylon-agent-v1.2.0"} <= set(watch.server.loaded)  # both still serve
    watch.server.answer('{"action": "HOLD"}')
    assert "; promote: " in watch.tick() and read_deployment(watch.engine).in_service == "v1.2.0"


def test_no_promotion_without_enough_data(watch):
    watch.window(0, {"v1.2.0": Behaviour(12), "v1.1.0": Behaviour(120)})
    reason = watch.tick()
    assert "12/40 trajectories (control v1.1.0: 120)" in reason and "hold: waiting for data: canary 12/40" in reason
    assert read_deployment(watch.engine).canary_fraction == 0.1 and watch.alerts() == []


def test_an_injected_regression_is_rolled_back_within_one_tick_of_the_window_showing_it(watch, monkeypatch):
    monkeypatch.setenv("BABYLON_DEPLOY_APPROVAL", "manual")  # promotion waits for a person; rollback does not
    watch.window(0, {"v1.2.0": Behaviour(20), "v1.1.0": Behaviour(30)})
    assert "hold: waiting for data" in watch.tick()
    watch.window(1, {"v1.2.0": Behaviour(30, right=0.0, failed=0.3), "v1.1.0": Behaviour(45)})
    reason = watch.tick()
    assert "; rollback: outcome reward significantly lower" in reason
    deployment = read_deployment(watch.engine)
    assert (deployment.in_service, deployment.canary) == ("v1.1.0", None)
    with watch.engine.connect() as conn:
        status = conn.scalar(sa.select(tables.trained_models.c.status).where(tables.trained_models.c.version == "v1.2.0"))
    assert status == "archived"
    explanation = deployment_history(watch.engine)["reason"].iloc[-1]
    assert explanation.startswith("canary v1.2.0 at 10 %: 50/40 trajectories") and explanation in reason
    [sent] = watch.alerts()  # through the notifier resource
    assert (sent["key"], sent["severity"]) == (f"rollback:v1.2.0:{deployment.changed_at.isoformat()}", "error")
    assert explanation in sent["text"] and sent["fields"]["watch_action"] == "rollback"
    # the rolled-back adapter was unloaded on the inference server after the commit; the control's stays
    assert [r.body for r in watch.server.paths("/v1/unload_lora_adapter")] == [{"lora_name": "babylon-agent-v1.2.0"}]
    assert set(watch.server.loaded) == {"babylon-agent-v1.1.0"} and read_current_json(watch.store) == deployment


def test_a_canary_without_traffic_alerts_starvation_and_a_rollback_alerts(watch):
    watch.window(0, {"v1.1.0": Behaviour(80)})
    sent = []
    store, config = watch.store, WatchConfig(min_trajectories=40)  # starved after the default 180 min
    early = watch_tick(watch.engine, store, watch.inference, config, watch.started + timedelta(minutes=90),
                       sent.append)
    assert early.decision.action is Action.HOLD and sent == []
    starved = watch_tick(watch.engine, store, watch.inference, config, watch.started + timedelta(minutes=200),
                         sent.append)
    assert starved.decision.action is Action.STARVED and not starved.applied
    assert [a.key for a in sent] == [f"canary-starved:v1.2.0:{watch.started}"] and sent[0].severity == "warning"
    assert "only canary 0/40 trajectories after 200 min" in sent[0].text and sent[0].fields["canary_trajectories"] == "0"
    assert read_deployment(watch.engine).canary == "v1.2.0"

    watch.window(1, {"v1.2.0": Behaviour(40, errored=0.6), "v1.1.0": Behaviour(40)})
    rolled = watch_tick(watch.engine, store, watch.inference, config, watch.started + timedelta(minutes=210),
                        sent.append)
    assert rolled.decision.action is Action.ROLLBACK and rolled.applied and "error rate" in rolled.summary
    moment = read_deployment(watch.engine).changed_at
    assert moment == watch.started + timedelta(minutes=210)  # the tick's moment, as in the history
    assert [a.key for a in sent][1:] == [f"rollback:v1.2.0:{moment.isoformat()}"] and sent[1].severity == "error"
    assert sent[1].title == "Canary v1.2.0 rolled back: v1.1.0 serves all agents again"


def test_a_decision_is_not_applied_to_a_deployment_that_changed_meanwhile(watch):
    watch.window(0, {"v1.2.0": Behaviour(40, right=0.0), "v1.1.0": Behaviour(60)})
    seen = read_deployment(watch.engine)
    decision = decide(seen, read_canary_arms(watch.store, [window_of(watch.started)])[0], WatchConfig(), datetime.now(UTC))
    assert decision.action is Action.ROLLBACK
    set_canary_fraction(watch.engine, 0.5, actor="alice", reason="by hand")
    sent = []
    not_applied = apply_decision(watch.engine, watch.store, watch.inference, seen, decision, datetime.now(UTC),
                                 sent.append)
    assert not_applied.startswith("the deployment changed meanwhile (now: canary v1.2.0 at 50% stage 1")
    assert read_deployment(watch.engine).canary == "v1.2.0" and sent == []
    assert "babylon-agent-v1.2.0" in watch.server.loaded

