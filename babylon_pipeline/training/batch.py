"""The training batch as the orchestrator stored it: JSON lines of ART `TrajectoryGroup`s.

Read whole (a batch is bounded by the assembler's caps) and hashed as stored, so the adapter's
metadata names exactly the bytes it was trained on. The shape is checked here, once, so the rest
of the trainer can index the dicts without guarding every access.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from babylon_pipeline.storage import ObjectNotFound, ObjectStore


class BatchFormatError(ValueError):
    """The batch object is missing or is not the groups this trainer reads."""


@dataclass(frozen=True)
class TrainingBatchData:
    groups: list[dict[str, Any]]
    data_hash: str  # sha256 of the stored bytes
    windows: tuple[str, ...]  # the windows its groups come from, sorted


def read_batch(store: ObjectStore, key: str) -> TrainingBatchData:
    try:
        data = store.get_bytes(key)
    except ObjectNotFound:
        raise BatchFormatError(f"no training batch at {key!r} in the object store") from None
    groups = [_group(line_number, line) for line_number, line in enumerate(data.splitlines(), 1) if line.strip()]
    if not groups:
        raise BatchFormatError(f"training batch {key!r} holds no groups")
    windows = {group.get("metadata", {}).get("window_id") for group in groups}
    windows |= {t.get("metadata", {}).get("window_id") for group in groups for t in group["trajectories"]}
    return TrainingBatchData(
        groups=groups,
        data_hash=hashlib.sha256(data).hexdigest(),
        windows=tuple(sorted(w for w in windows if isinstance(w, str))),
    )


def _group(line_number: int, line: bytes) -> dict[str, Any]:
    try:
        group = json.loads(line)
    except json.JSONDecodeError as error:
        raise BatchFormatError(f"batch line {line_number}: not JSON ({error})") from None
    trajectories = group.get("trajectories") if isinstance(group, dict) else None
    if not isinstance(trajectories, list):
        raise BatchFormatError(f"batch line {line_number}: not a TrajectoryGroup (no 'trajectories' list)")
    for index, trajectory in enumerate(trajectories):
        where = f"batch line {line_number}, trajectory {index}"
        if not isinstance(trajectory, dict) or not isinstance(trajectory.get("messages_and_choices"), list):
            raise BatchFormatError(f"{where}: no 'messages_and_choices' list")
        reward = trajectory.get("reward")
        if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
            raise BatchFormatError(f"{where}: reward must be a finite number, got {reward!r}")
        if not isinstance(trajectory.get("metadata", {}), dict):
            raise BatchFormatError(f"{where}: metadata must be an object")
    return group
