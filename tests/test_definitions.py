"""The code location loads and validates, and both Dagster instances (embedded, production) really work."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.instance.config import dagster_instance_config
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from dagster._utils.tags import TagConcurrencyLimitsCounter

from babylon_pipeline import instance as embedded
from babylon_pipeline.resources import TrajectoryStore, trajectory_store_from_env
from tests.conftest import scratch_database

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Variables that would point a subprocess at another instance or database than the test's own.
_FOREIGN = ("DATABASE_URL", "DAGSTER_HOME", "BABYLON_HOME") + tuple(
    f"DAGSTER_PG_{part}" for part in ("HOST", "PORT", "USER", "PASSWORD", "DB")
)


@pytest.fixture
def babylon_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An embedded profile of the test's own: BABYLON_HOME in tmp_path, no production settings."""
    for name in _FOREIGN:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "babylon"
    monkeypatch.setenv("BABYLON_HOME", str(home))
    return home


@pytest.fixture
def embedded_env(babylon_home: Path) -> dict[str, str]:
    """The environment of a subprocess in the embedded profile, DAGSTER_HOME its instance."""
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    env["BABYLON_HOME"] = str(babylon_home)
    env["DAGSTER_HOME"] = str(embedded.ensure_embedded_instance())
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


@pytest.fixture
def instance_database() -> Iterator[sa.engine.URL]:
    """A database of its own for Dagster's instance tables, beside the run's Babylon database."""
    with scratch_database("dagster_test") as url:
        yield sa.engine.make_url(url)


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, f"{args} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@dg.asset
def _store_probe(trajectory_store: TrajectoryStore) -> dg.MaterializeResult:
    """Touches the store the way every asset will: through `engine()`, reporting only the redacted URL."""
    engine = trajectory_store.engine()
    assert engine is trajectory_store.engine()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    return dg.MaterializeResult(metadata={"store": trajectory_store.redacted_url()})


def _materialize_probe(instance: dg.DagsterInstance, store: TrajectoryStore) -> dg.ExecuteInProcessResult:
    result = dg.materialize([_store_probe], instance=instance, resources={"trajectory_store": store})
    assert result.success
    return result


# --- the code location -------------------------------------------------------------------------


def test_definitions_load_with_the_trajectory_store() -> None:
    from babylon_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert "trajectory_store" in defs.get_repository_def().get_top_level_resources()
    assert isinstance(defs.resources["trajectory_store"], TrajectoryStore)


def test_embedded_store_is_sqlite_under_babylon_home_with_one_cached_engine(babylon_home: Path) -> None:
    store = trajectory_store_from_env()
    assert store.database_url == f"sqlite:///{babylon_home / 'babylon.db'}"
    with dg.build_resources({"trajectory_store": store}) as resources:
        engine = resources.trajectory_store.engine()
        assert engine is resources.trajectory_store.engine()
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    assert (babylon_home / "babylon.db").exists()


def test_production_store_reads_database_url_at_run_time_and_never_shows_it(
    babylon_home: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sa.engine.make_url(postgres_url)
    if not url.password:  # the test server trusts loopback, so any password connects
        url = url.set(password=f"secret-{uuid.uuid4().hex}")
    secret = url.password
    monkeypatch.setenv("DATABASE_URL", url.render_as_string(hide_password=False))

    store = trajectory_store_from_env()
    assert isinstance(store.database_url, dg.EnvVar)  # the value is read when a run starts, not at load
    explicit = TrajectoryStore(database_url=url.render_as_string(hide_password=False))
    assert secret not in repr(explicit) and secret not in str(explicit)
    repo = dg.Definitions(assets=[_store_probe], resources={"trajectory_store": store}).get_repository_def()
    snapshot = serialize_value(RepositorySnap.from_def(repo))  # what the UI is told about the location
    assert "DATABASE_URL" in snapshot and secret not in snapshot

    with dg.instance_for_test() as instance:
        result = _materialize_probe(instance, store)
        assert result.asset_materializations_for_node("_store_probe")[0].metadata["store"].value == (
            url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=True)
        )
        records = instance.get_records_for_run(result.run_id).records
        assert records and all(secret not in serialize_value(record.event_log_entry) for record in records)


