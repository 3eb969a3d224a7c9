"""The hostile row corpus: rows the Babylon tables can hold that once stopped a window, as data.

Each `HostileRow` is a `trajectories` row (raw column values, written without our SDK or types)
with the `llm_call_logs` rows that go with it, and what the reader must do with it: quarantine it
with a given reason, or keep it (sanitised where the issue says so). `write_corpus` writes the rows
of one backend with plain bound SQL. Values the SQLite store can hold but Postgres cannot are in
`SqliteText` (invalid UTF-8 stored as TEXT) and `bytes` (a BLOB): those rows are SQLite only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa

from tests.babylon_app import logger_step, recorder_step

WINDOW = "2025-11-15T10:00"
START = datetime(2025, 11, 15, 10, 5)
SCENARIO = "hostile-scenario"
APP_MODEL_VERSION = "v0.4.2"


class SqliteText(bytes):
    """Bytes stored in SQLite as TEXT (`CAST(x AS TEXT)`), not as a BLOB: text that is not UTF-8."""


@dataclass(frozen=True)
class HostileRow:
    name: str
    row: dict[str, Any]
    expect: str | None  # the quarantine reason, or None: the row is kept
    calls: list[dict[str, Any]] = field(default_factory=list)
    sqlite_only: bool = False


def nested(depth: int) -> str:
    """JSON text of `depth` nested arrays: `[[[...]]]`."""
    return "[" * depth + "]" * depth


def nested_object(depth: int) -> str:
    """JSON text of `depth` nested objects: `{"a":{"a":{}}}`."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def _steps(n: int = 2, *, offset_ms: int = 0) -> list[dict[str, Any]]:
    base = int(START.replace(tzinfo=UTC).timestamp() * 1000) + offset_ms
    return [recorder_step(i, pnl=float(i), with_call=True, timestamp_ms=base + 1000 * i) for i in range(n)]


def _steps_json(steps: list[dict[str, Any]] | None = None, **kwargs: Any) -> str:
    return json.dumps(steps if steps is not None else _steps(**kwargs))


def trajectory_row(row_id: str, *, minute: int = 0, **columns: Any) -> dict[str, Any]:
    """A valid row of the app's shape; `columns` replaces any column value."""
    start = START + timedelta(minutes=minute)
    row = {
        "id": row_id,
        "trajectoryId": f"traj-{row_id}",
        "agentId": f"agent-{row_id}",
        "startTime": start,
        "endTime": start + timedelta(seconds=2),
        "durationMs": 2000,
        "windowId": WINDOW,
        "scenarioId": SCENARIO,
        "stepsJson": _steps_json(offset_ms=minute * 60_000),
        "rewardComponentsJson": json.dumps({"environmentReward": 1.0}),
        "metricsJson": json.dumps({"episodeLength": 2, "finalStatus": "completed", "tradesExecuted": 0,
                                   "postsCreated": 0, "errorCount": 0}),
        "metadataJson": json.dumps({"isTrainingData": True}),
        "totalReward": 1.0,
        "episodeLength": 2,
        "finalStatus": "completed",
        "finalBalance": 1000.0,
        "finalPnL": 2.0,
        "tradesExecuted": 0,
        "postsCreated": 0,
        "updatedAt": start,
    }
    row.update(columns)
    return row


def app_recorder_calls(trajectory_id: str, steps: int, *, start: datetime = START, **columns: Any) -> list[dict[str, Any]]:
    """`llm_call_logs` rows exactly as the app's TrajectoryRecorder writes them (see BABYLON_CONTRACT.md):
    stepId `${trajectoryId}-step-${n}`, callId `${trajectoryId}-call-${n}-${i}`, messagesJson the
    system and user message only, metadata `{"modelVersion": ...}`; `columns` replaces any value."""
    rows = []
    for n in range(steps):
        system, user = "You are Ava, a Babylon trader.", f"tick {n}: YES at 0.41, NO at 0.59"
        rows.append({
            "id": f"log-{trajectory_id}-{n}",
            "trajectoryId": trajectory_id,
            "stepId": f"{trajectory_id}-step-{n}",
            "callId": f"{trajectory_id}-call-{n}-0",
            "timestamp": start + timedelta(seconds=n),
            "latencyMs": 850,
            "model": "babylon-agent",
            "purpose": "action",
            "actionType": "TRADING_DECISION",
            "systemPrompt": system,
            "userPrompt": user,
            "messagesJson": json.dumps([{"role": "system", "content": system}, {"role": "user", "content": user}]),
            "response": f'{{"action": "BUY_SHARES", "marketId": "m1", "side": "YES", "step": {n}}}',
            "reasoning": None,
            "temperature": 0.7,
            "maxTokens": 512,
            "topP": None,
            "promptTokens": 120,
            "completionTokens": 20,
            "totalTokens": 140,
            "metadata": json.dumps({"modelVersion": APP_MODEL_VERSION}),
            "createdAt": start,
        } | columns)
    return rows


