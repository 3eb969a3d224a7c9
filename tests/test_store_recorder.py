"""The recorder SDK: what an agent records is what the reader returns, under threads, tasks and any TZ."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.reader import read_window
from babylon_pipeline.store.recorder import (
    RecorderError,
    StepOrderError,
    TrajectoryRecorder,
    UnknownAgentError,
    UnknownTrajectory,
)
from babylon_pipeline.windows import window_of
from tests.babylon_app import create_agent_users, create_app_tables

W = "2025-11-15T10:00"


class SteppingClock:
    """A deterministic clock that advances a second per reading."""

    def __init__(self, start: datetime) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            self.now += timedelta(seconds=1)
            return self.now


def _record_one(recorder: TrajectoryRecorder, agent: str, *, steps: int = 3, scenario: str | None = "s1") -> str:
    with recorder.trajectory(agent, scenario_id=scenario, metadata={"persona": "whale", "agentName": agent}) as t:
        for n in range(steps):
            t.start_step({"agentBalance": 1000.0 - n, "agentPnL": 10.0 * n, "openPositions": n, "vibe": "calm"})
            t.log_provider_access("markets", {"open": 3}, "observe")
            t.log_llm_call(
                model="tiny-qwen",
                system_prompt=f"You are {agent}.",
                user_prompt=f"tick {n}",
                response=f'Buying. {{"action": "BUY_SHARES", "tick": {n}}}',
                temperature=1.0,
                max_tokens=64,
                prompt_tokens=12,
                completion_tokens=7,
                logprobs=[{"token": "Buy", "logprob": -0.5, "tokenId": 17}, {"token": "ing", "logprob": -0.1}],
            )
            t.complete_step({"actionType": "BUY_SHARES", "parameters": {"marketId": "m1", "amount": n}, "success": n != 1,
                             "error": "insufficient balance" if n == 1 else None}, reward=0.25 * n)
        t.finish(final_balance=997.0, final_pnl=20.0, game_knowledge={"trueProbabilities": {"m1": 0.8}})
    return t.trajectory_id


def test_round_trip_equals_what_the_agent_did(db: sa.Engine) -> None:
    clock = SteppingClock(datetime(2025, 11, 15, 10, 59, 50))  # the trajectory runs past the hour
    recorder = TrajectoryRecorder(db, clock=clock)
    trajectory_id = _record_one(recorder, "ava", steps=4)

    [trajectory] = list(read_window(db, W))
    assert trajectory.trajectory_id == trajectory_id
    assert trajectory.window_id == W and not trajectory.window_id_derived  # fixed at the start, not at the end
    assert trajectory.end_time > datetime(2025, 11, 15, 11, 0)
    assert trajectory.scenario_id == "s1" and trajectory.agent_id == "ava"
    assert trajectory.metadata == {"isTrainingData": True, "persona": "whale", "agentName": "ava",
                                   "gameKnowledge": {"trueProbabilities": {"m1": 0.8}}}
    assert [s.step_number for s in trajectory.steps] == [0, 1, 2, 3]
    assert [s.reward for s in trajectory.steps] == [0.0, 0.25, 0.5, 0.75]
    assert trajectory.total_reward == pytest.approx(1.5)
    assert trajectory.window_pnl == pytest.approx(30.0)
    step = trajectory.steps[2]
    assert step.environment_state.model_extra["vibe"] == "calm"
    assert step.provider_accesses[0].provider_name == "markets"
    call = step.llm_calls[0]
    assert (call.user_prompt, call.temperature, call.max_tokens, call.prompt_tokens) == ("tick 2", 1.0, 64, 12)
    assert call.messages == [{"role": "system", "content": "You are ava."}, {"role": "user", "content": "tick 2"}]
    assert [(lp.token, lp.logprob, lp.token_id) for lp in call.logprobs] == [("Buy", -0.5, 17), ("ing", -0.1, None)]
    assert trajectory.steps[1].action.success is False and trajectory.steps[1].action.error == "insufficient balance"
    assert trajectory.trades_executed == 3 and trajectory.metrics["errorCount"] == 1
    assert (trajectory.final_balance, trajectory.final_pnl) == (997.0, 20.0)

    with db.connect() as conn:
        row = conn.execute(sa.select(tables.trajectories)).one()
        logs = conn.execute(sa.select(tables.llm_call_logs).order_by(tables.llm_call_logs.c.timestamp)).all()
    assert row.updatedAt is not None and row.updatedAt == row.endTime
    assert len(logs) == 4 and {log.trajectoryId for log in logs} == {trajectory_id}
    assert [log.stepId for log in logs] == [s.step_id for s in trajectory.steps]
    assert logs[0].totalTokens == 19 and json.loads(logs[0].metadata)["logprobs"][0]["tokenId"] == 17


def test_twenty_threads_recording_at_once_lose_nothing(db: sa.Engine) -> None:
    recorder = TrajectoryRecorder(db, clock=SteppingClock(datetime(2025, 11, 15, 10, 0)))  # 2,400 readings < 1 h
    recorded: list[str] = []
    errors: list[BaseException] = []

    def agent(i: int) -> None:
        try:
            for _ in range(5):
                recorded.append(_record_one(recorder, f"agent-{i}", steps=3))
        except BaseException as error:  # noqa: BLE001 - surfaced by the assert below
            errors.append(error)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    read = list(read_window(db, W))
    assert sorted(t.trajectory_id for t in read) == sorted(recorded) and len(read) == 100
    assert all(len(t.steps) == 3 and t.steps_with_llm_calls == 3 for t in read)
    with db.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.llm_call_logs)) == 300


def test_asyncio_agents_share_one_recorder(db: sa.Engine) -> None:
    recorder = TrajectoryRecorder(db, clock=lambda: datetime(2025, 11, 15, 10, 30))

    async def agent(i: int) -> str:
        trajectory_id = recorder.start_trajectory(f"async-{i}", scenario_id="s")
        for n in range(2):
            recorder.start_step(trajectory_id, {"agentPnL": float(n)})
            await asyncio.sleep(0)  # let the other agents interleave mid-step
            recorder.complete_step(trajectory_id, {"actionType": "HOLD"}, reward=1.0)
        await recorder.aend_trajectory(trajectory_id, final_pnl=1.0)
        return trajectory_id

    async def main() -> list[str]:
        return await asyncio.gather(*(agent(i) for i in range(30)))

    ids = asyncio.run(main())
    read = {t.trajectory_id: t for t in read_window(db, W)}
    assert set(read) == set(ids)
    assert all(t.total_reward == 2.0 and len(t.steps) == 2 for t in read.values())


def test_window_ids_do_not_depend_on_the_process_time_zone(db: sa.Engine) -> None:
    saved = os.environ.get("TZ")
    os.environ["TZ"] = "America/New_York"
    time.tzset()
    try:
        recorder = TrajectoryRecorder(db)  # the wall clock
        before = datetime.now(UTC)
        trajectory_id = _record_one(recorder, "ny")
        after = datetime.now(UTC)
        local = datetime(2025, 11, 15, 5, 30).astimezone()  # 05:30 in New York is 10:30 UTC
        explicit = TrajectoryRecorder(db, clock=lambda: local)
        _record_one(explicit, "ny-local")
    finally:
        if saved is None:
            os.environ.pop("TZ")
        else:
            os.environ["TZ"] = saved
        time.tzset()
    expected = {window_of(before), window_of(after)}
    [trajectory] = [t for w in expected for t in read_window(db, w) if t.trajectory_id == trajectory_id]
    assert trajectory.window_id in expected
    assert [t.agent_id for t in read_window(db, W)] == ["ny-local"]


def test_misuse_is_a_clear_error(db: sa.Engine) -> None:
    recorder = TrajectoryRecorder(db)
    with pytest.raises(UnknownTrajectory, match="nope"):
        recorder.start_step("nope", {})
    trajectory_id = recorder.start_trajectory("a")
    with pytest.raises(StepOrderError, match="start_step"):
        recorder.log_llm_call(trajectory_id, model="m", system_prompt="s", user_prompt="u", response="r", temperature=1, max_tokens=1)
    recorder.start_step(trajectory_id, {})
    with pytest.raises(StepOrderError, match="still open"):
        recorder.start_step(trajectory_id, {})
    with pytest.raises(ValueError, match="finite"):
        recorder.complete_step(trajectory_id, {"actionType": "HOLD"}, reward=float("nan"))
    with pytest.raises(ValueError, match="window id"):
        recorder.start_trajectory("a", window_id="2025-11-15T10:30")
    recorder.end_trajectory(trajectory_id)
    with pytest.raises(UnknownTrajectory):
        recorder.end_trajectory(trajectory_id)


def test_a_failing_agent_is_recorded_with_error_status(db: sa.Engine) -> None:
    recorder = TrajectoryRecorder(db, clock=lambda: datetime(2025, 11, 15, 10, 5))
    with pytest.raises(RuntimeError, match="agent crashed"), recorder.trajectory("crashy") as t:
        t.start_step({"agentPnL": 0.0})
        raise RuntimeError("agent crashed")
    [trajectory] = list(read_window(db, W))
    assert trajectory.final_status == "error" and len(trajectory.steps) == 1 and trajectory.steps[0].action is None


def test_failed_write_keeps_the_trajectory_open_and_writes_nothing(db: sa.Engine) -> None:
    def counter():
        return map(str, itertools.count()).__next__

    _record_one(TrajectoryRecorder(db, clock=lambda: datetime(2025, 11, 15, 10, 5), ids=counter()), "first")
    recorder = TrajectoryRecorder(db, clock=lambda: datetime(2025, 11, 15, 10, 5), ids=counter())
    trajectory_id = recorder.start_trajectory("second")  # the same ids again: its insert must fail whole
    recorder.start_step(trajectory_id, {})
    recorder.log_llm_call(trajectory_id, model="m", system_prompt="s", user_prompt="u", response="r", temperature=1, max_tokens=1)
    recorder.complete_step(trajectory_id, {"actionType": "HOLD"}, reward=0)
    with pytest.raises(sa.exc.IntegrityError):
        recorder.end_trajectory(trajectory_id)
    recorder.start_step(trajectory_id, {})  # still open: the agent may retry or end it otherwise
    with db.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.trajectories)) == 1
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.llm_call_logs)) == 3


def test_ending_several_trajectories_is_all_or_nothing(db: sa.Engine) -> None:
    clock = SteppingClock(datetime(2025, 11, 15, 10, 0))
    recorder = TrajectoryRecorder(db, clock=clock)
    ids = [recorder.start_trajectory(f"agent-{i}", scenario_id="s") for i in range(3)]
    for trajectory_id in ids:
        recorder.start_step(trajectory_id, {"agentPnL": 0.0})
        recorder.complete_step(trajectory_id, {"actionType": "HOLD"}, reward=0.0)
    with pytest.raises(UnknownTrajectory):
        recorder.end_trajectories({ids[0]: {}, "never-started": {}})
    with db.connect() as conn:
        assert conn.scalar(sa.select(sa.func.count()).select_from(tables.trajectories)) == 0
    recorder.end_trajectories({trajectory_id: {"final_pnl": 1.0} for trajectory_id in ids})
    assert sorted(t.trajectory_id for t in read_window(db, W)) == sorted(ids)
    assert all(t.final_pnl == 1.0 for t in read_window(db, W))


@pytest.fixture
def app_db(empty_postgres: sa.Engine) -> sa.Engine:
    """The app's own tables, with trajectories."agentId" referencing "User"("id")."""
    with empty_postgres.begin() as conn:
        create_app_tables(conn)
    return empty_postgres


