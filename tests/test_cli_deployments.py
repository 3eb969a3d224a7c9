"""`babylon models | deploy | promote | rollback | route`, run as a user runs them: against the loopback
inference server (`BABYLON_INFERENCE_*`) and the loopback webhook (`BABYLON_ALERT_WEBHOOK_URL`)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from babylon_pipeline.cli import main
from babylon_pipeline.serving.current_json import read_current_json
from babylon_pipeline.serving.routing import route
from babylon_pipeline.serving.state import deployment_history, read_deployment
from babylon_pipeline.storage import open_object_store
from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import upgrade
from tests.inference_server import InferenceServer, inference_server  # noqa: F401
from tests.webhook_server import WebhookServer, webhook  # noqa: F401

T0 = datetime(2025, 11, 15, 12, 0)
GOOD = {"verdict": "better", "guardrails_passed": True}


@pytest.fixture
def setup(empty_db, tmp_path, monkeypatch, inference_server: InferenceServer, webhook: WebhookServer):
    upgrade(empty_db)
    monkeypatch.setenv("USER", "alice")
    for name in ("DATABASE_URL", "BABYLON_STORAGE_URL", "BABYLON_INFERENCE_API_KEY", "BABYLON_ALERT_SMTP_HOST",
                 "BABYLON_ALERT_SMTP_TO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("BABYLON_INFERENCE_BASE_URL", inference_server.base_url)
    monkeypatch.setenv("BABYLON_INFERENCE_ADAPTER_ROOT", "/adapters")
    monkeypatch.setenv("BABYLON_ALERT_WEBHOOK_URL", webhook.url)
    for version in ("v1.0.0", "v1.1.0"):
        inference_server.publish(version)
    with empty_db.begin() as conn:
        for i, (version, metrics, score) in enumerate((("v1.0.0", GOOD, 0.41), ("v1.1.0", GOOD, 0.47),
                                                       ("v1.2.0", None, None))):
            conn.execute(sa.insert(tables.trained_models).values(
                id=f"tm-{version}", modelId=f"babylon-agent-{version}", version=version, baseModel="base",
                status="candidate", storagePath=f"models/{version}", evalMetrics=metrics, benchmarkScore=score,
                createdAt=T0 + timedelta(hours=i), updatedAt=T0))
    common = ["--database-url", empty_db.url.render_as_string(hide_password=False)]
    storage = ["--storage-url", (tmp_path / "objects").as_uri()]
    return empty_db, common, storage, open_object_store((tmp_path / "objects").as_uri())


def test_deploy_promote_rollback_and_route_by_hand(setup, capsys) -> None:
    db, common, storage, store = setup
    assert main(["models", *common]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "status", "traffic_share", "verdict", "interval", "champion",
                                "benchmark_reward", "avg_reward", "trained_at", "training_batch", "rolled_back_for"]
    assert lines[1].split() == ["base", "base", "100%", "-", "-", "-", "-", "-", "-", "-", "-"]
    assert lines[2].split() == ["v1.2.0", "candidate", "0%", "-", "-", "-", "-", "-", "2025-11-15", "14:00", "-", "-"]
    assert lines[3].split() == ["v1.1.0", "candidate", "0%", "better", "-", "-", "0.4700", "-", "2025-11-15", "13:00",
                                "-", "-"]

    assert main(["deploy", "v1.0.0", *common, *storage, "--fraction", "1", "--reason", "first"]) == 0
    assert capsys.readouterr().out == ("canary v1.0.0 on 100% of agents; the base serves the rest\n"
                                       "published deployments/current.json\n")
    assert main(["promote", *common, *storage]) == 0
    assert capsys.readouterr().out.startswith("v1.0.0 serves all agents\n")
    assert main(["deploy", "v1.1.0", *common, *storage, "--fraction", "0.25"]) == 0
    assert "canary v1.1.0 on 25% of agents; v1.0.0 serves the rest" in capsys.readouterr().out
    assert read_current_json(store) == read_deployment(db)

    assert main(["models", *common]) == 0
    shares = {line.split()[0]: line.split()[2] for line in capsys.readouterr().out.splitlines()[1:]}
    assert shares == {"v1.2.0": "0%", "v1.1.0": "25%", "v1.0.0": "75%"}

    deployment = read_deployment(db)
    for agent in ("agent-1", "agent-2", "agent-3"):
        assert main(["route", agent, "--json", *common]) == 0
        answer = json.loads(capsys.readouterr().out)
        assert answer["version"] == route(agent, deployment) and answer["agent_id"] == agent
        assert answer["model"] == f"babylon-agent-{answer['version']}"
        assert answer["deployment"]["salt"] == deployment.salt
    assert main(["route", "agent-1", *common]) == 0
    assert capsys.readouterr().out.startswith("agent-1: v1.")

    assert main(["rollback", *common, *storage, "--reason", "too slow"]) == 0
    assert capsys.readouterr().out.startswith("v1.0.0 serves all agents; archived: v1.1.0\n")
    assert read_current_json(store) == read_deployment(db)
    history = deployment_history(db)
    assert list(history["action"]) == ["adopt", "canary", "promote", "canary", "rollback"]
    assert set(history["actor"]) == {"cli:alice"} and history["reason"].iloc[-1] == "too slow"


def test_the_commands_move_the_adapters_and_alert(setup, inference_server, webhook, tmp_path, capsys) -> None:
    db, common, storage, _ = setup
    assert main(["deploy", "v1.0.0", *common, *storage, "--fraction", "0.5", "--reason", "first"]) == 0
    assert list(inference_server.loaded) == ["babylon-agent-v1.0.0"]
    assert [r.path for r in inference_server.requests if r.method == "POST"] == \
        ["/v1/load_lora_adapter", "/v1/chat/completions"]  # loaded and answering before the canary commits
    assert main(["promote", *common, *storage]) == 0
    assert main(["deploy", "v1.1.0", *common, *storage]) == 0
    assert set(inference_server.loaded) == {"babylon-agent-v1.0.0", "babylon-agent-v1.1.0"}
    assert main(["rollback", *common, *storage, "--reason", "regression"]) == 0
    assert set(inference_server.loaded) == {"babylon-agent-v1.0.0"}  # the rolled-back adapter is unloaded
    capsys.readouterr()

    texts = [body["text"] for body in webhook.delivered()]
    assert [t.splitlines()[0] for t in texts] == [
        "*[INFO] v1.0.0 deployed as a canary on 50% of agents*", "*[INFO] v1.0.0 promoted: it serves all agents*",
        "*[INFO] v1.1.0 deployed as a canary on 10% of agents*",
        "*[ERROR] Canary v1.1.0 rolled back: v1.0.0 serves all agents again*"]
    assert "cli:alice started v1.0.0" in texts[0] and "Reason: regression" in texts[3]
    jsonl = [json.loads(line) for line in (tmp_path / "home" / "alerts.jsonl").read_text().splitlines()]
    history = deployment_history(db)
    assert [a["key"] for a in jsonl] == [f"{action}:{version}:{at.isoformat()}" for action, version, at in zip(
        ("deploy", "promote", "deploy", "rollback"), ("v1.0.0", "v1.0.0", "v1.1.0", "v1.1.0"), history["at"][1:])]


    # v1.0.0 replaced the base: rolling it back unloads it; bringing it back loads and checks it first
    assert main(["rollback", *common, *storage]) == 0 and inference_server.loaded == {}
    inference_server.answer("The markets look great today!")
    assert main(["rollback", "--to", "v1.0.0", *common, *storage]) == 2
    assert "the adapter failed: babylon-agent-v1.0.0 failed its health check" in capsys.readouterr().err
    assert read_deployment(db).in_service is None and inference_server.loaded == {}
    assert webhook.delivered()[-1]["text"].startswith("*[ERROR] v1.0.0 not brought back: its adapter failed*")


def test_an_adapter_fault_changes_nothing_and_alerts(setup, inference_server, webhook, monkeypatch, capsys) -> None:
    db, common, storage, store = setup
    inference_server.answer("The markets look great today!")
    before = read_deployment(db)
    assert main(["deploy", "v1.0.0", *common, *storage]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "alert adapter-fault:deploy:v1.0.0:never: [ERROR]" in err  # the notifier's log line
    assert err.splitlines()[-1].startswith("babylon: nothing was changed, the adapter failed: babylon-agent-v1.0.0 "
                                           "failed its health check")
    assert read_deployment(db) == before and inference_server.loaded == {} and read_current_json(store) is None
    [text] = [body["text"] for body in webhook.delivered()]
    assert text.startswith("*[ERROR] v1.0.0 not deployed: its adapter failed*")

    monkeypatch.delenv("BABYLON_INFERENCE_BASE_URL")  # half configured: never the local model in silence
    assert main(["deploy", "v1.0.0", *common, *storage]) == 2
    assert "the inference server is half configured: BABYLON_INFERENCE_ADAPTER_ROOT set" in capsys.readouterr().err


def test_what_makes_no_sense_is_one_line_and_exit_code_2(setup, inference_server, webhook, capsys) -> None:
    db, common, storage, _ = setup
    for argv, message in (
        (["deploy", "v1.2.0"], "babylon: refused, nothing was changed: v1.2.0 was never evaluated"),
        (["deploy", "v9.0.0"], "babylon: refused, nothing was changed: unknown version 'v9.0.0'"),
        (["deploy", "v1.0.0", "--fraction", "0"], "a canary fraction is a share of agents in (0, 1], not 0.0"),
        (["promote"], "no canary is running: nothing to promote"),
        (["rollback"], "nothing to roll back to: the base serves all agents"),
        (["rollback", "--to", "v1.1.0"], "v1.1.0 is candidate and never served all agents"),
    ):
        assert main([*argv, *common, *storage]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(message if message.startswith("babylon:") else "babylon: refused")
        assert message in err and len(err.splitlines()) == 1
    assert inference_server.requests == [] and webhook.delivered() == []  # refused before loading or alerting
    assert main(["deploy", "v1.0.0", *common, *storage]) == 0
    capsys.readouterr()
    assert main(["deploy", "v1.1.0", *common, *storage]) == 2
    assert "canary v1.0.0 is running at 10%" in capsys.readouterr().err


def test_deployment_commands_on_a_store_without_the_deployment_tables_say_to_upgrade(empty_sqlite, capsys) -> None:
    tables.metadata.create_all(empty_sqlite)  # the app's tables only: revision 0002 not applied
    assert main(["models", "--database-url", empty_sqlite.url.render_as_string(hide_password=False)]) == 2
    assert "run `babylon db upgrade`" in capsys.readouterr().err
