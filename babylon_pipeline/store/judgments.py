"""Write judge results where the app reads them: `reward_judgments` and the `trajectories.aiJudge*` columns.

Upserts keyed by `trajectoryId`, in one transaction per call: re-judging a window rewrites the
same rows instead of adding new ones, and a failure leaves the previous rows as they were.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from babylon_pipeline.store import tables

J = tables.reward_judgments
T = tables.trajectories


@dataclass(frozen=True)
class TrajectoryJudgment:
    trajectory_id: str
    group_id: str
    judge_model: str
    judge_version: str
    score: float
    rank: int
    normalized_score: float
    reasoning: str
    criteria: dict = field(default_factory=dict)
    components: dict[str, float] = field(default_factory=dict)


def _upsert(dialect: str):
    return {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]


def record_judgments(engine: sa.Engine, judgments: Sequence[TrajectoryJudgment], judged_at: datetime) -> None:
    if not judgments:
        return
    rows = [
        {
            "id": f"rj-{j.trajectory_id}",
            "trajectoryId": j.trajectory_id,
            "judgeModel": j.judge_model,
            "judgeVersion": j.judge_version,
            "overallScore": j.score,
            "componentScoresJson": json.dumps(j.components, sort_keys=True),
            "rank": j.rank,
            "normalizedScore": j.normalized_score,
            "groupId": j.group_id,
            "reasoning": j.reasoning,
            "criteriaJson": json.dumps(j.criteria, sort_keys=True),
            "judgedAt": judged_at,
        }
        for j in judgments
    ]
    insert = _upsert(engine.dialect.name)(J)
    upsert = insert.on_conflict_do_update(
        index_elements=[J.c.trajectoryId],
        set_={name: insert.excluded[name] for name in rows[0] if name not in ("id", "trajectoryId")},
    )
    update = (
        sa.update(T)
        .where(T.c.trajectoryId == sa.bindparam("tid"))
        .values(aiJudgeReward=sa.bindparam("score"), aiJudgeReasoning=sa.bindparam("reasoning"),
                judgedAt=judged_at, updatedAt=judged_at)
    )
    with engine.begin() as conn:
        conn.execute(upsert, rows)
        conn.execute(update, [{"tid": j.trajectory_id, "score": j.score, "reasoning": j.reasoning} for j in judgments])