def _counts(engine: sa.Engine) -> tuple[int, int]:
    with engine.connect() as conn:
        return (conn.scalar(sa.select(sa.func.count()).select_from(tables.trajectories)),
                conn.scalar(sa.select(sa.func.count()).select_from(tables.llm_call_logs)))


def test_an_agent_that_is_not_a_user_is_a_typed_error_and_the_trajectory_waits_for_it(app_db: sa.Engine) -> None:
    recorder = TrajectoryRecorder(app_db, clock=SteppingClock(datetime(2025, 11, 15, 10, 0)))
    with app_db.begin() as conn:
        create_agent_users(conn, ["known"])
    known = recorder.start_trajectory("known", scenario_id="s")
    ghost = recorder.start_trajectory("ghost-agent", scenario_id="s")
    for trajectory_id in (known, ghost):
        recorder.start_step(trajectory_id, {"agentPnL": 0.0})
        recorder.log_llm_call(trajectory_id, model="m", system_prompt="s", user_prompt="u", response="r",
                              temperature=1.0, max_tokens=8)
        recorder.complete_step(trajectory_id, {"actionType": "HOLD"}, reward=0.5)
        recorder.start_step(trajectory_id, {"agentPnL": 1.0})  # still open when the write fails
    with pytest.raises(UnknownAgentError) as refused:
        recorder.end_trajectories({known: {}, ghost: {}})
    error = refused.value
    assert isinstance(error, RecorderError) and not isinstance(error, sa.exc.DBAPIError)
    assert error.agent_ids == ("ghost-agent",) and error.constraint == "trajectories_agentId_fkey"
    assert error.__cause__ is None and error.__suppress_context__  # no driver traceback chained to it
    assert "ghost-agent" in str(error) and '"User"("id")' in str(error) and "known" not in str(error)
    assert _counts(app_db) == (0, 0)  # all or nothing: the known agent's trajectory waits too
    recorder.complete_step(ghost, {"actionType": "HOLD"}, reward=0.25)  # its open step is open again
    with app_db.begin() as conn:
        create_agent_users(conn, ["ghost-agent"])
    recorder.end_trajectories({known: {}, ghost: {}})
    read = {t.agent_id: t for t in read_window(app_db, W)}
    assert [s.reward for s in read["ghost-agent"].steps] == [0.5, 0.25]
    assert [s.reward for s in read["known"].steps] == [0.5, 0.0]  # its dangling step, unacted
    assert _counts(app_db) == (2, 2)


