"""Totals over a run's judgments: the numbers an asset reports (and plots) per window."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from babylon_pipeline.ruler.types import GroupJudgment


@dataclass(frozen=True)
class JudgeRunSummary:
    groups: int
    scored: int
    judge_failed: int
    cached: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float | None
    """Summed over the judgments that report a cost; None when none does."""

    def as_dict(self) -> dict[str, int | float | None]:
        return asdict(self)


def summarize(judgments: Iterable[GroupJudgment]) -> JudgeRunSummary:
    items = list(judgments)
    costs = [j.cost_usd for j in items if j.cost_usd is not None]
    return JudgeRunSummary(
        groups=len(items),
        scored=sum(j.status == "scored" for j in items),
        judge_failed=sum(j.status == "judge_failed" for j in items),
        cached=sum(j.cached for j in items),
        calls=sum(j.calls for j in items),
        prompt_tokens=sum(j.prompt_tokens for j in items),
        completion_tokens=sum(j.completion_tokens for j in items),
        cost_usd=sum(costs) if costs else None,
    )
