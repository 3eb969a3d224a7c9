"""`babylon db upgrade`: create the Babylon tables, or adopt the ones the app already made.

On an empty database the migrations create every table and index. On a database where the app
(Prisma) already created all of them, nothing is changed: the schema is checked against ours and
the database is stamped at the baseline, so later revisions apply on top of it. Adopted tables must
have our columns and our unique indexes (under any name): the upserts and the reader's repeat check
rely on them, and adding one could fail on the app's data, so a gap is refused, not repaired.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext

from babylon_pipeline.store import tables

VERSION_TABLE = "babylon_pipeline_alembic_version"
BASELINE = "0001"


class SchemaMismatch(RuntimeError):
    """The app's tables lack columns or unique indexes this pipeline relies on."""


@dataclass(frozen=True)
class UpgradeResult:
    action: str  # "created", "adopted", "upgraded" or "current"
    revision: str | None


def _alembic_config(connection: sa.Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("babylon_pipeline.store") / "migrations"))
    config.attributes["connection"] = connection
    return config


def _adopted_tables(connection: sa.Connection) -> tuple[sa.Inspector, list[sa.Table]]:
    """An inspector of the database, and our tables that already exist in it."""
    inspector = sa.inspect(connection)
    existing = set(inspector.get_table_names())
    return inspector, [table for table in tables.BABYLON_TABLES if table.name in existing]


def missing_columns(connection: sa.Connection) -> dict[str, list[str]]:
    """Columns of ours that an existing Babylon table does not have."""
    gaps: dict[str, list[str]] = {}
    inspector, adopted = _adopted_tables(connection)
    for table in adopted:
        have = {column["name"] for column in inspector.get_columns(table.name)}
        if lacking := [c.name for c in table.columns if c.name not in have]:
            gaps[table.name] = lacking
    return gaps


def missing_unique_indexes(connection: sa.Connection) -> dict[str, list[list[str]]]:
    """Our unique indexes, by their columns, that an existing Babylon table does not have."""
    gaps: dict[str, list[list[str]]] = {}
    inspector, adopted = _adopted_tables(connection)
    for table in adopted:
        have = {tuple(index["column_names"]) for index in inspector.get_indexes(table.name) if index["unique"]}
        have |= {tuple(constraint["column_names"]) for constraint in inspector.get_unique_constraints(table.name)}
        wanted = [[column.name for column in index.columns] for index in table.indexes if index.unique]
        if lacking := [columns for columns in wanted if tuple(columns) not in have]:
            gaps[table.name] = lacking
    return gaps


def upgrade(engine: sa.Engine) -> UpgradeResult:
    with engine.begin() as connection:
        current = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
        config = _alembic_config(connection)
        existing = set(sa.inspect(connection).get_table_names())
        ours = {table.name for table in tables.BABYLON_TABLES}
        if current is None and (gaps := missing_columns(connection)):
            raise SchemaMismatch(f"the app's tables lack columns this pipeline needs: {gaps}")
        if current is None and (gaps := missing_unique_indexes(connection)):
            raise SchemaMismatch(f"the app's tables lack unique indexes this pipeline needs (on these columns): {gaps}")
        if current is None and ours <= existing:
            command.stamp(config, BASELINE)
            command.upgrade(config, "head")
            return UpgradeResult("adopted", _head(connection))
        command.upgrade(config, "head")
        after = _head(connection)
        if current is None:
            return UpgradeResult("created", after)
        return UpgradeResult("current" if after == current else "upgraded", after)


def _head(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()
