"""The RULER judge as a Dagster resource: an OpenAI-compatible endpoint, or the offline heuristic."""

from __future__ import annotations

import os

import dagster as dg

from babylon_pipeline.ruler import HeuristicJudge, Judge, JudgeLimits, OpenAIJudge

_LIMITS = JudgeLimits()


class JudgeResource(dg.ConfigurableResource):
    """`base_url` set: `OpenAIJudge` against it; unset: the heuristic judge (no network)."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3
    heuristic_metric: str = "window_pnl"
    # bounds of the OpenAI-compatible judge; see `babylon_pipeline.ruler.limits.JudgeLimits`
    call_deadline_s: float = _LIMITS.call_deadline_s
    window_deadline_s: float = _LIMITS.window_deadline_s
    max_answer_tokens: int = _LIMITS.max_answer_tokens
    max_response_bytes: int = _LIMITS.max_response_bytes
    max_prompt_chars: int = _LIMITS.max_prompt_chars
    min_trajectory_chars: int = _LIMITS.min_trajectory_chars

    def judge(self) -> Judge:
        if not self.base_url:
            return HeuristicJudge(self.heuristic_metric)
        if not self.model or not self.api_key:
            raise ValueError("an OpenAI-compatible judge needs BABYLON_JUDGE_MODEL and BABYLON_JUDGE_API_KEY")
        return OpenAIJudge(
            self.base_url,
            self.model,
            self.api_key,
            concurrency=self.concurrency,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
            limits=JudgeLimits(
                call_deadline_s=self.call_deadline_s,
                window_deadline_s=self.window_deadline_s,
                max_answer_tokens=self.max_answer_tokens,
                max_response_bytes=self.max_response_bytes,
                max_prompt_chars=self.max_prompt_chars,
                min_trajectory_chars=self.min_trajectory_chars,
            ),
        )


def judge_resource_from_env() -> JudgeResource:
    """The production judge when `BABYLON_JUDGE_BASE_URL` is set, else the embedded heuristic."""
    if not os.environ.get("BABYLON_JUDGE_BASE_URL"):
        return JudgeResource()
    return JudgeResource(
        base_url=dg.EnvVar("BABYLON_JUDGE_BASE_URL"),
        model=dg.EnvVar("BABYLON_JUDGE_MODEL"),
        api_key=dg.EnvVar("BABYLON_JUDGE_API_KEY"),
    )
