"""Stage 4: RULER scores for the window's groups, and the training reward they blend into.

One judge call per group (none for a group judged before with the same content: the cache lives
in the object store; `rejudge` asks again anyway). Results go to `ruler_scores.json` first, then where the app reads them
(`reward_judgments`, the `trajectories.aiJudge*` columns) in one transaction: the rows make
trajectories training candidates, and a candidate needs the file, so a crash between the two
leaves a file nobody trains from yet, never candidates without their rewards. A group the
judge failed gets no scores and no rows; its training reward is the outcome reward alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.art import judge_view
from babylon_pipeline.ruler import (
    CachedJudge,
    GroupJudgment,
    Judge,
    JudgeGroup,
    JudgeRunSummary,
    JudgeTrajectory,
    JudgmentCache,
    get_rubric,
    group_training_rewards,
    scale_within_group,
    summarize,
)
from babylon_pipeline.storage.base import ObjectNotFound, ObjectStore
from babylon_pipeline.store.judgments import TrajectoryJudgment, record_judgments
from babylon_pipeline.windowing.files import RULER_SCORES, write_window_json
from babylon_pipeline.windowing.groups import read_window_groups
from babylon_pipeline.windowing.rewards import read_outcome_rewards


class _CacheBytes:
    """The object store as the judgment cache sees it: a missing key reads as None."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._store.get_bytes(key)
        except ObjectNotFound:
            return None

    def put_bytes(self, key: str, data: bytes) -> None:
        self._store.put_bytes(key, data)


@dataclass(frozen=True)
class WindowJudging:
    summary: JudgeRunSummary
    trajectories: int
    scored_trajectories: int
    trainable_groups: int
    scores: list[float]

    @property
    def scored_fraction(self) -> float:
        return self.scored_trajectories / self.trajectories if self.trajectories else 1.0


def judge_window(
    engine: sa.Engine, store: ObjectStore, window_id: str, judge: Judge, rubric_name: str, judge_weight: float,
    *, rejudge: bool = False,
) -> WindowJudging:
    """`rejudge`: ask the judge about every group again instead of reusing the cached judgments."""
    rubric = get_rubric(rubric_name)
    groups = [JudgeGroup(group_id=gid, trajectories=[JudgeTrajectory(**v._asdict()) for v in views])
              for gid, views in map(judge_view, read_window_groups(store, window_id))]
    judgments = CachedJudge(judge, JudgmentCache(_CacheBytes(store)), reuse=not rejudge).judge_groups(groups, rubric)
    outcome = {tid: entry["reward"] for tid, entry in read_outcome_rewards(store, window_id)["rewards"].items()}

    document_groups: dict[str, Any] = {}
    rows: list[TrajectoryJudgment] = []
    trainable = 0
    for group, judgment in zip(groups, judgments, strict=True):
        group_outcome = {tid: outcome.get(tid, 0.0) for tid in group.trajectory_ids}
        training = group_training_rewards(judgment, group_outcome, judge_weight)
        trainable += len({round(r, 9) for r in training.values()}) > 1
        document_groups[group.group_id] = _group_document(judgment, group_outcome, training)
        rows.extend(_rows(judgment, judge.model, rubric_name))

    document = {
        "window": window_id,
        "judge_model": judge.model,
        "rubric": rubric_name,
        "judge_weight": judge_weight,
        "groups": document_groups,
    }
    write_window_json(store, window_id, RULER_SCORES, document, writer="ruler_scores")  # before the rows: see above
    record_judgments(engine, rows, datetime.now(UTC).replace(tzinfo=None))
    return WindowJudging(
        summary=summarize(judgments),
        trajectories=sum(len(g.trajectories) for g in groups),
        scored_trajectories=len(rows),
        trainable_groups=trainable,
        scores=[row.score for row in rows],
    )


def _group_document(judgment: GroupJudgment, outcome: dict[str, float], training: dict[str, float]) -> dict[str, Any]:
    return {
        "status": judgment.status,
        "error": judgment.error,
        "trajectories": {
            tid: {
                "judge_score": judgment.scores[tid].score if tid in judgment.scores else None,
                "explanation": judgment.scores[tid].explanation if tid in judgment.scores else None,
                "outcome_reward": outcome[tid],
                "training_reward": training[tid],
            }
            for tid in outcome
        },
    }


def _rows(judgment: GroupJudgment, judge_model: str, rubric_name: str) -> list[TrajectoryJudgment]:
    if judgment.status != "scored":
        return []
    scores = {tid: s.score for tid, s in judgment.scores.items()}
    normalised = scale_within_group(scores)
    ranked = sorted(scores, key=lambda tid: (-scores[tid], tid))
    return [
        TrajectoryJudgment(
            trajectory_id=tid,
            group_id=judgment.group_id,
            judge_model=judge_model,
            judge_version=rubric_name,
            score=scores[tid],
            rank=rank,
            normalized_score=normalised[tid],
            reasoning=judgment.scores[tid].explanation,
            criteria={"rubric": rubric_name},
        )
        for rank, tid in enumerate(ranked, start=1)
    ]
