"""What a training run is handed: the scored groups of many windows, rewarded for training.

The candidates (scored, untrained trajectories) come from the database; their conversations come
from each window's `groups.jsonl` and their training rewards (judge score blended with the outcome
reward) from `ruler_scores.json`. A group whose members all earned the same reward teaches GRPO
nothing (every advantage is zero): it is dropped and counted. Caps keep a run's size bounded; a
group trimmed to `max_group_size` keeps members spread evenly over its reward range, and groups
left out by `max_groups` stay untrained for the next run.

Recorded token logprobs are behaviour log-probs only when this pipeline's own model sampled them
at temperature 1 with no top-p (see TRAINING_NOTES); otherwise they are removed here, so the
trainer's rule is simply "logprobs present → importance ratio against them".
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from babylon_pipeline.art import to_jsonl
from babylon_pipeline.art.groups import sampled_from_the_policy_itself
from babylon_pipeline.art.turns import is_choice
from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.store.training_data import evenly_spaced
from babylon_pipeline.windowing.files import RULER_SCORES, WindowFileMissing, read_window_json
from babylon_pipeline.windowing.groups import read_window_groups
from babylon_pipeline.windows import is_window_id

SPREAD_EPSILON = 1e-9


@dataclass(frozen=True)
class BatchLimits:
    max_groups: int = 64
    max_group_size: int = 16

    def __post_init__(self) -> None:
        if self.max_groups < 1 or self.max_group_size < 2:
            raise ValueError("a batch needs max_groups >= 1 and max_group_size >= 2")


@dataclass
class TrainingBatch:
    groups: list[dict[str, Any]] = field(default_factory=list)
    dropped_no_spread: int = 0
    dropped_over_cap: int = 0
    trimmed_trajectories: int = 0
    missing_trajectories: int = 0
    skipped_windows: int = 0
    logprobs_kept: int = 0
    logprobs_removed: int = 0

    @property
    def rewards(self) -> dict[str, float]:
        return {t["metadata"]["trajectory_id"]: t["reward"] for g in self.groups for t in g["trajectories"]}

    @property
    def windows(self) -> list[str]:
        return sorted({g["metadata"]["window_id"] for g in self.groups})

    @property
    def content(self) -> bytes:
        return to_jsonl(self.groups)

    @property
    def data_hash(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def as_metadata(self) -> dict[str, int | float]:
        rewards = list(self.rewards.values())
        return {
            "groups": len(self.groups),
            "trajectories": len(rewards),
            "windows": len(self.windows),
            "dropped_groups_no_spread": self.dropped_no_spread,
            "dropped_groups_over_cap": self.dropped_over_cap,
            "trimmed_trajectories": self.trimmed_trajectories,
            "missing_trajectories": self.missing_trajectories,
            "skipped_windows": self.skipped_windows,
            "behaviour_logprobs_kept": self.logprobs_kept,
            "behaviour_logprobs_removed": self.logprobs_removed,
            "mean_training_reward": sum(rewards) / len(rewards) if rewards else 0.0,
        }


def assemble_batch(
    store: ObjectStore,
    candidates: Mapping[str, AbstractSet[str]],
    limits: BatchLimits,
    own_model: Callable[[str | None], bool],
) -> TrainingBatch:
    """`candidates`: window id → ids of its scored, untrained trajectories. Newest windows first.

    A window whose id is not canonical, or whose `ruler_scores.json` or `groups.jsonl` is not (yet)
    published, is skipped and counted: its candidates stay for a later run, the others train now."""
    batch = TrainingBatch()
    for window_id in sorted(candidates, reverse=True):
        wanted = candidates[window_id]
        try:
            if not is_window_id(window_id):
                raise WindowFileMissing(f"not a window id: {window_id!r}")
            scores = read_window_json(store, window_id, RULER_SCORES)["groups"]
            window_groups = read_window_groups(store, window_id)
        except WindowFileMissing:
            batch.skipped_windows += 1
            batch.missing_trajectories += len(wanted)
            continue
        found = 0
        for group in window_groups:
            members = _rewarded_members(group, wanted, scores.get(group["metadata"]["group_id"]))
            found += len(members)
            if len(members) < 2 or _spread(members) <= SPREAD_EPSILON:
                batch.dropped_no_spread += 1
                continue
            if len(batch.groups) >= limits.max_groups:
                batch.dropped_over_cap += 1
                continue
            kept = _spread_evenly(members, limits.max_group_size)
            batch.trimmed_trajectories += len(members) - len(kept)
            for trajectory in kept:
                _keep_behaviour_logprobs_if_valid(trajectory, own_model, batch)
            batch.groups.append({**group, "trajectories": kept})
        batch.missing_trajectories += len(wanted) - found
    return batch


def _rewarded_members(group: dict[str, Any], wanted: AbstractSet[str], scores: Mapping[str, Any] | None) -> list[dict]:
    if not scores or scores.get("status") != "scored":
        return []
    rewards = scores["trajectories"]
    members = []
    for trajectory in group["trajectories"]:
        tid = trajectory["metadata"]["trajectory_id"]
        reward = (rewards.get(tid) or {}).get("training_reward")
        if tid in wanted and isinstance(reward, int | float) and math.isfinite(reward):
            members.append({**copy.deepcopy(trajectory), "reward": float(reward)})
    return members


def _spread(members: list[dict]) -> float:
    rewards = [m["reward"] for m in members]
    return max(rewards) - min(rewards)


def _spread_evenly(members: list[dict], size: int) -> list[dict]:
    """At most `size` members, evenly spaced by reward, always keeping the best and the worst."""
    if len(members) <= size:
        return members
    return evenly_spaced(sorted(members, key=lambda m: (m["reward"], m["metadata"]["trajectory_id"])), size)


def _keep_behaviour_logprobs_if_valid(trajectory: dict, own_model: Callable[[str | None], bool],
                                      batch: TrainingBatch) -> None:
    meta = trajectory["metadata"]
    valid = own_model(meta.get("model")) and sampled_from_the_policy_itself(meta) is True
    for turn in trajectory["messages_and_choices"]:
        if is_choice(turn) and turn.get("logprobs") is not None:
            if valid:
                batch.logprobs_kept += 1
            else:
                turn["logprobs"] = None
                batch.logprobs_removed += 1
