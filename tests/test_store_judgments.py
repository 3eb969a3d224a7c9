"""Judge results land in `reward_judgments` and `trajectories`, idempotently."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.judgments import TrajectoryJudgment, record_judgments
from babylon_pipeline.store.recorder import TrajectoryRecorder


def _judgment(tid: str, score: float, rank: int) -> TrajectoryJudgment:
    return TrajectoryJudgment(
        trajectory_id=tid, group_id="g1", judge_model="judge-x", judge_version="general", score=score, rank=rank,
        normalized_score=score, reasoning=f"because {tid}", criteria={"rubric": "general"},
    )


def test_record_judgments_upserts_and_updates_trajectories(db: sa.Engine) -> None:
    recorder = TrajectoryRecorder(db, clock=lambda: datetime(2025, 11, 15, 10, 5))
    ids = []
    for agent in ("a", "b"):
        with recorder.trajectory(agent) as t:
            t.start_step({})
            t.complete_step({"actionType": "HOLD"}, reward=0)
        ids.append(t.trajectory_id)

    first = datetime(2025, 11, 15, 11, 5)
    record_judgments(db, [_judgment(ids[0], 0.9, 1), _judgment(ids[1], 0.2, 2)], first)
    record_judgments(db, [_judgment(ids[0], 0.8, 1), _judgment(ids[1], 0.3, 2)], datetime(2025, 11, 15, 12, 5))

    with db.connect() as conn:
        rows = conn.execute(sa.select(tables.reward_judgments).order_by(tables.reward_judgments.c.rank)).all()
        trajectories = {r.trajectoryId: r for r in conn.execute(sa.select(tables.trajectories))}
    assert [(r.trajectoryId, r.overallScore, r.rank) for r in rows] == [(ids[0], 0.8, 1), (ids[1], 0.3, 2)]
    assert trajectories[ids[1]].aiJudgeReward == 0.3
    assert trajectories[ids[1]].aiJudgeReasoning == f"because {ids[1]}"
    assert trajectories[ids[1]].judgedAt == trajectories[ids[1]].updatedAt == datetime(2025, 11, 15, 12, 5)
