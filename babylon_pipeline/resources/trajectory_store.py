"""The trajectory store as a Dagster resource: the Babylon database, Postgres or the embedded SQLite file."""

from __future__ import annotations

import os

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from babylon_pipeline.profile import embedded_database_url
from babylon_pipeline.store.db import make_engine, redacted


class TrajectoryStore(dg.ConfigurableResource):
    """Where Babylon's trajectories live. One engine per resource instance, disposed after the run.

    `database_url` can carry a password: it is never put in metadata or logs (use `redacted_url()`),
    and in production it comes from `DATABASE_URL` through `EnvVar`, so the UI shows the variable's
    name, not its value.
    """

    database_url: str = Field(repr=False, description="SQLAlchemy URL of the Babylon database")

    _engine: sa.Engine | None = PrivateAttr(default=None)

    def engine(self) -> sa.Engine:
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    def redacted_url(self) -> str:
        """The URL fit for logs and metadata: the password masked."""
        return redacted(self.database_url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def trajectory_store_from_env() -> TrajectoryStore:
    """Production when `DATABASE_URL` is set (read through `EnvVar` at run time), else the embedded store."""
    if os.environ.get("DATABASE_URL"):
        return TrajectoryStore(database_url=dg.EnvVar("DATABASE_URL"))
    return TrajectoryStore(database_url=embedded_database_url())