def test_the_block_form_and_the_async_path_raise_the_same_error_and_keep_the_trajectory(app_db: sa.Engine) -> None:
    recorder = TrajectoryRecorder(app_db, clock=lambda: datetime(2025, 11, 15, 10, 30))
    with pytest.raises(UnknownAgentError, match="agent nobody is not a User row"), recorder.trajectory("nobody") as t:
        t.start_step({"agentPnL": 0.0})
        t.complete_step({"actionType": "HOLD"}, reward=1.0)
    assert not t.finished

    async def agent() -> str:
        trajectory_id = recorder.start_trajectory("async-nobody", scenario_id="s")
        recorder.start_step(trajectory_id, {"agentPnL": 0.0})
        recorder.complete_step(trajectory_id, {"actionType": "HOLD"}, reward=2.0)
        with pytest.raises(UnknownAgentError, match="async-nobody"):
            await recorder.aend_trajectory(trajectory_id, final_pnl=1.0)
        with app_db.begin() as conn:
            create_agent_users(conn, ["async-nobody"])
        await recorder.aend_trajectory(trajectory_id, final_pnl=1.0)
        return trajectory_id

    trajectory_id = asyncio.run(agent())
    with app_db.begin() as conn:
        create_agent_users(conn, ["nobody"])
    t.finish()
    read = {t.trajectory_id: t for t in read_window(app_db, W)}
    assert read[trajectory_id].final_pnl == 1.0 and read[trajectory_id].total_reward == 2.0
    assert read[t.trajectory_id].total_reward == 1.0 and t.finished


def test_a_duplicate_row_is_not_mistaken_for_an_unknown_agent(app_db: sa.Engine) -> None:
    with app_db.begin() as conn:
        create_agent_users(conn, ["first"])
    _record_one(TrajectoryRecorder(app_db, clock=lambda: datetime(2025, 11, 15, 10, 5), ids=lambda: "same"), "first",
                steps=0)
    recorder = TrajectoryRecorder(app_db, clock=lambda: datetime(2025, 11, 15, 10, 5), ids=lambda: "same")
    with pytest.raises(sa.exc.IntegrityError, match="trajectories_pkey"):  # the id clash, though "ghost" is no user either
        recorder.end_trajectory(recorder.start_trajectory("ghost"))
