"""Stage 3: the window's ART groups, one per scenario, rewarded with the outcome rewards.

Each trajectory's metrics carry its outcome reward and components, so the judge (the heuristic
one in particular) and the trainer see what the markets did. Memory is bounded by the largest
group, not the window: the window's index says where each group's lines are in
`trajectories.jsonl`, then each group is parsed, exported and written on its own.
"""

from __future__ import annotations

import os
import tempfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from babylon_pipeline.art import ExportCounts, export_groups, from_jsonl, to_jsonl
from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.store.records import Trajectory
from babylon_pipeline.windowing.collector import collector_paused
from babylon_pipeline.windowing.files import GROUPS, WindowFileMissing, open_window_file, publish_window_files
from babylon_pipeline.windowing.index import IndexEntry, open_indexed_trajectories
from babylon_pipeline.windowing.rewards import read_outcome_rewards

Place = tuple[int, int, str]  # a line of trajectories.jsonl: offset, length, trajectory id


def _group_lines(index: Iterator[IndexEntry]) -> dict[str, list[Place]]:
    """Where each group's lines are; the trade records themselves are not kept."""
    found: dict[str, list[Place]] = defaultdict(list)
    for offset, length, trades in index:
        found[trades.group_key].append((offset, length, trades.trajectory_id))
    return found


def _read_at(lines: IO[bytes], places: list[Place]) -> Iterator[Trajectory]:
    """Parsed one at a time, so that a large group's records are never all alive at once; each line
    is one `pread` (a seek would throw the read buffer away every time)."""
    fd = lines.fileno()
    for offset, length, trajectory_id in places:
        try:
            trajectory = Trajectory.model_validate_json(os.pread(fd, length, offset))
        except ValidationError:  # the manifest vouches for the bytes: the index points elsewhere
            trajectory = None
        if trajectory is None or trajectory.trajectory_id != trajectory_id:
            raise WindowFileMissing(f"trajectories.jsonl does not match its index at trajectory {trajectory_id}")
        yield trajectory


@collector_paused()
def export_window_groups(store: ObjectStore, window_id: str) -> ExportCounts:
    scored = read_outcome_rewards(store, window_id)["rewards"]
    rewards = {tid: entry["reward"] for tid, entry in scored.items()}
    extra = {
        tid: {"outcome_reward": entry["reward"], "pending_trades": entry["pending_trades"],
              **{f"outcome_{name}": value for name, value in entry["components"].items()}}
        for tid, entry in scored.items()
    }
    totals = dict.fromkeys((f.name for f in fields(ExportCounts)), 0)
    with tempfile.TemporaryDirectory(prefix="babylon-groups-") as tmp, open_indexed_trajectories(store, window_id) as (index, lines):
        out_path = Path(tmp) / GROUPS
        with out_path.open("wb") as out:
            for _, places in sorted(_group_lines(index).items()):
                result = export_groups(_read_at(lines, places), rewards, extra)
                out.write(to_jsonl(result.groups))
                for name, value in result.counts.as_metadata().items():
                    totals[name] += value
        publish_window_files(store, window_id, {GROUPS: out_path}, writer="art_groups")
    return ExportCounts(**totals)


def read_window_groups(store: ObjectStore, window_id: str) -> list[dict[str, Any]]:
    with open_window_file(store, window_id, GROUPS) as handle:
        return from_jsonl(handle.read())
