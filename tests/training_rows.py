"""Trajectory rows as the RULER stage leaves them (judged or not, trained or not), inserted directly:
the training queries read only flags, keys and rewards, so the steps can be a stub."""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.windows import window_start


def trajectory_row(
    trajectory_id: str,
    window_id: str | None,
    scenario_id: str | None,
    reward: float | None,
    *,
    used: bool = False,
    training_data: bool = True,
    judged_at: datetime | None = None,
) -> dict:
    moment = window_start(window_id) + timedelta(minutes=5) if window_id else datetime(2025, 11, 15, 10, 5)
    return {
        "id": f"row-{trajectory_id}", "trajectoryId": trajectory_id, "agentId": "agent", "startTime": moment,
        "endTime": moment, "durationMs": 1000, "windowId": window_id, "scenarioId": scenario_id, "stepsJson": "[]",
        "rewardComponentsJson": "{}", "metricsJson": "{}", "metadataJson": "{}", "totalReward": 0.0,
        "episodeLength": 0, "finalStatus": "completed", "aiJudgeReward": reward,
        "judgedAt": (judged_at or moment + timedelta(hours=1)) if reward is not None else None,
        "isTrainingData": training_data, "usedInTraining": used, "updatedAt": moment,
    }


def insert_rows(engine: sa.Engine, rows: list[dict]) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.trajectories), rows)


def scored_group(window_id: str, scenario: str | None, rewards: list[float], prefix: str | None = None) -> list[dict]:
    """One comparison group of judged, untrained trajectories."""
    prefix = prefix or f"{window_id}-{scenario}"
    return [trajectory_row(f"{prefix}-{i}", window_id, scenario, r) for i, r in enumerate(rewards)]
