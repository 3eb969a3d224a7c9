"""`babylon simulate` into the app's own tables: agents become `User` rows, and seeds share windows safely."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa

from babylon_pipeline.cli import main
from babylon_pipeline.rewards import score_outcomes
from babylon_pipeline.rewards.markets import MarketOutcomes
from babylon_pipeline.sim import simulate
from babylon_pipeline.sim.determinism import SeededIds
from babylon_pipeline.sim.personas import make_agents
from babylon_pipeline.store import tables
from babylon_pipeline.store.outcomes import read_outcomes_since
from babylon_pipeline.store.reader import read_window
from babylon_pipeline.store.records import Trajectory
from tests.babylon_app import INSERT_TRAJECTORY, app_trajectory, create_agent_users, create_app_tables

W, W2 = "2025-11-15T10:00", "2025-11-15T11:00"
START = datetime(2025, 11, 15, 10, 0)
USERS = sa.table("User", sa.column("id"), sa.column("username"), sa.column("isAgent"), sa.column("createdAt"),
                 sa.column("updatedAt"))


@pytest.fixture
def app_db(empty_postgres: sa.Engine) -> sa.Engine:
    with empty_postgres.begin() as conn:
        create_app_tables(conn)
    return empty_postgres


@pytest.fixture(params=["app", "sqlite"])
def any_store(request, tmp_path) -> sa.Engine:
    """The app's Postgres tables (with the foreign key), and the embedded store (no `User` table)."""
    if request.param == "app":
        return request.getfixturevalue("app_db")
    from babylon_pipeline.store.migrate import upgrade

    engine = request.getfixturevalue("empty_sqlite")
    upgrade(engine)
    return engine


