"""The window stages on their own (no Dagster): what they store is what the pure functions give
for the whole window at once, however the stages stream, group and hash the window's files."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import timedelta

import pytest
import sqlalchemy as sa

from babylon_pipeline.art import export_groups, to_jsonl
from babylon_pipeline.rewards import RewardWeights, score_outcomes
from babylon_pipeline.storage.local import LocalObjectStore
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.outcomes import read_outcomes_since
from babylon_pipeline.store.reader import read_window
from babylon_pipeline.store.recorder import TrajectoryRecorder
from babylon_pipeline.store.records import TradeRecord, Trajectory
from babylon_pipeline.windowing.files import (
    INDEX,
    TRAJECTORIES,
    WindowFileMissing,
    open_window_files,
    publish_window_files,
    read_manifest,
)
from babylon_pipeline.windowing.groups import export_window_groups
from babylon_pipeline.windowing.index import index_of_trajectories, read_index
from babylon_pipeline.windowing.rewards import read_outcome_rewards, score_window
from babylon_pipeline.windowing.trajectories import export_window_trajectories
from babylon_pipeline.windows import window_start
from tests.window_data import record_window

W = "2025-11-15T10:00"


def _record_without_scenario(engine: sa.Engine, agents: int) -> None:
    """Trajectories the app stored no scenario for: they form the window's own group."""
    start = window_start(W) + timedelta(minutes=30)
    recorder = TrajectoryRecorder(engine, clock=lambda: start)
    for a in range(agents):
        with recorder.trajectory(f"loner-{a}") as t:
            t.start_step({"agentBalance": 1000.0, "agentPnL": float(a)})
            if a % 2 == 0:  # the others have no LLM exchange: counted, not exported
                t.log_llm_call(model="tiny", system_prompt="You trade.", user_prompt=f"loner {a}", response="HOLD",
                               temperature=1.0, max_tokens=8)
            t.complete_step({"actionType": "HOLD", "parameters": {}, "success": a != 1}, reward=0.0)


def test_stages_store_what_the_pure_functions_give_for_the_whole_window(empty_sqlite, tmp_path) -> None:
    upgrade(empty_sqlite)
    record_window(empty_sqlite, W, scenarios=3, agents=4)
    _record_without_scenario(empty_sqlite, agents=3)
    store = LocalObjectStore(tmp_path / "objects")

    report = export_window_trajectories(empty_sqlite, store, W)
    scored = score_window(empty_sqlite, store, W, RewardWeights())
    counts = export_window_groups(store, W)

    trajectories = list(read_window(empty_sqlite, W))
    assert report.valid == len(trajectories) == 15
    expected = score_outcomes(trajectories, read_outcomes_since(empty_sqlite, W), RewardWeights())
    assert scored == expected
    document = read_outcome_rewards(store, W)
    assert document["rewards"] == {r.trajectory_id: json.loads(json.dumps(asdict(r))) for r in expected.rewards}

    extra = {  # as the stage reads them back: components in the stored (sorted) order
        tid: {"outcome_reward": entry["reward"], "pending_trades": entry["pending_trades"],
              **{f"outcome_{name}": value for name, value in entry["components"].items()}}
        for tid, entry in document["rewards"].items()
    }
    whole = export_groups(trajectories, expected.by_trajectory(), extra)
    assert counts == whole.counts
    assert (counts.groups, counts.excluded_no_llm_exchange) == (4, 1)
    groups = store.get_bytes(f"training-data/{W}/groups.jsonl")
    assert groups == to_jsonl(whole.groups)
    assert read_manifest(store, W)["files"]["groups.jsonl"]["bytes"] == len(groups)


def _exported(engine: sa.Engine, store: LocalObjectStore) -> tuple[bytes, bytes]:
    score_window(engine, store, W, RewardWeights())
    export_window_groups(store, W)
    return store.get_bytes(f"training-data/{W}/outcome_rewards.json"), store.get_bytes(f"training-data/{W}/groups.jsonl")


