"""The training reward: the judge's relative score blended with the measured market outcome.

    reward = w * judge_score + (1 - w) * outcome_scaled

- `judge_score` is the judge's score in [0, 1] for the trajectory.
- `outcome_scaled` is the trajectory's outcome reward (P&L delta, prediction correctness, as
  computed by `outcome_rewards`) min-max scaled within its group: best 1, worst 0, all equal 0.5.
  Both terms thus live on [0, 1] and neither's units dominate the other.
- `w` is `judge_weight`, default 0.5: 1 trains on the judge alone, 0 on outcomes alone.
- A `judge_failed` group has no judge scores: its rewards are `outcome_scaled` alone.

GRPO standardises rewards within each group afterwards, so only the ordering and spacing within a
group matter, not the absolute level.
"""

from __future__ import annotations

from collections.abc import Mapping

from babylon_pipeline.ruler.scaling import scale_within_group
from babylon_pipeline.ruler.types import GroupJudgment

DEFAULT_JUDGE_WEIGHT = 0.5


def _check_weight(judge_weight: float) -> None:
    if not 0.0 <= judge_weight <= 1.0:
        raise ValueError(f"judge_weight must be within [0, 1], got {judge_weight}")


def training_reward(judge_score: float | None, outcome_scaled: float, judge_weight: float = DEFAULT_JUDGE_WEIGHT) -> float:
    """One trajectory's reward; `judge_score` None (its group failed judging) means outcome only."""
    _check_weight(judge_weight)
    if judge_score is None:
        return outcome_scaled
    return judge_weight * judge_score + (1.0 - judge_weight) * outcome_scaled


def group_training_rewards(
    judgment: GroupJudgment, outcome_rewards: Mapping[str, float], judge_weight: float = DEFAULT_JUDGE_WEIGHT
) -> dict[str, float]:
    """Rewards for a whole group, keyed by trajectory id; `outcome_rewards` must cover the group."""
    _check_weight(judge_weight)
    if judgment.status == "scored" and set(judgment.scores) != set(outcome_rewards):
        raise ValueError(f"group {judgment.group_id!r}: judged and outcome trajectory ids differ")
    scaled = scale_within_group(outcome_rewards)
    return {
        tid: training_reward(judgment.scores[tid].score if tid in judgment.scores else None, outcome, judge_weight)
        for tid, outcome in scaled.items()
    }
