"""The hostile row corpus, end to end through the window assets, on Postgres and on SQLite.

No row may stop a window: each is quarantined with its reason or kept (sanitised where the issue
says so), and what the reader keeps must get through every later stage — the stored trajectories,
the ART groups, the judge's prompt (sent to an OpenAI-compatible judge on loopback) and the scores.
"""

from __future__ import annotations

import json
from datetime import timedelta

import dagster as dg
import pytest
import sqlalchemy as sa

from babylon_pipeline.jobs.windows import WINDOW_ASSETS
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.judge import JudgeResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.storage.factory import open_object_store
from babylon_pipeline.store.batches import FIRST_BATCH, sized_batches
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.reader import QuarantinedRow, read_window
from babylon_pipeline.windowing.files import read_manifest
from tests.judge_server import trajectory_ids
from tests.hostile.rows import (
    APP_MODEL_VERSION, WINDOW, HostileRow, _steps, app_recorder_calls, corpus_for, trajectory_row, write_corpus,
)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> tuple[str, sa.Engine]:
    engine = request.getfixturevalue(f"empty_{request.param}")
    upgrade(engine)
    return request.param, engine


def _lines(store, name: str) -> list[dict]:
    return [json.loads(line) for line in store.get_bytes(f"training-data/{WINDOW}/{name}").splitlines()]


def test_the_hostile_corpus_cannot_stop_a_window(backend, tmp_path, judge_server) -> None:
    name, engine = backend
    rows = corpus_for(name)
    write_corpus(engine, rows)
    objects = (tmp_path / "objects").as_uri()
    resources = {
        "trajectory_store": TrajectoryStore(database_url=engine.url.render_as_string(hide_password=False)),
        "object_store": ObjectStoreResource(url=objects),
        "judge": JudgeResource(base_url=judge_server.base_url, model="judge-model", api_key="unused",
                               timeout_s=10, max_retries=0),
    }
    result = dg.materialize(
        WINDOW_ASSETS, partition_key=partition_key_of(WINDOW), resources=resources,
        instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        run_config={"ops": {"window_trajectories": {"config": {"min_valid_fraction": 0.0}}}},
    )
    assert result.success, [str(e) for e in result.all_events if e.is_failure][:3]
    store = open_object_store(objects)
    assert {"trajectories.jsonl", "quarantine.jsonl", "groups.jsonl", "ruler_scores.json"} <= set(read_manifest(store, WINDOW)["files"])

    by_id = {r.row["id"]: r for r in rows}
    quarantined = {line["id"]: line["reason"] for line in _lines(store, "quarantine.jsonl")}
    assert quarantined == {r.row["id"]: r.expect for r in rows if r.expect}
    kept = {line["id"]: line for line in _lines(store, "trajectories.jsonl")}
    assert set(kept) == {r.row["id"] for r in rows if r.expect is None}
    assert all(line["windowId"] == WINDOW for line in kept.values())
    [event] = result.asset_materializations_for_node("window_trajectories")
    assert event.metadata["quarantined"].value == len(quarantined) and event.metadata["valid"].value == len(kept)

    # sanitised, not quarantined: a lone surrogate becomes U+FFFD, the rest of the text stays
    post = kept["steps-surrogate"]["steps"][0]["llmCalls"][0]["response"]
    assert post.startswith("to the moon \ufffd I think YES.")
    pair = kept["steps-surrogate-pair"]["steps"][0]["llmCalls"][0]["response"]
    assert pair.startswith("\ufffd then \U0001f600 whole")
    assert kept["steps-nul"]["steps"][0]["llmCalls"][0]["response"].startswith("a\x00b\x1b[31m\u2028 I think")
    assert kept["meta-surrogate"]["metadata"] == {"agentName": "Ava \ufffd", "\ufffd": 1}
    assert kept["offset-start"]["windowIdDerived"] is True
    assert kept["steps-10mb"]["steps"][0]["providerAccesses"][0]["data"][0] == "x" * 1000
    if name == "sqlite":
        assert "You are \ufffd" in kept["utf8-steps"]["steps"][0]["llmCalls"][0]["systemPrompt"]
        assert kept["utf8-scenario"]["scenarioId"] == "scen\ufffd(ario"
        assert kept["int-id"]["trajectoryId"] == "4242"

    groups = _lines(store, "groups.jsonl")
    exported = {t["metadata"]["trajectory_id"]: t for g in groups for t in g["trajectories"]}
    app = exported[by_id["app-recorder"].row["trajectoryId"]]
    assert [t["message"]["content"] for t in app["messages_and_choices"] if "message" in t][0].startswith('{"action": "BUY_SHARES"')
    assert app["metadata"]["model_version"] == APP_MODEL_VERSION
    nan_call = exported["traj-nan-temperature"]["metadata"]
    assert (nan_call["temperature"], nan_call["top_p"], nan_call["model_version"]) == (None, None, APP_MODEL_VERSION)
    assert exported["traj-steps-nan-temperature"]["metadata"]["temperature"] is None
    # an unreadable call log is skipped: its steps keep no exchange, the row stays and is counted
    unusable = {"messages-deep-300", "messages-deep-1200", "messages-deep-197", "logmeta-deep-300", "logmeta-deep-1200",
                "logmeta-huge-int"}
    assert not {f"traj-{i}" for i in unusable} & set(exported)
    assert {f"traj-{i}" for i in unusable} <= {line["trajectoryId"] for line in kept.values()}

    assert {key for key in store.list_keys("") if ".." in key} == set()
    # every exported trajectory reached the judge's prompt, and every group was scored
    sent = {tid for request in judge_server.requests for tid in trajectory_ids(request.body)}
    assert sent == set(exported)
    ruler = json.loads(store.get_bytes(f"training-data/{WINDOW}/ruler_scores.json"))
    assert {g["status"] for g in ruler["groups"].values()} == {"scored"}
    assert {tid for g in ruler["groups"].values() for tid in g["trajectories"]} == set(exported)


