"""The window assets materialised for real: embedded (SQLite, files, heuristic judge) and production-like
(Postgres, an S3 server on loopback, an OpenAI-compatible judge on loopback)."""

from __future__ import annotations

import json

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa
from dagster_aws.s3 import S3Resource

from babylon_pipeline.jobs.windows import WINDOW_ASSETS
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.judge import JudgeResource, judge_resource_from_env
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.storage.factory import open_object_store
from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.windowing.files import read_manifest
from tests.judge_server import unused_port_url
from tests.window_data import add_malformed_rows, record_window

W = "2025-11-15T10:00"


def _materialize(resources: dict, window: str | None = W, *, tags: dict | None = None, instance=None, run_config=None):
    return dg.materialize(
        WINDOW_ASSETS,
        partition_key=partition_key_of(window) if window else None,
        resources=resources,
        instance=instance or dg.DagsterInstance.ephemeral(),
        tags=tags,
        run_config=run_config,
        raise_on_error=False,
    )


def _dump(engine: sa.Engine) -> dict:
    with engine.connect() as conn:
        return {
            name: sorted(map(tuple, conn.execute(sa.select(tables.metadata.tables[name])).all()))
            for name in ("reward_judgments",)
        } | {"judged": sorted(conn.execute(sa.select(tables.trajectories.c.trajectoryId, tables.trajectories.c.aiJudgeReward)).all())}


@pytest.fixture
def embedded(tmp_path, empty_sqlite):
    upgrade(empty_sqlite)
    url = str(empty_sqlite.url)
    resources = {
        "trajectory_store": TrajectoryStore(database_url=url),
        "object_store": ObjectStoreResource(url=(tmp_path / "objects").as_uri()),
        "judge": JudgeResource(),
    }
    return empty_sqlite, resources, open_object_store((tmp_path / "objects").as_uri())


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = [m for m in result.asset_materializations_for_node(asset)]
    return {k: v.value for k, v in event.metadata.items()}


def test_embedded_window_end_to_end_and_idempotent(embedded) -> None:
    engine, resources, store = embedded
    ids = record_window(engine, W)
    add_malformed_rows(engine, W, 0)

    first = _materialize(resources)
    assert first.success
    trajectories = _metadata(first, "window_trajectories")
    assert (trajectories["trajectories"], trajectories["valid"], trajectories["quarantined"]) == (8, 8, 0)
    assert (trajectories["agents"], trajectories["scenarios"], trajectories["data_quality"]) == (4, 2, 1.0)
    assert trajectories["llm_exchange_fraction"] == 1.0
    checks = {c.check_name: c for c in first.get_asset_check_evaluations()}
    assert checks["data_quality"].passed and checks["no_duplicates"].passed
    assert checks["scored_fraction"].passed and checks["scores_in_range"].passed

    rewards = _metadata(first, "outcome_rewards")
    assert rewards["scored_trades"] == 24 and rewards["pending_trades"] == 0
    groups = _metadata(first, "art_groups")
    assert (groups["groups"], groups["trajectories_exported"], groups["excluded_no_llm_exchange"]) == (2, 8, 0)
    scores = _metadata(first, "ruler_scores")
    assert scores["judge_groups"] == 2 and scores["judge_scored"] == 2 and scores["scored_fraction"] == 1.0
    assert scores["trainable_groups"] == 2

    manifest = read_manifest(store, W)
    assert set(manifest["files"]) == {"trajectories.jsonl", "index.jsonl", "quarantine.jsonl", "outcome_rewards.json",
                                      "arms.json", "groups.jsonl", "ruler_scores.json"}
    ruler = json.loads(store.get_bytes(f"training-data/{W}/ruler_scores.json"))
    scored = {tid for g in ruler["groups"].values() for tid in g["trajectories"]}
    assert scored == set(ids)
    # YES was right: in every scenario the YES bettors out-earn the NO bettors in the training reward
    for group in ruler["groups"].values():
        by_agent = {tid: entry["training_reward"] for tid, entry in group["trajectories"].items()}
        assert len(set(by_agent.values())) > 1

    objects = {key: store.get_bytes(key) for key in store.list_keys("training-data/")}
    rows = _dump(engine)
    assert len(rows["reward_judgments"]) == 8 and all(score is not None for _, score in rows["judged"])

    second = _materialize(resources)
    assert second.success
    again = {key: store.get_bytes(key) for key in store.list_keys("training-data/")}
    assert [key for key in objects if again.get(key) != objects[key]] == []
    rows_again = _dump(engine)
    assert [r[:-1] for r in rows_again["reward_judgments"]] == [r[:-1] for r in rows["reward_judgments"]]  # judgedAt moves
    assert rows_again["judged"] == rows["judged"]
    assert _metadata(second, "ruler_scores")["judge_cached"] == 2