def test_the_index_locates_every_stored_line_with_its_trade_record(empty_sqlite, tmp_path) -> None:
    upgrade(empty_sqlite)
    record_window(empty_sqlite, W, scenarios=3, agents=4)
    _record_without_scenario(empty_sqlite, agents=3)
    store = LocalObjectStore(tmp_path / "objects")
    export_window_trajectories(empty_sqlite, store, W)

    with open_window_files(store, W, INDEX, TRAJECTORIES) as (index, lines):
        written = list(read_index(index))
        assert written == list(index_of_trajectories(lines))
        assert len(written) == 15
        for offset, length, trades in written:
            lines.seek(offset)
            line = lines.read(length)
            trajectory = Trajectory.model_validate_json(line)
            assert line.endswith(b"\n") and TradeRecord.of(trajectory) == trades
            assert (trades.group_key, trades.actions) == (trajectory.group_key, trajectory.actions)
    assert {t.group_key for _, _, t in written} == {f"{W}:s{s}" for s in range(3)} | {W}


def test_a_window_exported_before_the_index_is_rewarded_and_grouped_the_same(empty_sqlite, tmp_path) -> None:
    upgrade(empty_sqlite)
    record_window(empty_sqlite, W, scenarios=2, agents=3)
    store = LocalObjectStore(tmp_path / "objects")
    export_window_trajectories(empty_sqlite, store, W)
    with_index = _exported(empty_sqlite, store)

    manifest = read_manifest(store, W)  # as an older stage 1 left it: no index
    del manifest["files"][INDEX]
    store.delete(f"training-data/{W}/{INDEX}")
    store.put_json(f"training-data/{W}/manifest.json", manifest)
    assert _exported(empty_sqlite, store) == with_index


def test_art_groups_refuses_trajectories_that_no_longer_match_the_index(empty_sqlite, tmp_path) -> None:
    upgrade(empty_sqlite)
    record_window(empty_sqlite, W, scenarios=2, agents=3)
    store = LocalObjectStore(tmp_path / "objects")
    export_window_trajectories(empty_sqlite, store, W)
    score_window(empty_sqlite, store, W, RewardWeights())
    lines = store.get_bytes(f"training-data/{W}/trajectories.jsonl").splitlines(keepends=True)
    publish_window_files(store, W, {TRAJECTORIES: b"".join(reversed(lines))}, writer="someone else")

    with pytest.raises(WindowFileMissing, match="does not match its index"):
        export_window_groups(store, W)
    assert not store.exists(f"training-data/{W}/groups.jsonl")

    stale = store.get_bytes(f"training-data/{W}/trajectories.jsonl")  # replaced without the manifest: refused
    store.put_bytes(f"training-data/{W}/trajectories.jsonl", stale[::-1])
    with pytest.raises(WindowFileMissing, match="does not match its manifest"):
        export_window_groups(store, W)


class _CountingStore(LocalObjectStore):
    """The real local store, noting which objects a stage reads."""

    def __init__(self, root) -> None:
        super().__init__(root)
        self.read: list[str] = []

    def get_versioned(self, key: str):
        self.read.append(key)
        return super().get_versioned(key)

    def open_file(self, key: str):
        self.read.append(key)
        return super().open_file(key)


def test_a_stage_reads_the_manifest_once_for_its_inputs_and_opens_only_what_it_needs(empty_sqlite, tmp_path) -> None:
    upgrade(empty_sqlite)
    record_window(empty_sqlite, W, scenarios=2, agents=3)
    store = _CountingStore(tmp_path / "objects")
    export_window_trajectories(empty_sqlite, store, W)
    manifest, index, lines = (f"training-data/{W}/{name}" for name in ("manifest.json", INDEX, TRAJECTORIES))

    store.read.clear()
    score_window(empty_sqlite, store, W, RewardWeights())
    assert store.read == [manifest, index, manifest]  # inputs, then the publish's read-merge-write

    store.read.clear()
    export_window_groups(store, W)
    outcome_rewards = f"training-data/{W}/outcome_rewards.json"
    assert store.read == [manifest, outcome_rewards, manifest, index, lines, manifest]
