"""The deployment state on SQLite and Postgres: transitions, refusals, adoption of a legacy database, races,
and the app's legacy model selection returning the version in service after every change."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from babylon_pipeline.serving.state import (
    Deployment,
    DeploymentMoved,
    DeploymentRefused,
    deployment_history,
    promote,
    read_deployment,
    rollback,
    set_canary_fraction,
    start_canary,
)
from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.registry import model_in_service, open_batch, register_model, start_batch
from tests.training_rows import insert_rows, scored_group

M = tables.trained_models
T0 = datetime(2025, 11, 15, 12, 0)
GOOD = {"verdict": "better", "guardrails_passed": True, "diff_mean": 0.04}


def app_pick(engine: sa.Engine, pinned: str | None = None) -> str | None:
    """The app's `getModelForInference`, written from its description: the pinned version if that row is
    `ready`, else the newest (`createdAt`) row whose status is `ready` or `deployed`."""
    with engine.connect() as conn:
        if pinned is not None and conn.scalar(
                sa.text("SELECT version FROM trained_models WHERE version = :v AND status = 'ready'"), {"v": pinned}):
            return pinned
        return conn.scalar(sa.text("SELECT version FROM trained_models WHERE status IN ('ready', 'deployed') "
                                   "ORDER BY \"createdAt\" DESC LIMIT 1"))


def statuses(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(M.c.version, M.c.status)).all())


def assert_app_serves_the_version_in_service(engine: sa.Engine, *pins: str) -> str | None:
    in_service = read_deployment(engine).in_service
    served = model_in_service(engine)
    assert (served.version if served else None) == in_service
    for pinned in (None, *pins):
        assert app_pick(engine, pinned) == in_service
    assert sum(status in ("ready", "deployed") for status in statuses(engine).values()) == (in_service is not None)
    return in_service


@pytest.fixture
def store(empty_db: sa.Engine) -> sa.Engine:
    upgrade(empty_db)
    return empty_db


def add_model(engine: sa.Engine, version: str, *, created: datetime, status: str = "candidate",
              metrics: dict | None = GOOD, deployed: datetime | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(M).values(
            id=f"tm-{version}", modelId=f"babylon-agent-{version}", version=version, baseModel="base", status=status,
            storagePath=f"models/{version}", evalMetrics=metrics, createdAt=created, updatedAt=created,
            deployedAt=deployed))


def evaluate(engine: sa.Engine, version: str, metrics: dict = GOOD) -> None:
    with engine.begin() as conn:
        conn.execute(sa.update(M).where(M.c.version == version).values(evalMetrics=metrics))


def register(engine: sa.Engine, version: str, window: str, moment: datetime) -> None:
    """The training path: a batch opened, started and its model registered."""
    rows = scored_group(window, "s", [0.1, 0.9], prefix=f"{version}-t")
    insert_rows(engine, rows)
    ids = [row["trajectoryId"] for row in rows]
    open_batch(engine, f"b-{version}", "base", version, [window] * 2, ids, dict.fromkeys(ids, 0.5), now=moment)
    start_batch(engine, f"b-{version}", now=moment)
    register_model(engine, f"b-{version}", version, f"models/{version}", "base", 0.5, None, 0.1, 0.0, now=moment)


def test_every_stage_keeps_the_apps_pick_on_the_version_in_service(store: sa.Engine) -> None:
    register(store, "v1.0.0", "2025-11-15T10:00", T0)
    assert statuses(store) == {"v1.0.0": "candidate"}
    assert assert_app_serves_the_version_in_service(store) is None  # the base serves; the candidate is invisible
    evaluate(store, "v1.0.0")

    canary = start_canary(store, "v1.0.0", 0.1, actor="test", reason="passed evaluation", now=T0 + timedelta(hours=1))
    assert (canary.in_service, canary.canary, canary.canary_fraction, canary.stage) == (None, "v1.0.0", 0.1, 0)
    assert len(canary.salt) == 16 and canary.canary_started_at == T0 + timedelta(hours=1)
    assert read_deployment(store) == canary and statuses(store) == {"v1.0.0": "canary"}
    assert assert_app_serves_the_version_in_service(store, "v1.0.0") is None

    staged = set_canary_fraction(store, 0.5, actor="watch", reason="enough data", now=T0 + timedelta(hours=2))
    assert (staged.canary_fraction, staged.stage, staged.salt) == (0.5, 1, canary.salt)
    assert assert_app_serves_the_version_in_service(store, "v1.0.0") is None

    promoted = promote(store, actor="watch", reason="no regression", now=T0 + timedelta(hours=3))
    assert promoted == Deployment("v1.0.0", None, 0.0, 0, "", None, T0 + timedelta(hours=3))
    assert assert_app_serves_the_version_in_service(store, "v1.0.0") == "v1.0.0"

    register(store, "v1.1.0", "2025-11-15T11:00", T0 + timedelta(hours=4))  # newer than v1.0.0, still invisible
    assert assert_app_serves_the_version_in_service(store, "v1.1.0") == "v1.0.0"
    evaluate(store, "v1.1.0")
    start_canary(store, "v1.1.0", 0.2, actor="test", reason="next", now=T0 + timedelta(hours=5))
    assert assert_app_serves_the_version_in_service(store, "v1.1.0") == "v1.0.0"
    promote(store, actor="test", reason="fine", now=T0 + timedelta(hours=6))
    assert assert_app_serves_the_version_in_service(store, "v1.0.0", "v1.1.0") == "v1.1.0"
    assert statuses(store) == {"v1.0.0": "archived", "v1.1.0": "deployed"}

    back = rollback(store, actor="alice", reason="complaints", now=T0 + timedelta(hours=7))
    assert (back.in_service, back.canary) == ("v1.0.0", None)
    assert assert_app_serves_the_version_in_service(store, "v1.0.0", "v1.1.0") == "v1.0.0"
    assert statuses(store) == {"v1.0.0": "deployed", "v1.1.0": "archived"}

    register(store, "v1.2.0", "2025-11-15T12:00", T0 + timedelta(hours=8))
    evaluate(store, "v1.2.0")
    start_canary(store, "v1.2.0", 0.1, actor="test", reason="third", now=T0 + timedelta(hours=9))
    aborted = rollback(store, actor="watch", reason="regression", now=T0 + timedelta(hours=10))
    assert (aborted.in_service, aborted.canary, aborted.canary_fraction) == ("v1.0.0", None, 0.0)
    assert assert_app_serves_the_version_in_service(store, "v1.2.0") == "v1.0.0"
    assert statuses(store)["v1.2.0"] == "archived"

    with store.connect() as conn:
        models = {r.version: r for r in conn.execute(sa.select(M))}
    assert models["v1.0.0"].deployedAt == T0 + timedelta(hours=7) and models["v1.0.0"].archivedAt is None
    assert models["v1.1.0"].archivedAt == T0 + timedelta(hours=7)
    assert (models["v1.2.0"].archivedAt, models["v1.2.0"].deployedAt) == (T0 + timedelta(hours=10), None)

    history = deployment_history(store)
    assert list(history.columns) == ["at", "actor", "action", "version", "from_version", "fraction", "reason"]
    rows = history[["action", "version", "from_version", "actor"]].astype(object).where(history.notna(), None)
    assert [tuple(r) for r in rows.itertuples(index=False)] == [
        ("adopt", None, None, "test"),
        ("canary", "v1.0.0", None, "test"),
        ("stage", "v1.0.0", None, "watch"),
        ("promote", "v1.0.0", None, "watch"),
        ("canary", "v1.1.0", "v1.0.0", "test"),
        ("promote", "v1.1.0", "v1.0.0", "test"),
        ("rollback", "v1.0.0", "v1.1.0", "alice"),
        ("canary", "v1.2.0", "v1.0.0", "test"),
        ("rollback", "v1.0.0", "v1.2.0", "watch"),
    ]
    assert history["reason"].iloc[6] == "complaints" and history["fraction"].iloc[2] == 0.5


def test_rolling_back_the_first_promoted_version_brings_the_base_back_and_to_returns_an_earlier_one(store) -> None:
    for i, version in enumerate(("v1.0.0", "v1.1.0")):
        add_model(store, version, created=T0 + timedelta(hours=i))
        start_canary(store, version, 0.5, actor="t", reason="")
        promote(store, actor="t", reason="")
    assert rollback(store, to="v1.0.0", actor="t", reason="by hand").in_service == "v1.0.0"
    assert assert_app_serves_the_version_in_service(store) == "v1.0.0"
    assert rollback(store, actor="t", reason="v1.0.0 replaced the base").in_service is None
    assert assert_app_serves_the_version_in_service(store) is None
    assert set(statuses(store).values()) == {"archived"}
    assert rollback(store, to="v1.1.0", actor="t", reason="").in_service == "v1.1.0"  # served before: may return
    assert assert_app_serves_the_version_in_service(store) == "v1.1.0"


def test_nonsense_is_refused_with_a_clear_message_and_changes_nothing(store: sa.Engine) -> None:
    add_model(store, "v1.0.0", created=T0)
    add_model(store, "v1.1.0", created=T0 + timedelta(hours=1), metrics=None)
    add_model(store, "v1.2.0", created=T0 + timedelta(hours=2), metrics={"verdict": "worse", "guardrails_passed": True})
    add_model(store, "v1.3.0", created=T0 + timedelta(hours=3),
              metrics={"verdict": "better", "guardrails_passed": False})
    add_model(store, "v1.4.0", created=T0 + timedelta(hours=4), metrics='{"verdict": "no_difference", '
                                                                      '"guardrails_passed": true}')
    def canary(version: str, fraction: float = 0.1):
        return lambda: start_canary(store, version, fraction, actor="t", reason="")

    refusals = [
        (lambda: rollback(store, actor="t", reason=""), "nothing to roll back to: the base serves"),
        (lambda: promote(store, actor="t", reason=""), "no canary is running: nothing to promote"),
        (lambda: set_canary_fraction(store, 0.5, actor="t", reason=""), "no canary is running"),
        (canary("v9.0.0"), r"unknown version 'v9.0.0' \(registered: v1"),
        (canary("v1.1.0"), "v1.1.0 was never evaluated"),
        (canary("v1.2.0"), "v1.2.0 was judged worse"),
        (canary("v1.3.0"), "v1.3.0 did not pass its evaluation guardrails"),
        *[(canary("v1.0.0", f), r"in \(0, 1\]") for f in (0, -0.1, 1.5, float("nan"), True)],
    ]
    for attempt, message in refusals:
        with pytest.raises(DeploymentRefused, match=message):
            attempt()
    assert read_deployment(store).canary is None and set(statuses(store).values()) == {"candidate"}

    running = start_canary(store, "v1.4.0", 0.3, actor="t", reason="JSON text in evalMetrics is read too")
    more = [
        (canary("v1.0.0"), "canary v1.4.0 is running at 30%"),
        (lambda: set_canary_fraction(store, 0.3, actor="t", reason=""), "only raises the share"),
        (lambda: set_canary_fraction(store, 2.0, actor="t", reason=""), r"in \(0, 1\]"),
        (lambda: rollback(store, to="v1.4.0", actor="t", reason=""), "is the canary being rolled back"),
        (lambda: rollback(store, to="v1.0.0", actor="t", reason=""), "v1.0.0 is candidate and never served"),
        (lambda: rollback(store, to="v7.0.0", actor="t", reason=""), "unknown version 'v7.0.0'"),
    ]
    for attempt, message in more:
        with pytest.raises(DeploymentRefused, match=message):
            attempt()
    assert read_deployment(store) == running and len(deployment_history(store)) == 2  # adopt + canary
    promote(store, actor="t", reason="")
    with pytest.raises(DeploymentRefused, match="v1.4.0 already serves all agents"):
        start_canary(store, "v1.4.0", 0.1, actor="t", reason="")
    with pytest.raises(DeploymentRefused, match="v1.4.0 already serves all agents and no canary runs"):
        rollback(store, to="v1.4.0", actor="t", reason="")
    rollback(store, actor="t", reason="")
    with pytest.raises(DeploymentRefused, match="v1.4.0 is archived: only a candidate starts a canary"):
        start_canary(store, "v1.4.0", 0.1, actor="t", reason="")


def test_a_legacy_database_is_adopted_with_the_version_the_app_was_serving(store: sa.Engine) -> None:
    add_model(store, "v1.0.0", created=T0, status="ready", metrics=None)
    add_model(store, "v1.1.0", created=T0 + timedelta(hours=1), status="ready", metrics=None)
    add_model(store, "v1.2.0", created=T0 + timedelta(hours=2))
    assert read_deployment(store) == Deployment("v1.1.0", None, 0.0, 0, "", None, None)
    assert model_in_service(store).version == "v1.1.0" == app_pick(store)

    start_canary(store, "v1.2.0", 0.1, actor="deploy_job", reason="", now=T0 + timedelta(hours=3))
    assert statuses(store) == {"v1.0.0": "archived", "v1.1.0": "deployed", "v1.2.0": "canary"}
    assert assert_app_serves_the_version_in_service(store, "v1.0.0", "v1.1.0") == "v1.1.0"
    with store.connect() as conn:
        old = conn.execute(sa.select(M).where(M.c.version == "v1.0.0")).one()
    assert (old.deployedAt, old.archivedAt) == (T0, T0 + timedelta(hours=3))  # it served from its creation
    assert list(deployment_history(store)["action"]) == ["adopt", "canary"]
    rollback(store, actor="t", reason="")  # the canary goes
    with pytest.raises(DeploymentRefused, match="nothing known to roll back to: v1.1.0 was not promoted"):
        rollback(store, actor="t", reason="")
    assert rollback(store, to="v1.0.0", actor="t", reason="it served under the legacy rule").in_service == "v1.0.0"


def test_agents_using_follows_the_split_of_the_newest_windows_agents(store: sa.Engine) -> None:
    rows = [row | {"agentId": f"agent-{i}"} for i, row in enumerate(scored_group("2025-11-15T10:00", "s", [0.5] * 10))]
    insert_rows(store, rows)
    add_model(store, "v1.0.0", created=T0)
    add_model(store, "v1.1.0", created=T0 + timedelta(hours=1))
    start_canary(store, "v1.0.0", 0.5, actor="t", reason="")
    promote(store, actor="t", reason="")
    start_canary(store, "v1.1.0", 0.3, actor="t", reason="")
    with store.connect() as conn:
        assert dict(conn.execute(sa.select(M.c.version, M.c.agentsUsing)).all()) == {"v1.0.0": 7, "v1.1.0": 3}
    rollback(store, actor="t", reason="")
    with store.connect() as conn:
        assert dict(conn.execute(sa.select(M.c.version, M.c.agentsUsing)).all()) == {"v1.0.0": 10, "v1.1.0": 0}


def _racing_setup(store: sa.Engine) -> None:
    add_model(store, "v1.0.0", created=T0)
    add_model(store, "v1.1.0", created=T0 + timedelta(hours=1))
    start_canary(store, "v1.0.0", 0.5, actor="setup", reason="")
    promote(store, actor="setup", reason="")
    start_canary(store, "v1.1.0", 0.5, actor="setup", reason="")
    promote(store, actor="setup", reason="")  # v1.1.0 serves, v1.0.0 served before
    for i in range(2, 12):
        add_model(store, f"v1.{i}.0", created=T0 + timedelta(hours=i))


def test_deploy_and_rollback_racing_never_leave_two_versions_in_service(store: sa.Engine) -> None:
    """Threads deploying, promoting and rolling back at once, each its own connection; a watcher checks in
    one statement, all the time, that the app can never see two versions."""
    _racing_setup(store)
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def watcher() -> None:
        query = sa.text("SELECT count(*) FROM trained_models WHERE status IN ('ready', 'deployed')")
        with store.connect() as conn:
            while not stop.is_set():
                seen.append(conn.scalar(query))
                conn.commit()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(15):
                action = rng.choice(("deploy", "promote", "rollback", "rollback_to"))
                try:
                    if action == "deploy":
                        start_canary(store, f"v1.{rng.randrange(2, 12)}.0", 0.5, actor=f"w{seed}", reason="")
                    elif action == "promote":
                        promote(store, actor=f"w{seed}", reason="")
                    elif action == "rollback":
                        rollback(store, actor=f"w{seed}", reason="")
                    else:
                        rollback(store, to=rng.choice(("v1.0.0", "v1.1.0")), actor=f"w{seed}", reason="")
                except DeploymentRefused:
                    pass
        except BaseException as error:  # noqa: BLE001  reported below
            errors.append(error)

    watching = threading.Thread(target=watcher)
    watching.start()
    workers = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    watching.join()
    assert errors == []
    assert seen and max(seen) <= 1
    state = read_deployment(store)
    assert_app_serves_the_version_in_service(store)
    on_canary = [v for v, status in statuses(store).items() if status == "canary"]
    assert on_canary == ([state.canary] if state.canary else [])
    assert len(deployment_history(store)) > 6


def test_a_change_decided_on_a_deployment_that_moved_is_refused_under_the_lock(store: sa.Engine) -> None:
    """Two watchers read the same canary and both decide to roll it back: the second, arriving after the
    first, would otherwise take the version in service out too. Each change `expected=` what it read."""
    _racing_setup(store)  # v1.1.0 serves, it replaced v1.0.0
    start_canary(store, "v1.2.0", 0.1, actor="setup", reason="")
    seen = read_deployment(store)
    barrier, outcomes = threading.Barrier(2), []

    def watch() -> None:
        barrier.wait()
        try:
            outcomes.append(rollback(store, actor="watch", reason="regression", expected=seen))
        except DeploymentMoved as moved:
            outcomes.append(moved)

    threads = [threading.Thread(target=watch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    moved = [o for o in outcomes if isinstance(o, DeploymentMoved)]
    assert len(outcomes) == 2 and len(moved) == 1
    assert str(moved[0]).startswith("the deployment changed meanwhile (now: v1.1.0 serves all agents; decided on: "
                                    "canary v1.2.0 at 10% stage 0")
    after = read_deployment(store)
    assert (after.in_service, after.canary) == ("v1.1.0", None) and list(deployment_history(store)["action"])[-1] == \
        "rollback"

    # every transition takes the expectation; a person's change in between refuses the stale one, changing nothing
    start_canary(store, "v1.3.0", 0.1, actor="setup", reason="")
    seen = read_deployment(store)
    set_canary_fraction(store, 0.5, actor="alice", reason="by hand", expected=seen)
    history, models = deployment_history(store), statuses(store)
    for change in (lambda: set_canary_fraction(store, 0.6, actor="watch", reason="", expected=seen),
                   lambda: promote(store, actor="watch", reason="", expected=seen),
                   lambda: rollback(store, actor="watch", reason="", expected=seen),
                   lambda: start_canary(store, "v1.4.0", 0.1, actor="watch", reason="", expected=seen)):
        with pytest.raises(DeploymentMoved, match="decided on: canary v1.3.0 at 10% stage 0"):
            change()
    assert deployment_history(store).equals(history) and statuses(store) == models
    assert promote(store, actor="watch", reason="", expected=read_deployment(store)).in_service == "v1.3.0"
