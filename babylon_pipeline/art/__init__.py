"""Babylon trajectories in OpenPipe ART's format: pure functions, no Dagster, no database.

`export_groups` turns a window's trajectories into `TrajectoryGroup` JSON (one group per
scenario), `to_jsonl`/`from_jsonl` write and read `groups.jsonl`, and `judge_view` flattens a
group into the plain chat messages the RULER judge compares.
"""

from babylon_pipeline.art.groups import DEFAULT_REWARD, ExportCounts, ExportResult, export_groups
from babylon_pipeline.art.jsonl import from_jsonl, to_jsonl
from babylon_pipeline.art.judge_view import JudgeTrajectoryView, judge_view

__all__ = [
    "DEFAULT_REWARD",
    "ExportCounts",
    "ExportResult",
    "JudgeTrajectoryView",
    "export_groups",
    "from_jsonl",
    "judge_view",
    "to_jsonl",
]