def test_poor_data_quality_blocks_downstream(embedded) -> None:
    engine, resources, store = embedded
    record_window(engine, W, scenarios=1, agents=4)
    add_malformed_rows(engine, W, 2)  # 4 of 6 rows usable: below 0.95

    result = _materialize(resources)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["data_quality"].passed and checks["data_quality"].severity == dg.AssetCheckSeverity.ERROR
    assert _metadata(result, "window_trajectories")["quarantined"] == 2
    assert not result.asset_materializations_for_node("ruler_scores")
    quarantine = store.get_bytes(f"training-data/{W}/quarantine.jsonl").decode().splitlines()
    assert [json.loads(line)["reason"] for line in quarantine] == ["invalid_json", "invalid_json"]

    relaxed = _materialize(resources, run_config={"ops": {"window_trajectories": {"config": {"min_valid_fraction": 0.5}}}})
    assert relaxed.success and relaxed.asset_materializations_for_node("ruler_scores")


def test_an_empty_hour_warns_and_does_not_fail(embedded) -> None:
    _, resources, _ = embedded
    result = _materialize(resources)
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["data_quality"].passed and checks["data_quality"].severity == dg.AssetCheckSeverity.WARN
    assert _metadata(result, "ruler_scores")["trajectories"] == 0


def test_a_24_window_backfill_is_one_run(embedded) -> None:
    engine, resources, store = embedded
    windows = [f"2025-11-15T{h:02d}:00" for h in range(24)]
    for window in windows[::6]:
        record_window(engine, window, scenarios=1, agents=3)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(
        resources, None, instance=instance,
        tags={"dagster/asset_partition_range_start": partition_key_of(windows[0]),
              "dagster/asset_partition_range_end": partition_key_of(windows[-1])},
    )
    assert result.success
    assert len(instance.get_run_records()) == 1
    for asset in ("window_trajectories", "ruler_scores"):
        materialized = instance.get_materialized_partitions(dg.AssetKey(asset))
        assert materialized == {partition_key_of(w) for w in windows}
    # each window's newest event carries that window's own figures
    latest = instance.get_latest_materialization_event(dg.AssetKey("window_trajectories"))
    assert latest is not None
    records = instance.fetch_materializations(dg.AssetKey("window_trajectories"), limit=200).records
    by_partition = {}
    for record in sorted(records, key=lambda r: r.storage_id):
        by_partition[record.partition_key] = record.asset_materialization.metadata
    assert by_partition[partition_key_of(windows[0])]["trajectories"].value == 3
    assert by_partition[partition_key_of(windows[1])]["trajectories"].value == 0
    assert all(read_manifest(store, w)["files"] for w in windows)


