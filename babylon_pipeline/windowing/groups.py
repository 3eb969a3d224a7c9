"""Stage 3: the window's ART groups, one per scenario, rewarded with the outcome rewards.

Each trajectory's metrics carry its outcome reward and components, so the judge (the heuristic
one in particular) and the trainer see what the markets did.
"""

from __future__ import annotations

from typing import Any

from babylon_pipeline.art import ExportResult, export_groups, from_jsonl, to_jsonl
from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.windowing.files import GROUPS, open_window_file, publish_window_files
from babylon_pipeline.windowing.rewards import read_outcome_rewards
from babylon_pipeline.windowing.trajectories import iter_window_trajectories


def export_window_groups(store: ObjectStore, window_id: str) -> ExportResult:
    scored = read_outcome_rewards(store, window_id)["rewards"]
    rewards = {tid: entry["reward"] for tid, entry in scored.items()}
    extra = {
        tid: {"outcome_reward": entry["reward"], "pending_trades": entry["pending_trades"],
              **{f"outcome_{name}": value for name, value in entry["components"].items()}}
        for tid, entry in scored.items()
    }
    result = export_groups(iter_window_trajectories(store, window_id), rewards, extra)
    publish_window_files(store, window_id, {GROUPS: to_jsonl(result.groups)}, writer="art_groups")
    return result


def read_window_groups(store: ObjectStore, window_id: str) -> list[dict[str, Any]]:
    with open_window_file(store, window_id, GROUPS) as handle:
        return from_jsonl(handle.read())