def _recorder_without_calls(row_id: str, minute: int, **call_columns: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A row of the app's recorder whose steps carry no LLM calls, and its calls in `llm_call_logs`."""
    base = int((START + timedelta(minutes=minute)).replace(tzinfo=UTC).timestamp() * 1000)
    steps = [recorder_step(i, pnl=float(i), with_call=False, timestamp_ms=base + 1000 * i) for i in range(2)]
    row = trajectory_row(row_id, minute=minute, stepsJson=json.dumps(steps))
    return row, app_recorder_calls(row["trajectoryId"], 2, **call_columns)


def _with_post(text_json: str) -> str:
    """stepsJson whose first call's response holds `text_json` (a JSON string literal, escapes kept)."""
    steps = _steps_json()
    return steps.replace('"response": "I think YES.', f'"response": {text_json[:-1]} I think YES.', 1)


def corpus() -> list[HostileRow]:
    """Every hostile row, and the good rows that must get through beside them."""
    rows = [HostileRow(f"good-{i}", trajectory_row(f"good-{i}", minute=i), None) for i in range(4)]
    base = int(START.replace(tzinfo=UTC).timestamp() * 1000)
    logger = [logger_step(i, pnl=1.0, call_id=f"call-{i}", timestamp_ms=base + i) for i in range(2)]
    rows.append(HostileRow("good-logger", trajectory_row("good-logger", minute=5, stepsJson=json.dumps(logger),
                                                         windowId=None), None))
    app_row, app_calls = _recorder_without_calls("app-recorder", 6)
    rows.append(HostileRow("app-recorder-call-logs", app_row, None, app_calls))

    minute = iter(range(10, 60))
    deep_step = lambda depth: json.dumps([{**_steps()[0], "observation": "DEEP"}]).replace('"DEEP"', nested(depth))  # noqa: E731
    for depth in (300, 1200):
        rows += [
            HostileRow(f"stepsJson-deep-{depth}", trajectory_row(f"steps-deep-{depth}", minute=next(minute),
                                                                  stepsJson=deep_step(depth)), "too_deep"),
            HostileRow(f"metadataJson-deep-{depth}", trajectory_row(f"meta-deep-{depth}", minute=next(minute),
                                                                     metadataJson=nested_object(depth)), "too_deep"),
            HostileRow(f"metricsJson-deep-{depth}", trajectory_row(f"metrics-deep-{depth}", minute=next(minute),
                                                                    metricsJson=nested_object(depth)), "too_deep"),
            HostileRow(f"rewardComponentsJson-deep-{depth}",
                       trajectory_row(f"rewards-deep-{depth}", minute=next(minute),
                                      rewardComponentsJson=nested_object(depth)), "too_deep"),
        ]
        # an unreadable call log leaves its step without an exchange: the row stays, the call is not used
        deep_messages = f'[{{"role": "system", "content": "hi", "extra": {nested(depth)}}}, {{"role": "user", "content": "go"}}]'
        row, calls = _recorder_without_calls(f"messages-deep-{depth}", next(minute), messagesJson=deep_messages)
        rows.append(HostileRow(f"messagesJson-deep-{depth}", row, None, calls))
        row, calls = _recorder_without_calls(f"logmeta-deep-{depth}", next(minute), metadata=nested_object(depth))
        rows.append(HostileRow(f"llm_call_logs.metadata-deep-{depth}", row, None, calls))
    # as deep as a stored line can hold (200 levels: the line nests a column one level down), and one more
    rows += [
        HostileRow("stepsJson-deep-200", trajectory_row("steps-deep-200", minute=next(minute),
                                                         stepsJson=deep_step(198)), None),  # [ step{ observation
        HostileRow("stepsJson-deep-201", trajectory_row("steps-deep-201", minute=next(minute),
                                                         stepsJson=deep_step(199)), "too_deep"),
        HostileRow("metadataJson-deep-200", trajectory_row("meta-deep-200", minute=next(minute),
                                                            metadataJson=nested_object(200)), None),
        HostileRow("metadataJson-deep-201", trajectory_row("meta-deep-201", minute=next(minute),
                                                            metadataJson=nested_object(201)), "too_deep"),
    ]
    # a logged call's messages sit five levels down in the line: 197 levels are too many there
    deep_messages = f'[{{"role": "system", "content": "hi", "extra": {nested(195)}}}, {{"role": "user", "content": "go"}}]'
    row, calls = _recorder_without_calls("messages-deep-197", next(minute), messagesJson=deep_messages)
    rows.append(HostileRow("messagesJson-deep-197", row, None, calls))

    huge = "9" * 4301
    rows += [
        HostileRow("stepsJson-huge-int", trajectory_row("steps-huge-int", minute=next(minute),
                                                         stepsJson=_steps_json().replace('"openPositions": 1', f'"openPositions": {huge}', 1)),
                   "invalid_json"),
        HostileRow("metadataJson-huge-int", trajectory_row("meta-huge-int", minute=next(minute),
                                                            metadataJson=f'{{"n": {huge}}}'), "invalid_json"),
        HostileRow("metricsJson-huge-int", trajectory_row("metrics-huge-int", minute=next(minute),
                                                           metricsJson=f'{{"n": -{huge}}}'), "invalid_json"),
        # long, but still a number every later stage reads back
        HostileRow("metadataJson-long-int", trajectory_row("meta-long-int", minute=next(minute),
                                                            metadataJson=f'{{"n": {"9" * 4000}}}'), None),
        HostileRow("stepsJson-long-int-amount",
                   trajectory_row("steps-long-int", minute=next(minute),
                                  stepsJson=_steps_json().replace('"marketId": "m1"', f'"marketId": "m1", "amount": {"9" * 4000}', 1)),
                   None),
    ]
    row, calls = _recorder_without_calls("logmeta-huge-int", next(minute), metadata=f'{{"modelVersion": "v1", "n": {huge}}}')
    rows.append(HostileRow("llm_call_logs.metadata-huge-int", row, None, calls))

    # JavaScript's JSON.stringify of a post cut in the middle of an emoji: a lone surrogate escape
    rows += [
        HostileRow("stepsJson-lone-surrogate", trajectory_row("steps-surrogate", minute=next(minute),
                                                               stepsJson=_with_post('"to the moon \\ud83d"')), None),
        HostileRow("stepsJson-low-surrogate-and-pair",
                   trajectory_row("steps-surrogate-pair", minute=next(minute),
                                  stepsJson=_with_post('"\\ude00 then \\ud83d\\ude00 whole"')), None),
        HostileRow("stepsJson-NUL-and-controls", trajectory_row("steps-nul", minute=next(minute),
                                                                 stepsJson=_with_post('"a\\u0000b\\u001b[31m\\u2028"')), None),
        HostileRow("metadataJson-lone-surrogate", trajectory_row("meta-surrogate", minute=next(minute),
                                                                  metadataJson='{"agentName": "Ava \\ud83d", "\\udc00": 1}'), None),
    ]
    row, calls = _recorder_without_calls("messages-surrogate", next(minute),
                                         messagesJson='[{"role": "system", "content": "hi \\ud83d"}, {"role": "user", "content": "go"}]')
    rows.append(HostileRow("messagesJson-lone-surrogate", row, None, calls))

    # non-finite sampling parameters: the call is kept, the parameter is unknown (SQLite stores NaN as NULL,
    # so the NOT NULL temperature is infinite)
    row, calls = _recorder_without_calls("nan-temperature", next(minute), temperature=float("-inf"), topP=float("nan"))
    rows.append(HostileRow("llm_call_logs-non-finite-temperature-topP", row, None, calls))
    rows.append(HostileRow("stepsJson-non-finite-temperature",
                           trajectory_row("steps-nan-temperature", minute=next(minute),
                                          stepsJson=_steps_json().replace('"temperature": 0.7', '"temperature": NaN, "topP": -Infinity', 1)),
                           None))
    rows.append(HostileRow("stepsJson-NaN-pnl", trajectory_row("steps-nan-pnl", minute=next(minute),
                                                                stepsJson=_steps_json().replace('"agentPnL": 1.0', '"agentPnL": NaN', 1)), None))

    # a scenario id that looks like a path out of the object store: it only ever names a group
    rows.append(HostileRow("scenarioId-path", trajectory_row("scenario-path", minute=next(minute),
                                                             scenarioId="../../../judge-cache/x"), None))

    # ten megabytes of observations in one step
    big_steps = _steps()
    big_steps[0]["providerAccesses"] = [{"providerName": "feed", "purpose": "observe", "data": ["x" * 1000] * 10_000}]
    rows.append(HostileRow("stepsJson-10MB", trajectory_row("steps-10mb", minute=next(minute), stepsJson=json.dumps(big_steps)), None))

    # a logger row (windowId NULL) whose start time was written with an offset: 12:30+02:00 is 10:30 UTC
    offset_start = datetime(2025, 11, 15, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    rows.append(HostileRow("null-windowId-offset-startTime",
                           trajectory_row("offset-start", minute=next(minute), windowId=None, startTime=offset_start,
                                          endTime=offset_start), None))

    # SQLite only: text that is not UTF-8, BLOBs, ids that are not text
    sqlite = [
        HostileRow("sqlite-invalid-utf8-stepsJson",
                   trajectory_row("utf8-steps", minute=next(minute),
                                  stepsJson=SqliteText(_steps_json().replace("You are Ava", "You are \udcff", 1).encode("utf-8", "surrogateescape"))),
                   None),
        HostileRow("sqlite-invalid-utf8-scenarioId",
                   trajectory_row("utf8-scenario", minute=next(minute), scenarioId=SqliteText(b"scen\xc3\x28ario")), None),
        HostileRow("sqlite-invalid-utf8-trajectoryId",
                   trajectory_row("utf8-id", minute=next(minute), trajectoryId=SqliteText(b"traj-\xff\xfe")), "invalid_field"),
        HostileRow("sqlite-blob-stepsJson",
                   trajectory_row("blob-steps", minute=next(minute), stepsJson=_steps_json().encode()), None),
        HostileRow("sqlite-blob-metadataJson",
                   trajectory_row("blob-meta", minute=next(minute), metadataJson=b'{"agentName": "Bo"}'), None),
        HostileRow("sqlite-blob-trajectoryId",
                   trajectory_row("blob-id", minute=next(minute), trajectoryId=b"traj-blob-id"), "invalid_field"),
        HostileRow("sqlite-blob-agentId",
                   trajectory_row("blob-agent", minute=next(minute), agentId=b"\x00\x01agent"), "invalid_field"),
        HostileRow("sqlite-integer-trajectoryId",
                   trajectory_row("int-id", minute=next(minute), trajectoryId=4242), None),
        HostileRow("sqlite-real-agentId",
                   trajectory_row("real-agent", minute=next(minute), agentId=1.5), None),
        HostileRow("sqlite-blob-totalReward",
                   trajectory_row("blob-reward", minute=next(minute), totalReward=b"\x01"), "non_finite_reward"),
        HostileRow("sqlite-blob-startTime",
                   trajectory_row("blob-start", minute=next(minute), startTime=b"2025-11-15 10:40:00"), "bad_timestamp"),
    ]
    rows += [HostileRow(r.name, r.row, r.expect, r.calls, sqlite_only=True) for r in sqlite]
    return rows


def corpus_for(backend: str) -> list[HostileRow]:
    return [row for row in corpus() if backend == "sqlite" or not row.sqlite_only]


_TRAJECTORY_COLUMNS = list(trajectory_row("x"))
_CALL_COLUMNS = list(app_recorder_calls("x", 1)[0])


def _insert(table: str, columns: list[str]) -> sa.TextClause:
    names = ", ".join(f'"{c}"' for c in columns)
    return sa.text(f'INSERT INTO {table} ({names}) VALUES ({", ".join(f":{c}" for c in columns)})')


def write_corpus(engine: sa.Engine, rows: list[HostileRow]) -> None:
    """Write the rows with bound SQL and no column types, as another program would; `SqliteText`
    values are then recast in place, since a driver only ever binds bytes as a BLOB."""
    recast: list[tuple[str, str, str, bytes]] = []
    trajectories, calls = [], []
    for hostile in rows:
        row = dict(hostile.row)
        for column, value in row.items():
            if isinstance(value, SqliteText):
                row[column] = f"placeholder-{hostile.name}-{column}"
                recast.append(("trajectories", column, row[column], bytes(value)))
        trajectories.append(row)
        calls += hostile.calls
    with engine.begin() as conn:
        conn.execute(_insert("trajectories", _TRAJECTORY_COLUMNS), trajectories)
        if calls:
            conn.execute(_insert("llm_call_logs", _CALL_COLUMNS), calls)
        for table, column, placeholder, value in recast:
            conn.execute(sa.text(f'UPDATE {table} SET "{column}" = CAST(:value AS TEXT) WHERE "{column}" = :placeholder'),
                         {"value": value, "placeholder": placeholder})