def test_app_recorder_call_logs_fill_the_steps_they_were_written_for(backend) -> None:
    """The app's TrajectoryRecorder writes `${trajectoryId}-step-${n}` as stepId, and the model version
    only in the log's metadata: both reach the step's calls."""
    _, engine = backend
    row = trajectory_row("app", stepsJson=json.dumps([
        {"stepNumber": n, "timestamp": 1_763_201_100_000 + n, "llmCalls": [], "reward": 0.1} for n in range(3)]))
    calls = app_recorder_calls("traj-app", 3)
    calls[1]["metadata"] = json.dumps({"modelVersion": "v9.9.9"})
    calls.append({**calls[2], "id": "log-second-call", "callId": "traj-app-call-2-1", "response": "second",
                  "timestamp": calls[2]["timestamp"] + timedelta(milliseconds=400)})
    with engine.begin() as conn:
        conn.execute(sa.text(f'INSERT INTO trajectories ({", ".join(chr(34) + c + chr(34) for c in row)}) '
                             f'VALUES ({", ".join(":" + c for c in row)})'), row)
        conn.execute(sa.text(f'INSERT INTO llm_call_logs ({", ".join(chr(34) + c + chr(34) for c in calls[0])}) '
                             f'VALUES ({", ".join(":" + c for c in calls[0])})'), calls)
    [trajectory] = list(read_window(engine, WINDOW))
    assert not isinstance(trajectory, QuarantinedRow)
    steps = trajectory.steps
    assert [[c.call_id for c in s.llm_calls] for s in steps] == [
        ["traj-app-call-0-0"], ["traj-app-call-1-0"], ["traj-app-call-2-0", "traj-app-call-2-1"]]
    assert [c.model_version for s in steps for c in s.llm_calls] == [APP_MODEL_VERSION, "v9.9.9", APP_MODEL_VERSION, APP_MODEL_VERSION]
    assert steps[0].llm_calls[0].user_prompt == "tick 0: YES at 0.41, NO at 0.59"


class _Cursor:
    """A result whose rows are their sizes in bytes; records how many rows each fetch asked for."""

    def __init__(self, sizes: list[int]) -> None:
        self.rows, self.asked = list(sizes), []

    def fetchmany(self, size: int) -> list[int]:
        self.asked.append(size)
        batch, self.rows = self.rows[:size], self.rows[size:]
        return batch


def test_fetch_batches_shrink_to_large_rows_and_grow_back() -> None:
    """A run of 10 MB rows after small ones: past the batch that meets the first, each batch stays
    within the byte budget (or is one row), and small rows grow the batches back to the row cap."""
    small, large, budget = 10_000, 10_000_000, 16_000_000
    cursor = _Cursor([small] * 2000 + [large] * 40 + [small] * 3000)
    batches = list(sized_batches(cursor, max_rows=500, budget_bytes=budget, size_of=lambda size: size))
    assert sum(map(len, batches)) == 5040
    first_large = next(i for i, batch in enumerate(batches) if large in batch)
    assert all(sum(batch) <= budget or len(batch) == 1 for batch in batches[first_large + 1:])
    assert max(map(len, batches)) == 500 and len(batches[-2]) == 500
    assert cursor.asked[0] == FIRST_BATCH


def test_a_window_of_large_rows_is_read_in_bounded_memory(backend) -> None:
    """Every tenth row of 300 weighs 2 MB, read with a 4 MB batch budget: the reader holds a few
    batches of about the budget, never the 60 MB (a fixed 500-row batch fetched them all at once).
    The bound holds from the first large row on: the batch that meets it is as long as the one before."""
    import tracemalloc

    _, engine = backend
    big = json.dumps([{**_steps()[0], "observation": ["x" * 1000] * 2000}])
    rows = [trajectory_row(f"row-{i:03}", minute=0, **({"stepsJson": big} if i % 10 == 5 else {})) for i in range(300)]
    write_corpus(engine, [HostileRow(r["id"], r, None) for r in rows])
    tracemalloc.start()
    try:
        count = sum(1 for item in read_window(engine, WINDOW, batch_bytes=4 << 20) if not isinstance(item, QuarantinedRow))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 300
    assert peak < 24 << 20, f"peak {peak >> 20} MB"


def test_the_parser_depth_json_text_relies_on() -> None:
    """`json_text` leans on pydantic-core refusing more than `PARSER_DEPTH` levels; an upgrade that
    moves the limit must move the constant."""
    from pydantic_core import from_json

    from babylon_pipeline.store.json_text import PARSER_DEPTH, JsonRefused, loads
    from tests.hostile.rows import nested

    from_json(nested(PARSER_DEPTH))
    with pytest.raises(ValueError, match="recursion limit"):
        from_json(nested(PARSER_DEPTH + 1))
    assert loads(nested(200)) == loads(f'[{nested(199)}, "\\ud83d"]')[:1]  # the fast path and json.loads alike
    assert loads(nested(196), deeper=5) is not None
    for depth in (201, 300, 1200, 50_000):
        with pytest.raises(JsonRefused, match="nested more than 200 levels"):
            loads(nested(depth))
        with pytest.raises(JsonRefused, match="nested more than 200 levels"):
            loads(f'[{nested(depth - 1)}, "\\ud83d"]')
    with pytest.raises(JsonRefused, match="nested more than 196 levels"):
        loads(nested(197), deeper=5)