def test_dagster_definitions_validate_passes(embedded_env: dict[str, str]) -> None:
    result = _run([str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"], embedded_env)
    assert "All code locations passed validation" in result.stdout + result.stderr


def test_dg_check_defs_passes(embedded_env: dict[str, str]) -> None:
    result = _run([str(BIN / "dg"), "check", "defs"], embedded_env)
    assert "All definitions loaded successfully" in result.stdout + result.stderr


# --- the Dagster instances -----------------------------------------------------------------------


def test_production_instance_migrates_and_runs_on_postgres(
    instance_database: sa.engine.URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    url = instance_database
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host or "127.0.0.1")
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port or 5432))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username or "postgres")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", url.password or "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database or "")

    config, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    assert config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert config["telemetry"] == {"enabled": False}

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        _assert_babylon_concurrency(instance)
        store = TrajectoryStore(database_url=f"sqlite:///{tmp_path / 'babylon.db'}")
        run_id = _materialize_probe(instance, store).run_id
        assert instance.get_run_by_id(run_id).is_success
    finally:
        instance.dispose()
    tables = sa.inspect(sa.create_engine(url, poolclass=sa.pool.NullPool)).get_table_names()
    assert {"runs", "event_logs", "concurrency_limits", "alembic_version"} <= set(tables)


def test_embedded_instance_is_sqlite_under_babylon_home_and_idempotent(babylon_home: Path) -> None:
    home = embedded.ensure_embedded_instance()
    assert home == babylon_home / "dagster"
    path = home / "dagster.yaml"
    first = (path.read_text(), path.stat().st_ino, path.stat().st_mtime_ns)
    assert embedded.ensure_embedded_instance() == home
    assert (path.read_text(), path.stat().st_ino, path.stat().st_mtime_ns) == first  # untouched

    path.write_text("storage: {}\n")  # stale or hand-edited: rewritten
    embedded.ensure_embedded_instance()
    assert path.read_text() == first[0]

    config, _ = dagster_instance_config(str(home))
    assert config["storage"] == {"sqlite": {"base_dir": str(home / "storage")}}
    production = yaml.safe_load((REPO / "dagster.yaml").read_text())
    for key in ("run_coordinator", "concurrency", "telemetry"):  # the two profiles differ only in storage
        assert config[key] == production[key] == embedded.embedded_instance_config(home)[key]

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
        _assert_babylon_concurrency(instance)
        store = trajectory_store_from_env()
        assert instance.get_run_by_id(_materialize_probe(instance, store).run_id).is_success
    finally:
        instance.dispose()
    assert (home / "storage" / "history" / "runs.db").exists()  # the run really went to this instance


def test_instance_module_prints_the_embedded_dagster_home(embedded_env: dict[str, str], babylon_home: Path) -> None:
    env = {k: v for k, v in embedded_env.items() if k != "DAGSTER_HOME"}
    result = _run([sys.executable, "-m", "babylon_pipeline.instance"], env)
    assert result.stdout.strip() == str(babylon_home / "dagster")
    assert (babylon_home / "dagster" / "dagster.yaml").is_file()


def _queued_run(tags: dict[str, str]) -> dg.DagsterRun:
    return dg.DagsterRun(job_name="window_job", run_id=str(uuid.uuid4()), tags=tags)


def _assert_babylon_concurrency(instance: dg.DagsterInstance) -> None:
    concurrency = instance.get_concurrency_config()
    assert concurrency.pool_config.default_pool_limit == 1
    assert concurrency.run_queue_config is not None
    assert list(concurrency.run_queue_config.tag_concurrency_limits) == [
        {"key": embedded.GPU_RUN_TAG_KEY, "value": embedded.GPU_RUN_TAG_VALUE, "limit": 1},
        {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
    ]
    # what the queue daemon decides under these limits while window 10:00 has a run in progress
    queue = TagConcurrencyLimitsCounter(concurrency.run_queue_config.tag_concurrency_limits,
                                        [_queued_run({"dagster/partition": "2025-11-15-10:00"})])
    assert queue.is_blocked(_queued_run({"dagster/partition": "2025-11-15-10:00"}))
    assert not queue.is_blocked(_queued_run({"dagster/partition": "2025-11-15-11:00"}))
    assert not queue.is_blocked(_queued_run(embedded.GPU_RUN_TAGS))
    assert instance.get_settings("telemetry") == {"enabled": False}


def test_the_orchestrator_imports_without_torch() -> None:
    """The Dagster code location must load where only the orchestrator's dependencies are installed."""
    import subprocess
    import sys

    probe = (
        "import sys; sys.modules.update({name: None for name in ('torch', 'transformers', 'peft', 'trl')}); "
        "from babylon_pipeline.definitions import defs; defs.get_repository_def(); print('ok')"
    )
    completed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0 and completed.stdout.strip().endswith("ok"), completed.stderr[-2000:]
