"""Stage 1: a window's rows, parsed, as `trajectories.jsonl`, its `index.jsonl` and `quarantine.jsonl`.

The files are streamed to disk first, so memory stays bounded whatever the window's size, and
published together: the window's manifest names them only once all are stored.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import sqlalchemy as sa

from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.store.reader import QuarantinedRow, read_window
from babylon_pipeline.store.records import TRAJECTORY
from babylon_pipeline.store.report import WindowReport
from babylon_pipeline.windowing.collector import collector_paused
from babylon_pipeline.windowing.files import INDEX, QUARANTINE, TRAJECTORIES, publish_window_files
from babylon_pipeline.windowing.index import IndexWriter

_BUFFER = 1 << 20  # a line is ~10 KB: the default 8 KB buffer would make each one a system call


@collector_paused()
def export_window_trajectories(engine: sa.Engine, store: ObjectStore, window_id: str) -> WindowReport:
    report = WindowReport(window_id)
    with tempfile.TemporaryDirectory(prefix="babylon-window-") as tmp:
        paths = {name: Path(tmp) / name for name in (TRAJECTORIES, INDEX, QUARANTINE)}
        with (paths[TRAJECTORIES].open("wb", buffering=_BUFFER) as good,
              paths[INDEX].open("wb", buffering=_BUFFER) as index_file,
              paths[QUARANTINE].open("wb") as bad):
            index = IndexWriter(index_file)
            for item in read_window(engine, window_id):
                report.add(item)
                if isinstance(item, QuarantinedRow):
                    bad.write(json.dumps(item.to_json_dict()).encode() + b"\n")
                else:
                    line = TRAJECTORY.dump_json(item, by_alias=True) + b"\n"
                    good.write(line)
                    index.add(item, line)
        publish_window_files(store, window_id, paths, writer="window_trajectories")
    return report

