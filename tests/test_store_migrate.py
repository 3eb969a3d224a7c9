"""`babylon db upgrade` on an empty database of each kind."""

from __future__ import annotations

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import VERSION_TABLE, upgrade


def test_upgrade_creates_every_table_and_index_then_is_a_no_op(empty_db: sa.Engine) -> None:
    first = upgrade(empty_db)
    assert (first.action, first.revision) == ("created", "0002")
    inspector = sa.inspect(empty_db)
    ours = (*tables.BABYLON_TABLES, *tables.PIPELINE_TABLES)
    assert set(inspector.get_table_names()) == {t.name for t in ours} | {VERSION_TABLE}
    for table in ours:
        assert [c["name"] for c in inspector.get_columns(table.name)] == [c.name for c in table.columns]
        expected = {index.name: index.unique for index in table.indexes}
        assert {i["name"]: bool(i["unique"]) for i in inspector.get_indexes(table.name)} == expected
    updated_at = {c["name"]: c for c in inspector.get_columns("trajectories")}["updatedAt"]
    assert updated_at["default"] is None and updated_at["nullable"] is False
    assert upgrade(empty_db).action == "current"


def test_upgrade_creates_only_what_a_partial_app_database_lacks(empty_db: sa.Engine) -> None:
    tables.trajectories.create(empty_db)
    now = sa.func.now() if empty_db.dialect.name == "postgresql" else sa.text("CURRENT_TIMESTAMP")
    with empty_db.begin() as conn:
        conn.execute(
            sa.insert(tables.trajectories).values(
                id="kept", trajectoryId="t", agentId="a", startTime=now, endTime=now, durationMs=0, stepsJson="[]",
                rewardComponentsJson="{}", metricsJson="{}", metadataJson="{}", totalReward=0, episodeLength=0,
                finalStatus="completed", updatedAt=now,
            )
        )
    assert upgrade(empty_db).action == "created"
    assert "market_outcomes" in sa.inspect(empty_db).get_table_names()
    with empty_db.connect() as conn:
        assert conn.scalars(sa.select(tables.trajectories.c.id)).all() == ["kept"]


def test_upgrade_adopts_tables_made_from_our_definitions_including_the_pipelines_own(db: sa.Engine) -> None:
    """The tests' `db` fixture (and any store made with `create_all`): stamped, nothing created twice."""
    result = upgrade(db)
    assert (result.action, result.revision) == ("adopted", "0002")
    assert upgrade(db).action == "current"
