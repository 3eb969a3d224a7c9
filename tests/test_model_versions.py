"""`model_versions`: the table of every version, and its latest materialization in the instance after each change.

A deploy → promote → deploy → rollback sequence through the real jobs, against SQLite and Postgres and the
loopback inference server: after each step the table says each version's stage, share, verdict with its
interval and champion, training batch and reward, and why it was rolled back; and the instance's latest
`model_versions` materialization holds that same table, recorded by the job that made the change."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa

from babylon_pipeline.assets.model_versions import model_versions
from babylon_pipeline.assets.versions_report import ASSET, record_model_versions, versions_metadata
from babylon_pipeline.jobs.deployment import promote_job, rollback_job
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.serving.models_table import COLUMNS, display_table, models_table, rollback_reasons
from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import upgrade
from tests.inference_server import inference_server  # noqa: F401
from tests.test_deployed_model import T0, deploy, instance, resources  # noqa: F401
from tests.test_serving_state import add_model

METRICS = {"v1.0.0": {"verdict": "better", "guardrails_passed": True, "diff_mean": 0.05, "diff_low": 0.01,
                      "diff_high": 0.09, "champion": "base"},
           "v1.1.0": {"verdict": "no_difference", "guardrails_passed": True, "diff_mean": 0.01, "diff_low": -0.02,
                      "diff_high": 0.04, "champion": "v1.0.0"}}
VERSIONS = ("v1.0.0", "v1.1.0")


@pytest.fixture
def engine(empty_db: sa.Engine) -> sa.Engine:
    upgrade(empty_db)
    for i, version in enumerate(VERSIONS):
        add_model(empty_db, version, created=T0.replace(hour=12 + i), metrics=METRICS[version])
    with empty_db.begin() as conn:
        for i, version in enumerate(VERSIONS):
            conn.execute(sa.update(tables.trained_models).where(tables.trained_models.c.version == version)
                         .values(trainingBatch=f"batch-{i}", avgReward=0.25 + i / 10))
    return empty_db


def rows(table: pd.DataFrame) -> dict[str, dict]:
    """Per version, its row; a missing value (None or NaN, as pandas keeps it) as None."""
    return {r["version"]: {k: None if pd.isna(v) else v for k, v in r.items()} for r in table.to_dict("records")}


def latest(instance: dg.DagsterInstance) -> dict:
    event = instance.get_latest_materialization_event(dg.AssetKey(ASSET))
    assert event is not None
    return event.asset_materialization.metadata


def assert_recorded(instance: dg.DagsterInstance, engine: sa.Engine) -> None:
    """The instance's latest `model_versions` materialization is the table as it is now."""
    recorded, now = latest(instance), versions_metadata(engine)
    assert recorded["versions"].value == now["versions"].value
    assert {k: recorded[k].value for k in now if k != "versions"} == {k: v for k, v in now.items() if k != "versions"}


