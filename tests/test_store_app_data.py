"""The reader against tables and rows made the way the Babylon app makes them (Postgres, raw SQL)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import SchemaMismatch, upgrade
from babylon_pipeline.store.reader import QuarantinedRow, read_window
from babylon_pipeline.store.records import Trajectory
from babylon_pipeline.store.report import window_index, window_report
from tests.babylon_app import (
    INSERT_CALL_LOG,
    INSERT_TRAJECTORY,
    app_trajectory,
    create_agent_users,
    create_app_tables,
    logger_step,
    recorder_step,
)

W = "2025-11-15T10:00"
START = datetime(2025, 11, 15, 10, 0)
MS = int((START - datetime(1970, 1, 1)).total_seconds() * 1000)


@pytest.fixture
def app_db(empty_postgres: sa.Engine) -> sa.Engine:
    with empty_postgres.begin() as conn:
        create_app_tables(conn)
    return empty_postgres


def _insert(engine: sa.Engine, rows: list[dict], calls: list[dict] = ()) -> None:
    with engine.begin() as conn:
        create_agent_users(conn, (row["agentId"] for row in rows))
        conn.execute(INSERT_TRAJECTORY, rows)
        if calls:
            conn.execute(INSERT_CALL_LOG, list(calls))


def _call_log(row_id: str, trajectory_id: str, step_id: str, minute: int) -> dict:
    return {
        "id": row_id,
        "trajectoryId": trajectory_id,
        "stepId": step_id,
        "callId": f"call-{row_id}",
        "timestamp": START + timedelta(minutes=minute),
        "model": "qwen-2.5-7b",
        "purpose": "action",
        "systemPrompt": "You are Ava.",
        "userPrompt": f"from the log {row_id}",
        "messagesJson": json.dumps([{"role": "system", "content": "You are Ava."}, {"role": "user", "content": "x"}]),
        "response": f"logged response {row_id}",
        "temperature": 0.7,
        "maxTokens": 512,
        "promptTokens": 100,
        "completionTokens": 20,
    }


def _schema_snapshot(engine: sa.Engine) -> list[tuple]:
    with engine.connect() as conn:
        columns = conn.execute(
            sa.text(
                "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns "
                "WHERE table_schema = 'public' ORDER BY table_name, column_name"
            )
        ).all()
        indexes = conn.execute(
            sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY indexname")
        ).all()
    return [tuple(row) for row in columns + indexes]


def test_upgrade_adopts_the_apps_tables_and_changes_nothing(app_db: sa.Engine) -> None:
    _insert(app_db, [app_trajectory("r1", agent="a1", start=START, steps=[recorder_step(0, pnl=0, with_call=True, timestamp_ms=MS)], window_id=W, scenario_id=W)])
    before = _schema_snapshot(app_db)
    with app_db.connect() as conn:
        rows_before = conn.execute(sa.text("SELECT * FROM trajectories ORDER BY id")).all()

    assert upgrade(app_db).action == "adopted"
    assert upgrade(app_db).action == "current"

    pipeline_tables = ("alembic_version", *(table.name for table in tables.PIPELINE_TABLES))
    after = [row for row in _schema_snapshot(app_db) if not any(name in str(row) for name in pipeline_tables)]
    assert after == before
    assert {"babylon_deployment", "babylon_deployment_history"} <= set(sa.inspect(app_db).get_table_names())
    with app_db.connect() as conn:
        assert conn.execute(sa.text("SELECT * FROM trajectories ORDER BY id")).all() == rows_before


def test_upgrade_refuses_app_tables_missing_a_column(app_db: sa.Engine) -> None:
    with app_db.begin() as conn:
        conn.exec_driver_sql('ALTER TABLE trajectories DROP COLUMN "aiJudgeReasoning"')
    with pytest.raises(SchemaMismatch, match="aiJudgeReasoning"):
        upgrade(app_db)


def test_upgrade_refuses_app_tables_missing_a_unique_index_and_leaves_them_as_they_are(app_db: sa.Engine) -> None:
    with app_db.begin() as conn:
        conn.exec_driver_sql('DROP INDEX "reward_judgments_trajectoryId_key"')
        conn.exec_driver_sql('CREATE INDEX "reward_judgments_trajectoryId_key" ON reward_judgments ("trajectoryId")')
        conn.exec_driver_sql('DROP INDEX "trained_models_modelId_key"')
        conn.exec_driver_sql('ALTER TABLE trained_models ADD CONSTRAINT "model_id_unique" UNIQUE ("modelId")')  # counts
    before = _schema_snapshot(app_db)
    with pytest.raises(SchemaMismatch, match=r"unique indexes .*'reward_judgments': \[\['trajectoryId'\]\]") as refused:
        upgrade(app_db)
    assert "trained_models" not in str(refused.value)
    assert _schema_snapshot(app_db) == before  # not stamped, nothing created


def test_reader_parses_both_writer_shapes_field_by_field(app_db: sa.Engine) -> None:
    recorder_steps = [
        recorder_step(0, pnl=100.0, with_call=True, timestamp_ms=MS + 1_000),
        recorder_step(1, pnl=120.0, with_call=False, timestamp_ms=MS + 2_000),
        recorder_step(2, pnl=90.0, with_call=True, timestamp_ms=MS + 3_000),
    ]
    logger_steps = [
        logger_step(0, pnl=-5.0, call_id="c-0", timestamp_ms=MS + 60_000),
        logger_step(1, pnl=15.0, call_id=None, timestamp_ms=MS + 120_000),
    ]
    rows = [
        app_trajectory("rec", agent="ava", start=START + timedelta(minutes=1), steps=recorder_steps, window_id=W, scenario_id=W,
                       metadata={"isTrainingData": True, "gameKnowledge": {"trueProbabilities": {"m1": 0.7}}}),
        app_trajectory("log", agent="bo", start=START + timedelta(minutes=2), steps=logger_steps, window_id=None, scenario_id=None,
                       metadata={"agentName": "Bo", "goalDescription": "grow followers"}, final_pnl=None),
    ]
    calls = [
        _call_log("l1", "traj-log", "step-uuid-1", 2),      # fills the logger step that has no call
        _call_log("l2", "traj-rec", "step-1", 3),           # fills the recorder step by its number
        _call_log("l3", "traj-rec", "step-uuid-9", 3),      # matches no step: ignored
    ]
    _insert(app_db, rows, calls)

    items = list(read_window(app_db, W))
    assert all(isinstance(item, Trajectory) for item in items)
    by_id = {t.trajectory_id: t for t in items}
    rec, log = by_id["traj-rec"], by_id["traj-log"]

    assert (rec.id, rec.agent_id, rec.window_id, rec.scenario_id, rec.window_id_derived) == ("rec", "ava", W, W, False)
    assert rec.start_time == START + timedelta(minutes=1)
    assert rec.window_pnl == pytest.approx(-10.0)  # cumulative agentPnL: last minus first
    assert [s.step_number for s in rec.steps] == [0, 1, 2]
    assert rec.steps[0].llm_calls[0].system_prompt == "You are Ava, a trader."
    assert rec.steps[0].llm_calls[0].messages is None
    assert rec.steps[0].llm_calls[0].chat()[-1] == {"role": "assistant", "content": rec.steps[0].llm_calls[0].response}
    assert rec.steps[1].llm_calls[0].response == "logged response l2"
    assert rec.steps[1].llm_calls[0].model_extra["filledFrom"] == "llm_call_logs"
    assert rec.steps_with_llm_calls == 3 and rec.llm_call_count == 3
    assert rec.steps[0].action.action_type == "TRADING_DECISION"
    assert rec.steps[0].action.parameters["side"] == "YES"
    assert rec.steps[0].environment_state.agent_balance == 1100.0
    assert rec.metadata["gameKnowledge"]["trueProbabilities"] == {"m1": 0.7}
    assert rec.total_reward == 1.0 and rec.final_balance == 1000.0

    assert (log.window_id, log.window_id_derived, log.scenario_id, log.group_key) == (W, True, None, W)
    assert log.window_pnl == pytest.approx(20.0)
    first = log.steps[0]
    assert first.step_id == "step-uuid-0" and first.done is False and first.observation == {"feed": ["p1"]}
    assert first.model_extra["metadata"] == {"source": "plugin"}  # unknown keys kept
    assert first.environment_state.model_extra["agentPoints"] == 12
    assert first.provider_accesses[0].model_extra["providerId"] == "pa-1"
    call = first.llm_calls[0]
    assert (call.call_id, call.top_p, call.prompt_tokens, call.completion_tokens, call.purpose) == ("c-0", 0.9, 120, 30, "other")
    assert call.messages[1] == {"role": "user", "content": "observe 0"}
    assert first.action.model_extra["llmCallId"] == "c-0" and first.action.model_extra["immediateReward"] == 0.1
    assert log.steps[1].llm_calls[0].call_id == "call-l1"
    assert log.metadata == {"agentName": "Bo", "goalDescription": "grow followers"}
    assert log.final_pnl is None
    # unknown keys survive a dump in the app's own camelCase shape
    assert first.to_json_dict()["observation"] == {"feed": ["p1"]}
    assert first.to_json_dict()["environmentState"]["custom"] == {"mood": "ok"}


def test_window_membership_at_the_hour_boundaries(app_db: sa.Engine) -> None:
    step = [recorder_step(0, pnl=0, with_call=True, timestamp_ms=MS)]
    end = START + timedelta(hours=1)
    _insert(app_db, [
        # a tick that started at 10:59:59.9 and was stamped with its own window: stays in W
        app_trajectory("spans", agent="a", start=end - timedelta(milliseconds=100), steps=step, window_id=W, scenario_id=W),
        # stored windowId wins over startTime (the app's scenarioId may differ from it)
        app_trajectory("late", agent="a", start=end + timedelta(seconds=1), steps=step, window_id=W, scenario_id="2025-11-15T11:00"),
        # NULL windowId: the UTC hour of startTime decides, first and last millisecond included
        app_trajectory("first-ms", agent="b", start=START, steps=step, window_id=None, scenario_id=None),
        app_trajectory("last-ms", agent="b", start=end - timedelta(milliseconds=1), steps=step, window_id=None, scenario_id=None),
        app_trajectory("next", agent="b", start=end, steps=step, window_id=None, scenario_id=None),
        app_trajectory("before", agent="b", start=START - timedelta(milliseconds=1), steps=step, window_id=None, scenario_id=None),
        app_trajectory("bad-window", agent="c", start=START, steps=step, window_id="2025-11-15 10", scenario_id=None),
    ])
    assert {t.id for t in read_window(app_db, W)} == {"spans", "late", "first-ms", "last-ms"}
    assert {t.id for t in read_window(app_db, "2025-11-15T11:00")} == {"next"}
    assert {t.id for t in read_window(app_db, "2025-11-15T09:00")} == {"before"}
    index = window_index(app_db)
    assert index.windows == ["2025-11-15T09:00", W, "2025-11-15T11:00"]
    assert index.malformed_window_ids == {"2025-11-15 10": 1}


def test_malformed_rows_are_quarantined_with_reasons_and_counted(app_db: sa.Engine) -> None:
    good = [recorder_step(0, pnl=0, with_call=True, timestamp_ms=MS)]
    no_number = [{k: v for k, v in good[0].items() if k != "stepNumber"}]
    bad_ts = [{**good[0], "timestamp": -5}]
    nan_step = json.dumps(good).replace('"reward": 0.5', '"reward": NaN')
    huge_step = json.dumps(good).replace('"reward": 0.5', '"reward": 1e999')  # parses to infinity
    inf_ts = json.dumps(good).replace(f'"timestamp": {MS}', '"timestamp": Infinity')
    nan_number = json.dumps(good).replace('"stepNumber": 0', '"stepNumber": NaN')  # not a reward, not a time
    rows = [
        app_trajectory("ok", agent="a", start=START, steps=good, window_id=W, scenario_id=W),
        app_trajectory("json", agent="a", start=START, steps='[{"stepNumber": 0,', window_id=W, scenario_id=W),
        app_trajectory("empty", agent="a", start=START, steps="[]", window_id=W, scenario_id=W),
        app_trajectory("nan-total", agent="a", start=START, steps=good, window_id=W, scenario_id=W, total_reward=float("nan")),
        app_trajectory("nan-step", agent="a", start=START, steps=nan_step, window_id=W, scenario_id=W),
        app_trajectory("no-number", agent="a", start=START, steps=no_number, window_id=W, scenario_id=W),
        app_trajectory("bad-ts", agent="a", start=START, steps=bad_ts, window_id=W, scenario_id=W),
        app_trajectory("huge-step", agent="a", start=START, steps=huge_step, window_id=W, scenario_id=W),
        app_trajectory("inf-ts", agent="a", start=START, steps=inf_ts, window_id=W, scenario_id=W),
        app_trajectory("nan-number", agent="a", start=START, steps=nan_number, window_id=W, scenario_id=W),
        app_trajectory("meta", agent="a", start=START, steps=good, window_id=W, scenario_id=W, metadata="{not json"),
        app_trajectory("not-object", agent="a", start=START, steps=good, window_id=W, scenario_id=W, metadata="[1, 2]"),
        app_trajectory("wrong-type", agent="a", start=START, steps='[{"stepNumber": "zero", "timestamp": 1}]', window_id=W, scenario_id=W),
        app_trajectory("ok-again", agent="a", start=START, steps=good, window_id=W, scenario_id=W),  # the same tick twice
    ]
    _insert(app_db, rows)

    items = list(read_window(app_db, W))
    quarantined = {item.row_id: item for item in items if isinstance(item, QuarantinedRow)}
    assert {t.id for t in items if isinstance(t, Trajectory)} == {"ok"}
    assert {row_id: q.reason.value for row_id, q in quarantined.items()} == {
        "json": "invalid_json",
        "empty": "empty_steps",
        "nan-total": "non_finite_reward",
        "nan-step": "non_finite_reward",
        "no-number": "missing_field",
        "bad-ts": "bad_timestamp",
        "huge-step": "non_finite_reward",
        "inf-ts": "bad_timestamp",
        "nan-number": "invalid_field",
        "meta": "invalid_json",
        "not-object": "invalid_field",
        "wrong-type": "invalid_field",
        "ok-again": "duplicate",
    }
    assert "metadataJson" in quarantined["meta"].detail
    assert quarantined["nan-step"].detail.startswith("stepsJson[0.reward]")
    assert quarantined["inf-ts"].detail.startswith("stepsJson[0.timestamp]")
    assert quarantined["json"].trajectory_id == "traj-json"

    report = window_report(app_db, W).to_json_dict()
    assert report["trajectories"] == 14 and report["valid"] == 1
    assert report["quarantined"] == {
        "count": 13,
        "by_reason": {"bad_timestamp": 2, "duplicate": 1, "empty_steps": 1, "invalid_field": 3, "invalid_json": 2,
                      "missing_field": 1, "non_finite_reward": 3},
    }


def test_rows_waiting_for_their_logged_calls_keep_the_window_order(app_db: sa.Engine) -> None:
    def step(with_call: bool) -> list[dict]:
        return [recorder_step(0, pnl=0, with_call=with_call, timestamp_ms=MS)]

    waiting = {1, 3, 4}  # recorded without their exchange; llm_call_logs has it
    rows = [app_trajectory(f"r{i}", agent=f"a{i}", start=START + timedelta(minutes=i), steps=step(i not in waiting),
                           window_id=W, scenario_id=W) for i in range(7)]
    _insert(app_db, rows, [_call_log(f"l{i}", f"traj-r{i}", "0", i) for i in waiting])
    for batch_size in (2, 3, 500):
        items = list(read_window(app_db, W, batch_size=batch_size))
        assert [t.id for t in items] == [f"r{i}" for i in range(7)]
        filled = {t.id: call.response for t in items for call in t.steps[0].llm_calls
                  if call.model_extra.get("filledFrom")}
        assert filled == {f"r{i}": f"logged response l{i}" for i in waiting}
        assert all(t.steps_with_llm_calls == 1 for t in items)


def test_json_columns_read_exactly_as_json_loads_reads_them(app_db: sa.Engine) -> None:
    good = [recorder_step(0, pnl=0, with_call=True, timestamp_ms=MS)]
    texts = {
        "constants": '{"nan": NaN, "inf": Infinity, "neg": -Infinity}',
        "big": '{"big": 123456789012345678901234567890, "tiny": 5e-324, "neg0": -0.0}',
        "surrogate": '{"lone": "\\ud800", "pair": "\\ud83d\\ude00", "text": "\\u00c4v\\u00e4"}',
        "duplicate-key": '{"a": 1, "b": 2, "a": 3}',
        "trailing-comma": '{"a": 1,}',
        "extra-data": '{"a": 1} x',
    }
    _insert(app_db, [app_trajectory(name, agent=name, start=START, steps=good, window_id=W, scenario_id=W,
                                    metadata=text) for name, text in texts.items()])
    by_id = {item.row_id if isinstance(item, QuarantinedRow) else item.id: item for item in read_window(app_db, W)}
    for name, text in texts.items():
        try:
            expected = json.loads(text)
        except ValueError as error:
            assert by_id[name].reason == "invalid_json"
            assert by_id[name].detail == f"metadataJson is not valid JSON: {error.msg}"
        else:
            if name == "surrogate":  # no later stage can write a lone surrogate: it is read as U+FFFD
                expected["lone"] = "\ufffd"
            assert repr(by_id[name].metadata) == repr(expected)
            assert list(by_id[name].metadata) == list(expected)


def test_a_reader_stopped_early_gives_its_connections_back(app_db: sa.Engine) -> None:
    rows = [app_trajectory(f"r{i}", agent=f"a{i}", start=START + timedelta(minutes=i),
                           steps=[recorder_step(0, pnl=0, with_call=True, timestamp_ms=MS)], window_id=W, scenario_id=W)
            for i in range(20)]
    _insert(app_db, rows)
    items = read_window(app_db, W, batch_size=2)
    assert [next(items).id for _ in range(3)] == ["r0", "r1", "r2"]
    items.close()
    assert app_db.pool.checkedout() == 0
    _insert(app_db, [app_trajectory("early", agent="w", start=START, steps=[recorder_step(0, pnl=0, with_call=False,
                     timestamp_ms=MS)], window_id=W, scenario_id=W)], [_call_log("lw", "traj-early", "0", 0)])
    items = read_window(app_db, W, batch_size=2)  # the first batch waits for its llm_call_logs: a second connection
    assert next(items).id == "early"
    items.close()
    assert app_db.pool.checkedout() == 0
    assert [t.id for t in read_window(app_db, W, batch_size=7)] == ["early"] + [f"r{i}" for i in range(20)]


def test_a_tick_recorded_twice_is_found_on_both_databases(db: sa.Engine) -> None:
    def row(row_id: str, *, agent: str, minute: int, steps: list | str | None = None) -> dict:
        steps = steps or [recorder_step(0, pnl=0, with_call=True, timestamp_ms=MS + minute)]
        made = app_trajectory(row_id, agent=agent, start=START + timedelta(minutes=minute), steps=steps,
                              window_id=W, scenario_id=W)
        return made | {"updatedAt": START}

    rows = [
        row("broken", agent="a", minute=1, steps="[{"),
        row("tick", agent="a", minute=1),  # the broken row read first claims nothing
        row("tick-again", agent="a", minute=1),  # new ids, same agent, start and steps
        row("other-steps", agent="a", minute=1, steps=[recorder_step(0, pnl=0, with_call=True, timestamp_ms=MS + 99)]),
        row("other-agent", agent="b", minute=1),
        row("tick-third", agent="a", minute=1),  # not next to the first: other rows of that start came between
        row("later", agent="a", minute=40),
        row("later-again", agent="a", minute=40),
    ]
    with db.begin() as conn:
        conn.execute(sa.insert(tables.trajectories), rows)
    items = []
    for item in read_window(db, W):
        if isinstance(item, Trajectory):
            item.total_reward = -1.0  # a caller changing what it was given cannot hide a later repeat
        items.append(item)
    reasons = {item.row_id: item.reason.value for item in items if isinstance(item, QuarantinedRow)}
    assert reasons == {"broken": "invalid_json", "tick-again": "duplicate", "tick-third": "duplicate",
                       "later-again": "duplicate"}
    assert len(items) == len(rows)


def test_columns_of_the_wrong_type_in_sqlite_are_quarantined_not_fatal(empty_sqlite: sa.Engine) -> None:
    """SQLite stores what it is given whatever the column's type: a row can hold text in a number column."""
    tables.metadata.create_all(empty_sqlite)
    steps = [recorder_step(0, pnl=0, with_call=True, timestamp_ms=MS)]
    rows = [app_trajectory(name, agent=name, start=START + timedelta(minutes=i), steps=steps, window_id=W, scenario_id=W)
            | {"updatedAt": START} for i, name in enumerate(["ok", "duration", "reward", "balance"])]
    with empty_sqlite.begin() as conn:
        conn.execute(sa.insert(tables.trajectories), rows)
        for row_id, column, value in [("duration", "durationMs", "soon"), ("reward", "totalReward", "lots"),
                                      ("balance", "finalBalance", "some")]:
            conn.execute(sa.text(f'UPDATE trajectories SET "{column}" = :value WHERE id = :id'), {"value": value, "id": row_id})
    items = list(read_window(empty_sqlite, W))
    quarantined = {item.row_id: item for item in items if isinstance(item, QuarantinedRow)}
    assert [t.id for t in items if isinstance(t, Trajectory)] == ["ok"]
    assert {row_id: q.reason.value for row_id, q in quarantined.items()} == {
        "duration": "invalid_field", "reward": "non_finite_reward", "balance": "invalid_field"}
    assert "durationMs" in quarantined["duration"].detail and "soon" not in quarantined["duration"].detail
