"""What a judge takes and gives back: plain, frozen, JSON-round-trippable records.

The caller converts ART `TrajectoryGroup`s to `JudgeGroup`s; a judge returns one `GroupJudgment`
per group, either `scored` (every trajectory has a score) or `judge_failed` (none has: a failed
group is counted, never filled in with guesses).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JudgeStatus = Literal["scored", "judge_failed"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class JudgeTrajectory(_Frozen):
    """One agent's attempt: its chat messages (role/content dicts) and its measured outcomes."""

    trajectory_id: str = Field(min_length=1)
    messages: list[dict[str, Any]]
    metrics: dict[str, float] = Field(default_factory=dict)


class JudgeGroup(_Frozen):
    """Attempts at the same scenario, judged relative to one another."""

    group_id: str
    trajectories: list[JudgeTrajectory] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> JudgeGroup:
        ids = [t.trajectory_id for t in self.trajectories]
        if len(set(ids)) != len(ids):
            raise ValueError(f"group {self.group_id!r} has duplicate trajectory ids")
        return self

    @property
    def trajectory_ids(self) -> list[str]:
        return [t.trajectory_id for t in self.trajectories]


class TrajectoryScore(_Frozen):
    score: float = Field(ge=0.0, le=1.0)
    explanation: str


class GroupJudgment(_Frozen):
    """A group's verdict with what it cost. `calls` counts the chat-completion requests the judge
    made for the group (the client's transport retries within one request are not counted); a
    cached judgment reports zero calls, tokens and cost because nothing was spent on it this time."""

    group_id: str
    status: JudgeStatus
    scores: dict[str, TrajectoryScore] = Field(default_factory=dict)
    error: str | None = None
    judge_model: str
    rubric: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None
    calls: int = 0
    cached: bool = False

    @model_validator(mode="after")
    def _all_or_nothing(self) -> GroupJudgment:
        if self.status == "scored" and self.error is not None:
            raise ValueError("a scored judgment carries no error")
        if self.status == "judge_failed" and (self.scores or not self.error):
            raise ValueError("a failed judgment carries an error and no scores")
        return self
