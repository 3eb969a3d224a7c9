"""Stage 1: a window's rows, parsed, as `trajectories.jsonl` and `quarantine.jsonl`.

Both files are streamed to disk first, so memory stays bounded whatever the window's size, and
published together: the window's manifest names them only once both are stored.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, TypeAdapter

from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.store.reader import QuarantinedRow, read_window
from babylon_pipeline.store.records import Trajectory
from babylon_pipeline.store.report import WindowReport
from babylon_pipeline.windowing.collector import collector_paused
from babylon_pipeline.windowing.files import QUARANTINE, TRAJECTORIES, open_window_file, publish_window_files

R = TypeVar("R", bound=BaseModel)
_TRAJECTORY = TypeAdapter(Trajectory)
_BUFFER = 1 << 20  # a line is ~10 KB: the default 8 KB buffer would make each one a system call


@collector_paused()
def export_window_trajectories(engine: sa.Engine, store: ObjectStore, window_id: str) -> WindowReport:
    report = WindowReport(window_id)
    with tempfile.TemporaryDirectory(prefix="babylon-window-") as tmp:
        good_path, bad_path = Path(tmp) / TRAJECTORIES, Path(tmp) / QUARANTINE
        with good_path.open("wb", buffering=_BUFFER) as good, bad_path.open("wb") as bad:
            for item in read_window(engine, window_id):
                report.add(item)
                if isinstance(item, QuarantinedRow):
                    bad.write(json.dumps(item.to_json_dict()).encode() + b"\n")
                else:
                    good.write(_TRAJECTORY.dump_json(item, by_alias=True) + b"\n")
        publish_window_files(store, window_id, {TRAJECTORIES: good_path, QUARANTINE: bad_path}, writer="window_trajectories")
    return report


def iter_window_trajectories(store: ObjectStore, window_id: str, view: type[R] = Trajectory) -> Iterator[R]:
    """The window's valid trajectories as `window_trajectories` stored them, parsed as `view` (a
    `Trajectory`, or a part of one such as `TradeRecord`)."""
    with open_window_file(store, window_id, TRAJECTORIES) as lines:
        for line in lines:
            yield view.model_validate_json(line)
