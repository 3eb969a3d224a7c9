"""The embedded profile's judge: ranks a group by its measured outcomes, without a model or network.

Each metric is min-max scaled within the group (the best trajectory 1, the worst 0, all equal 0.5
each), and the scaled metrics are averaged with the given weights. A trajectory lacking a metric
(or holding a non-finite value) fails its group rather than being scored on a guess.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from babylon_pipeline.ruler.judge import Judge, OnJudged
from babylon_pipeline.ruler.rubrics import Rubric
from babylon_pipeline.ruler.scaling import scale_within_group
from babylon_pipeline.ruler.types import GroupJudgment, JudgeGroup, TrajectoryScore

HEURISTIC_MODEL = "heuristic-outcome-v1"


class HeuristicJudge(Judge):
    def __init__(self, metric: str | Mapping[str, float] = "window_pnl") -> None:
        """One metric name (higher is better), or metric names with positive weights."""
        weights = {metric: 1.0} if isinstance(metric, str) else dict(metric)
        if not weights or any(not (math.isfinite(w) and w > 0) for w in weights.values()):
            raise ValueError("the heuristic judge needs at least one metric, each with a positive weight")
        self.weights = weights

    @property
    def model(self) -> str:
        """Names the heuristic and its metrics, so changing the weights changes the cache key."""
        if len(self.weights) == 1 and next(iter(self.weights.values())) == 1.0:
            return f"{HEURISTIC_MODEL}:{next(iter(self.weights))}"
        return f"{HEURISTIC_MODEL}:" + ",".join(f"{m}={w:g}" for m, w in sorted(self.weights.items()))

    async def _judge(self, groups: list[JudgeGroup], rubric: Rubric, on_judged: OnJudged) -> list[GroupJudgment]:
        judgments = [self._judge_group(group, rubric) for group in groups]
        for i, judgment in enumerate(judgments):
            await on_judged(i, judgment)
        return judgments

    def _judge_group(self, group: JudgeGroup, rubric: Rubric) -> GroupJudgment:
        unusable = sorted(
            f"{t.trajectory_id}:{m}"
            for t in group.trajectories
            for m in self.weights
            if not math.isfinite(t.metrics.get(m, math.nan))
        )
        if unusable:
            return self._judgment(group, rubric, error=f"metric missing or not finite: {', '.join(unusable)}")
        total = sum(self.weights.values())
        scaled = {m: scale_within_group({t.trajectory_id: t.metrics[m] for t in group.trajectories}) for m in self.weights}
        scores = {
            t.trajectory_id: TrajectoryScore(
                score=min(1.0, sum(w * scaled[m][t.trajectory_id] for m, w in self.weights.items()) / total),
                explanation="outcome heuristic, scaled within the group: "
                + ", ".join(f"{m}={t.metrics[m]:g}" for m in self.weights),
            )
            for t in group.trajectories
        }
        return self._judgment(group, rubric, scores=scores)

    def _judgment(
        self, group: JudgeGroup, rubric: Rubric, *, scores: dict[str, TrajectoryScore] | None = None, error: str | None = None
    ) -> GroupJudgment:
        return GroupJudgment(
            group_id=group.group_id,
            status="judge_failed" if error else "scored",
            scores=scores or {},
            error=error,
            judge_model=self.model,
            rubric=rubric.name,
            cost_usd=0.0,
        )
