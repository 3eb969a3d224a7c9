"""Shared fixtures: a real Postgres database per test run, and SQLite beside it."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

# The tests' windows are in 2025: without a fixed start, the embedded profile's partitions would
# start where ./.babylon's data does, or a week ago (babylon_pipeline.partitions).
os.environ.setdefault("BABYLON_START", "2025-01-01-00:00")

from babylon_pipeline.store import tables  # noqa: E402  after BABYLON_START
from babylon_pipeline.store.db import make_engine

pytest_plugins = ["tests.s3_server", "tests.judge_server"]  # loopback S3 and judge servers, as fixtures

ADMIN_URL = os.environ.get("BABYLON_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@contextmanager
def scratch_database(prefix: str) -> Iterator[str]:
    """A new database on the machine's Postgres, as a URL; dropped at the end, its connections with it."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of this test run's own on the machine's Postgres, dropped at the end."""
    with scratch_database("babylon_test") as url:
        yield url


@pytest.fixture
def empty_postgres(postgres_url: str) -> Iterator[sa.Engine]:
    """The run's Postgres database with every table dropped: each test starts from nothing."""
    engine = make_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    yield engine
    engine.dispose()


@pytest.fixture
def empty_sqlite(tmp_path) -> Iterator[sa.Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'babylon.db'}")
    yield engine
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def empty_db(request) -> sa.Engine:
    """An empty database of each kind the store supports."""
    return request.getfixturevalue(f"empty_{request.param}")


@pytest.fixture
def db(empty_db: sa.Engine) -> sa.Engine:
    """A database of each kind with the Babylon tables, and the pipeline's own, created from our definitions."""
    tables.metadata.create_all(empty_db)
    tables.pipeline_metadata.create_all(empty_db)
    return empty_db


def pytest_terminal_summary(terminalreporter) -> None:
    """What a test recorded with `record_property` (the browser's versions, where its screenshots are), in the
    log even under `-q` and xdist: the workers send the properties back with the test's report."""
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) == "call":
                for name, value in report.user_properties:
                    terminalreporter.write_line(f"{report.nodeid}: {name}: {value}")
