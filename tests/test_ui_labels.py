"""What the Dagster UI reads from the code location (issue 17, items 5 and 6): the repository snapshot
the webserver gets — kind tags on asset nodes, job names, schedule and sensor descriptions, checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster._core.remote_representation.external_data import RepositorySnap

from babylon_pipeline.definitions import build_definitions
from babylon_pipeline.kinds import database_kind, storage_kind

KIND = "dagster/kind/"
PRODUCTION = ("DATABASE_URL", "BABYLON_STORAGE_URL", "BABYLON_JUDGE_BASE_URL", "BASE_MODEL", "BABYLON_TRAINER")


@pytest.fixture
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PRODUCTION:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "home"))


def _snap() -> RepositorySnap:
    return RepositorySnap.from_def(build_definitions().get_repository_def())


def _kinds(snap: RepositorySnap, asset: str) -> set[str]:
    [node] = [n for n in snap.asset_nodes if n.asset_key.to_user_string() == asset]
    return {tag[len(KIND):] for tag in node.tags if tag.startswith(KIND)}


def test_the_embedded_profile_shows_sqlite_and_local_file_badges(embedded) -> None:
    snap = _snap()
    assert _kinds(snap, "window_trajectories") == {"sqlite", "local-files"}
    assert _kinds(snap, "art_groups") == {"openpipe-art"}  # other kinds stay as declared
    assert _kinds(snap, "lora_checkpoint") == {"pytorch", "wandb"}


def test_production_settings_show_postgres_and_s3_badges(embedded, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg2://app:s3cret@db.internal:5432/babylon")
    monkeypatch.setenv("BABYLON_STORAGE_URL", "s3://babylon-bucket/prefix")
    snap = _snap()
    assert _kinds(snap, "window_trajectories") == {"postgres", "s3"}
    assert not any("s3cret" in tag or "db.internal" in tag for node in snap.asset_nodes for tag in node.tags)


@pytest.mark.parametrize(("url", "kind"), [
    ("postgresql://u@h/db", "postgres"), ("postgres://u@h/db", "postgres"), ("sqlite:////tmp/x.db", "sqlite"),
    ("mysql+pymysql://u@h/db", "mysql"), ("POSTGRESQL://u@h/db", "postgres"),
])
def test_database_kinds(url: str, kind: str) -> None:
    assert database_kind(url) == kind


@pytest.mark.parametrize(("url", "kind"), [
    ("file:///var/babylon/objects", "local-files"), ("s3://b/p", "s3"), ("S3://b", "s3"), ("", "object-store"),
])
def test_storage_kinds(url: str, kind: str) -> None:
    assert storage_kind(url) == kind


def test_base_model_has_a_named_job_and_the_instigators_say_what_they_do(embedded) -> None:
    snap = _snap()
    jobs = {job.name: job for job in snap.get_job_datas()}
    assert "base_model_job" in jobs and jobs["base_model_job"].job.description
    [node] = [n for n in snap.asset_nodes if n.asset_key.to_user_string() == "base_model"]
    assert "base_model_job" in node.job_names

    schedule = snap.get_schedule("window_job_schedule")
    assert schedule.job_name == "window_job" and "hourly window" in schedule.description
    assert snap.has_partition_set("window_job_partition_set")  # the schedule's job is the hourly partitioned one
    assert jobs["window_job"].job.description and snap.get_partition_set("window_job_partition_set").job_name == "window_job"
    sensor = snap.get_sensor("late_outcomes_sensor")
    assert sensor.description and "outcomes" in sensor.description


def test_lora_checkpoint_has_its_checks_and_training_job_runs_them(embedded) -> None:
    snap = _snap()
    checks = {c.name: c for c in snap.asset_check_nodes if c.asset_key.to_user_string() == "lora_checkpoint"}
    assert set(checks) == {"adapter_loads", "training_loss_finite"}
    assert all(c.description for c in checks.values())
    assert all("training_job" in c.job_names for c in checks.values())
