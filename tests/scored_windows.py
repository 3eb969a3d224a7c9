"""Windows taken through every stage up to RULER scores (heuristic judge), without Dagster: the
input a training run assembles its batch from."""

from __future__ import annotations

import sqlalchemy as sa

from babylon_pipeline.rewards import RewardWeights
from babylon_pipeline.ruler import HeuristicJudge
from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.windowing.groups import export_window_groups
from babylon_pipeline.windowing.judging import judge_window
from babylon_pipeline.windowing.rewards import score_window
from babylon_pipeline.windowing.trajectories import export_window_trajectories


def score_windows(engine: sa.Engine, store: ObjectStore, windows: list[str], judge_weight: float = 0.5) -> None:
    for window_id in windows:
        export_window_trajectories(engine, store, window_id)
        score_window(engine, store, window_id, RewardWeights())
        export_window_groups(store, window_id)
        judge_window(engine, store, window_id, HeuristicJudge(), "general", judge_weight)