def test_the_table_follows_deploy_promote_deploy_rollback(engine, inference_server, tmp_path, instance) -> None:
    for version in VERSIONS:
        inference_server.publish(version)
    res = resources(engine, inference_server, tmp_path)

    first = rows(models_table(engine))
    assert list(first) == ["base", "v1.1.0", "v1.0.0"]
    assert (first["base"]["status"], first["base"]["traffic_share"]) == ("base", 1.0)
    v10 = first["v1.0.0"]
    assert (v10["status"], v10["traffic_share"], v10["verdict"], v10["champion"]) == ("candidate", 0.0, "better", "base")
    assert (v10["diff_mean"], v10["diff_low"], v10["diff_high"]) == (0.05, 0.01, 0.09)
    assert (v10["training_batch"], v10["avg_reward"], v10["rolled_back_for"]) == ("batch-0", 0.25, None)

    assert deploy(engine, inference_server, tmp_path, instance, "v1.0.0", 0.2).success
    table = rows(models_table(engine))
    assert {v: (r["status"], r["traffic_share"]) for v, r in table.items()} == {
        "base": ("base", 0.8), "v1.1.0": ("candidate", 0.0), "v1.0.0": ("canary", 0.2)}
    assert_recorded(instance, engine)
    assert latest(instance)["canary_versions"].value == 1

    assert promote_job.execute_in_process(instance=instance, resources=res).success
    table = rows(models_table(engine))
    assert list(table) == ["v1.1.0", "v1.0.0"]  # the base serves nobody: no base row
    assert (table["v1.0.0"]["status"], table["v1.0.0"]["traffic_share"]) == ("deployed", 1.0)
    assert_recorded(instance, engine)

    assert deploy(engine, inference_server, tmp_path, instance, "v1.1.0", 0.5).success
    assert (rows(models_table(engine))["v1.1.0"]["status"], rows(models_table(engine))["v1.0.0"]["traffic_share"]) \
        == ("canary", 0.5)
    assert_recorded(instance, engine)

    reason = "failed actions doubled on the canary"
    assert rollback_job.execute_in_process(instance=instance, resources=res, run_config={
        "ops": {"rollback_op": {"config": {"reason": reason}}}}).success
    table = rows(models_table(engine))
    assert {v: (r["status"], r["traffic_share"], r["rolled_back_for"]) for v, r in table.items()} == {
        "v1.1.0": ("archived", 0.0, reason), "v1.0.0": ("deployed", 1.0, None)}
    assert (table["v1.1.0"]["verdict"], table["v1.1.0"]["champion"]) == ("no_difference", "v1.0.0")
    assert_recorded(instance, engine)
    recorded = latest(instance)
    assert {k: recorded[k].value for k in ("candidate_versions", "canary_versions", "deployed_versions",
                                           "archived_versions", "registered_versions")} == {
        "candidate_versions": 0, "canary_versions": 0, "deployed_versions": 1, "archived_versions": 1,
        "registered_versions": 2}
    markdown = recorded["versions"].value
    assert "| v1.1.0    | archived | 0%" in markdown and reason in markdown
    assert "+0.0100 [-0.0200, +0.0400]" in markdown and "batch-1" in markdown


def test_the_asset_and_the_regression_watch_record_the_same_table(engine, tmp_path) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with dg.instance_for_test() as instance:
        assert dg.materialize([model_versions], instance=instance,
                              resources={"trajectory_store": TrajectoryStore(database_url=url)}).success
        assert_recorded(instance, engine)
        with engine.begin() as conn:
            conn.execute(sa.update(tables.trained_models).where(tables.trained_models.c.version == "v1.1.0")
                         .values(status="archived"))
        with dg.build_sensor_context(instance=instance) as context:  # what the watch does after a change
            record_model_versions(context, engine, "a test")
        assert latest(instance)["archived_versions"].value == 1
        assert instance.get_latest_materialization_event(dg.AssetKey(ASSET)).run_id == ""  # runless


def test_a_version_brought_back_is_no_longer_rolled_back() -> None:
    history = pd.DataFrame([
        ("promote", "v1", None, "first"), ("promote", "v2", "v1", "second"),
        ("rollback", "v1", "v2", "v2 lost money"), ("rollback", "v2", "v1", "v1 is worse still"),
    ], columns=["action", "version", "from_version", "reason"])
    assert rollback_reasons(history) == {"v1": "v1 is worse still"}


def test_display_table_of_no_versions_has_the_columns() -> None:
    assert list(display_table(pd.DataFrame(columns=COLUMNS))) == ["version", "status", "traffic_share", "verdict", "interval",
                                                   "champion", "benchmark_reward", "avg_reward", "trained_at",
                                                   "training_batch", "rolled_back_for"]


def test_a_database_without_the_deployment_tables_is_a_warning_not_a_failure(empty_sqlite) -> None:
    """The change being reported has committed: an unreadable table must not fail the run that made it."""
    with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance) as context:
        record_model_versions(context, empty_sqlite, "a test")
        assert instance.get_latest_materialization_event(dg.AssetKey(ASSET)) is None