def test_production_profile_postgres_s3_and_an_openai_compatible_judge(
    empty_postgres, s3_endpoint, s3_bucket, judge_server, monkeypatch
) -> None:
    upgrade(empty_postgres)
    ids = record_window(empty_postgres, W, scenarios=3, agents=4)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("BABYLON_JUDGE_API_KEY", "sk-test-secret")
    url = f"s3://{s3_bucket}/babylon"
    resources = {
        "trajectory_store": TrajectoryStore(database_url=str(empty_postgres.url.render_as_string(hide_password=False))),
        "object_store": ObjectStoreResource(url=url, s3=S3Resource(endpoint_url=s3_endpoint, region_name="us-east-1")),
        "judge": JudgeResource(base_url=judge_server.base_url, model="judge-model", api_key=dg.EnvVar("BABYLON_JUDGE_API_KEY"),
                               timeout_s=5, max_retries=1),
    }
    result = _materialize(resources)
    assert result.success
    assert judge_server.count == 3  # one call per scenario group
    scores = _metadata(result, "ruler_scores")
    assert scores["judge_scored"] == 3 and scores["judge_calls"] == 3 and scores["judge_prompt_tokens"] > 0

    store = open_object_store(url, boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1"))
    assert set(read_manifest(store, W)["files"]) >= {"trajectories.jsonl", "groups.jsonl", "ruler_scores.json"}
    rows = _dump(empty_postgres)
    assert {tid for tid, score in rows["judged"] if score is not None} == set(ids)
    objects = {key: store.get_bytes(key) for key in store.list_keys("training-data/")}
    assert any(key.startswith("judge-cache/") for key in store.list_keys(""))

    again = _materialize(resources)
    assert again.success and judge_server.count == 3  # the cache answered: zero new calls
    assert {key: store.get_bytes(key) for key in store.list_keys("training-data/")} == objects
    assert [r[:-1] for r in _dump(empty_postgres)["reward_judgments"]] == [r[:-1] for r in rows["reward_judgments"]]
    events = [str(e) for e in again.all_events] + [str(e) for e in result.all_events]
    assert not any("sk-test-secret" in text for text in events)


def test_judge_failure_is_counted_and_blocks_nothing_half_written(empty_postgres, tmp_path, monkeypatch) -> None:
    upgrade(empty_postgres)
    record_window(empty_postgres, W, scenarios=2, agents=3)
    resources = {
        "trajectory_store": TrajectoryStore(database_url=str(empty_postgres.url.render_as_string(hide_password=False))),
        "object_store": ObjectStoreResource(url=(tmp_path / "objects").as_uri()),
        "judge": JudgeResource(base_url=unused_port_url(), model="judge-model", api_key="unused", timeout_s=1, max_retries=0),
    }
    result = _materialize(resources)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["scored_fraction"].passed
    scores = _metadata(result, "ruler_scores")
    assert scores["judge_failed"] == 2 and "judge_judge_failed" not in scores and scores["scored_trajectories"] == 0
    assert all(score is None for _, score in _dump(empty_postgres)["judged"])  # no guessed scores written
    ruler = json.loads((tmp_path / "objects" / "training-data" / W / "ruler_scores.json").read_bytes())
    assert {g["status"] for g in ruler["groups"].values()} == {"judge_failed"}


def test_dagster_cli_materializes_a_partition_range_in_one_run(tmp_path, empty_sqlite, monkeypatch) -> None:
    """`dagster asset materialize --partition-range` against the embedded profile, as an operator would."""
    import subprocess
    import sys
    from pathlib import Path

    from babylon_pipeline.instance import ensure_embedded_instance

    upgrade(empty_sqlite)
    record_window(empty_sqlite, "2025-11-15T01:00", scenarios=1, agents=2)
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", str(empty_sqlite.url))
    monkeypatch.setenv("DAGSTER_HOME", str(ensure_embedded_instance()))
    for name in ("BABYLON_STORAGE_URL", "BABYLON_JUDGE_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    dagster = Path(sys.executable).parent / "dagster"
    completed = subprocess.run(
        [str(dagster), "asset", "materialize", "-m", "babylon_pipeline.definitions",
         "--select", "window_trajectories,outcome_rewards,art_groups,ruler_scores",
         "--partition-range", "2025-11-15-00:00...2025-11-15-02:00"],
        capture_output=True, text=True, timeout=300, cwd=Path(__file__).parent.parent,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stderr.count("RUN_SUCCESS") == 1
    store = open_object_store((tmp_path / "objects").as_uri())
    assert [w for w in ("2025-11-15T00:00", "2025-11-15T01:00", "2025-11-15T02:00") if read_manifest(store, w)["files"]] == [
        "2025-11-15T00:00", "2025-11-15T01:00", "2025-11-15T02:00"]
    ruler = json.loads(store.get_bytes("training-data/2025-11-15T01:00/ruler_scores.json"))
    assert sum(len(g["trajectories"]) for g in ruler["groups"].values()) == 2


@pytest.mark.parametrize("settings, missing", [
    ({"BABYLON_JUDGE_MODEL": "judge-model", "BABYLON_JUDGE_API_KEY": "sk-half-secret"}, "BABYLON_JUDGE_BASE_URL"),
    ({"BABYLON_JUDGE_BASE_URL": "http://127.0.0.1:9/v1", "BABYLON_JUDGE_API_KEY": "sk-half-secret"},
     "BABYLON_JUDGE_MODEL"),
])
def test_a_half_set_judge_is_refused_in_one_line(embedded, monkeypatch, settings, missing) -> None:
    """Not the heuristic judge in silence, and not a config traceback about an unset `EnvVar`."""
    engine, resources, _ = embedded
    record_window(engine, W)
    for name in ("BABYLON_JUDGE_BASE_URL", "BABYLON_JUDGE_MODEL", "BABYLON_JUDGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    result = _materialize({**resources, "judge": judge_resource_from_env()})
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert failure.step_key == "ruler_scores"
    message = failure.step_failure_data.error.message
    assert f"{missing} not" in message and "half configured" in message and message.count("\n") <= 1
    assert not any("sk-half-secret" in str(e) for e in result.all_events)


def test_the_judge_that_runs_is_named_in_logs_and_metadata(embedded) -> None:
    engine, resources, _ = embedded
    record_window(engine, W)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(resources, instance=instance)
    assert result.success
    assert _metadata(result, "ruler_scores")["judge"] == "heuristic judge (window_pnl)"
    assert "judging with the heuristic judge (window_pnl)" in [r.user_message for r in instance.all_logs(result.run_id)]
    assert JudgeResource(base_url="https://user:pw@judge.example:8443/v1", model="m", api_key="k").describe() == (
        "OpenAI-compatible judge m at judge.example:8443")