def _url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def _users(engine: sa.Engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        return {row.id: (row.username, row.isAgent, row.createdAt, row.updatedAt) for row in conn.execute(sa.select(USERS))}


def _count(engine: sa.Engine, table: sa.Table) -> int:
    with engine.connect() as conn:
        return conn.scalar(sa.select(sa.func.count()).select_from(table))


def test_simulate_makes_its_agents_users_and_a_rerun_reuses_them(app_db: sa.Engine, capsys) -> None:
    argv = ["simulate", "--database-url", _url(app_db), "--agents", "7", "--seed", "5", "--hours", "1"]
    assert main([*argv, "--start", W]) == 0
    users = _users(app_db)
    handles = {p.agent_id: p.handle for p in make_agents(5, 7)}
    assert {agent_id: row[:2] for agent_id, row in users.items()} == {
        agent_id: (f"{handle}_s5", True) for agent_id, handle in handles.items()}
    assert all(row[3] is not None for row in users.values())  # updatedAt: no database default
    assert len(list(read_window(app_db, W))) == 7
    assert main([*argv, "--start", W2]) == 0  # the same agents, an hour later: the users are reused as they are
    assert _users(app_db) == users
    assert len(list(read_window(app_db, W2))) == 7
    assert main(["simulate", "--database-url", _url(app_db), "--agents", "3", "--seed", "6", "--hours", "2",
                 "--start", W]) == 0  # a new seed: its own agents join, the others stay
    after = _users(app_db)
    assert len(after) == 10 and {k: after[k] for k in users} == users
    assert "simulated 2 windows" in capsys.readouterr().out


def test_a_user_is_created_in_the_transaction_of_its_first_trajectory(app_db: sa.Engine) -> None:
    clash = SeededIds(5, W)()  # the row id simulate gives its first trajectory
    with app_db.begin() as conn:
        create_agent_users(conn, ["someone"])
        conn.execute(INSERT_TRAJECTORY, app_trajectory(clash, agent="someone", start=START, steps="[]", window_id=W,
                                                       scenario_id=None))
    with pytest.raises(sa.exc.IntegrityError, match="trajectories_pkey"):
        simulate(app_db, hours=1, agents=7, seed=5, start=START)
    assert set(_users(app_db)) == {"someone"}  # the first scenario's users went back with its trajectories


def test_no_create_users_refuses_before_writing_and_names_the_agents_and_the_constraint(app_db: sa.Engine, capsys) -> None:
    argv = ["simulate", "--database-url", _url(app_db), "--agents", "3", "--seed", "5", "--hours", "1", "--start", W,
            "--no-create-users"]
    with app_db.begin() as conn:
        create_agent_users(conn, ["sim-5-agent-0001"])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("babylon: 2 of the 3 agents are not User rows")
    assert "sim-5-agent-0000, sim-5-agent-0002" in err and "sim-5-agent-0001" not in err
    assert 'trajectories."agentId" references "User"("id") (constraint trajectories_agentId_fkey)' in err
    assert "Traceback" not in err
    assert (_count(app_db, tables.trajectories), _count(app_db, tables.market_outcomes), len(_users(app_db))) == (0, 0, 1)
    with app_db.begin() as conn:
        create_agent_users(conn, ["sim-5-agent-0000", "sim-5-agent-0002"])
    assert main(argv) == 0  # once they exist, the same command writes the window
    assert len(list(read_window(app_db, W))) == 3


def test_no_create_users_needs_nothing_without_the_apps_user_table(db: sa.Engine) -> None:
    summary = simulate(db, hours=1, agents=3, seed=5, start=START, create_users=False)
    assert summary.trajectories == 3


def _assert_every_trade_resolves(engine: sa.Engine, seeds: set[str]) -> None:
    trajectories = [t for t in read_window(engine, W) if isinstance(t, Trajectory)]
    outcomes = read_outcomes_since(engine, W)
    rewards = {r.trajectory_id: r for r in score_outcomes(trajectories, outcomes).rewards}
    markets = MarketOutcomes.from_rows(outcomes)
    by_seed: dict[str, int] = {}
    for t in trajectories:
        seed = t.agent_id.split("-")[1]
        assert t.scenario_id.startswith(f"{W}:seed{seed}:")  # a scenario holds one seed's agents
        reward = rewards[t.trajectory_id]
        assert reward.pending_trades == 0 and not reward.pending_markets and not reward.pending_tickers
        by_seed[seed] = by_seed.get(seed, 0) + reward.scored_trades
        for market_id, outcome in t.metadata["gameKnowledge"]["actualOutcomes"].items():
            assert markets.resolution(market_id) == outcome  # the row of this agent's market, not another seed's
    assert set(by_seed) == seeds and all(by_seed.values())


def test_two_seeds_in_one_window_keep_both_seeds_outcomes(any_store: sa.Engine) -> None:
    app_db = any_store
    simulate(app_db, hours=1, agents=10, seed=7, start=START)
    with app_db.connect() as conn:
        first = {repr(tuple(row)) for row in conn.execute(sa.select(tables.market_outcomes))}
    simulate(app_db, hours=1, agents=10, seed=8, start=START)
    with app_db.connect() as conn:
        both = {repr(tuple(row)) for row in conn.execute(sa.select(tables.market_outcomes))}
        scenarios = conn.execute(sa.select(tables.trajectories.c.scenarioId).distinct()).scalars().all()
    assert first < both and len(both) == 2 * len(first) == 2 * 2 * 5  # added, none deleted or changed
    assert len(scenarios) == 4
    _assert_every_trade_resolves(app_db, {"7", "8"})


def test_a_seed_avoids_the_markets_and_tickers_a_window_already_has(any_store: sa.Engine, tmp_path) -> None:
    from babylon_pipeline.store.db import make_engine
    from babylon_pipeline.store.migrate import upgrade

    app_db = any_store

    scratch = make_engine(f"sqlite:///{tmp_path / 'alone.db'}")
    upgrade(scratch)
    simulate(scratch, hours=1, agents=5, seed=8, start=START)  # what seed 8 writes into an empty window
    alone = read_outcomes_since(scratch, W)
    scratch.dispose()
    foreign = [{"id": f"other:{i}", "windowId": W, "stockTicker": row["stockTicker"], "changePercent": -50.0,
                "predictionMarketId": row["predictionMarketId"], "outcome": row["outcome"] and "NO"}
               for i, row in enumerate(alone)]  # another writer got there first with the same names
    with app_db.begin() as conn:
        conn.execute(sa.insert(tables.market_outcomes), foreign)
    before = read_outcomes_since(app_db, W)
    simulate(app_db, hours=1, agents=5, seed=8, start=START)
    rows = read_outcomes_since(app_db, W)
    mine = [row for row in rows if not row["id"].startswith("other:")]
    assert len(mine) == len(alone) == 5
    assert [row for row in rows if row["id"].startswith("other:")] == before  # not overwritten
    names = [row["predictionMarketId"] or row["stockTicker"] for row in mine]
    assert len(set(names)) == 5 and not set(names) & {row["predictionMarketId"] or row["stockTicker"] for row in foreign}
    _assert_every_trade_resolves(app_db, {"8"})


def test_a_true_duplicate_is_refused_and_the_message_suggests_only_what_is_safe(db: sa.Engine) -> None:
    from babylon_pipeline.sim import AlreadySimulated

    simulate(db, hours=2, agents=5, seed=7, start=START)
    with pytest.raises(AlreadySimulated) as refused:
        simulate(db, hours=1, agents=5, seed=7, start=datetime(2025, 11, 15, 11, 0))
    assert str(refused.value) == (
        "windows 2025-11-15T11:00 already hold seed 7's agents: simulating them again would record those agents "
        "twice; another --seed can share these windows, or pick --start and --hours that leave them out")
    simulate(db, hours=1, agents=5, seed=8, start=START)  # both suggestions, followed, are safe
    simulate(db, hours=1, agents=5, seed=7, start=datetime(2025, 11, 15, 12, 0))
    with db.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.trajectories)) == 20
