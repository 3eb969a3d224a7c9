"""The RULER judge as a Dagster resource: an OpenAI-compatible endpoint, or the offline heuristic."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import dagster as dg

from babylon_pipeline.ruler import HeuristicJudge, Judge, OpenAIJudge

# The resource's fields and the variables they come from: all three set, or none.
JUDGE_SETTINGS = {
    "base_url": "BABYLON_JUDGE_BASE_URL",
    "model": "BABYLON_JUDGE_MODEL",
    "api_key": "BABYLON_JUDGE_API_KEY",
}


class JudgeResource(dg.ConfigurableResource):
    """All of `base_url`, `model`, `api_key` set: `OpenAIJudge`; none: the heuristic judge (no network).

    Some but not all is refused: a judge the user half configured must not be replaced by the heuristic
    in silence."""

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = None
    concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3
    heuristic_metric: str = "window_pnl"

    def _half_set(self) -> str | None:
        """Why this judge is refused, naming variables only (never a value), or None."""
        given = [field for field in JUDGE_SETTINGS if getattr(self, field)]
        if not given or len(given) == len(JUDGE_SETTINGS):
            return None
        named = ", ".join(JUDGE_SETTINGS[field] for field in given)
        missing = ", ".join(JUDGE_SETTINGS[field] for field in JUDGE_SETTINGS if field not in given)
        return (f"the OpenAI-compatible judge is half configured: {named} set, {missing} not; set all three, "
                f"or unset them all for the heuristic judge")

    def describe(self) -> str:
        """Which judge runs, fit for logs and metadata: the endpoint's host, never its key."""
        if not self.base_url:
            return f"heuristic judge ({self.heuristic_metric})"
        parts = urlsplit(self.base_url)
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        return f"OpenAI-compatible judge {self.model} at {host}"

    def judge(self) -> Judge:
        if (reason := self._half_set()) is not None:
            raise dg.Failure(description=reason, allow_retries=False)
        if not self.base_url:
            return HeuristicJudge(self.heuristic_metric)
        return OpenAIJudge(
            self.base_url,
            self.model,
            self.api_key,
            concurrency=self.concurrency,
            timeout_s=self.timeout_s,
            max_retries=self.max_retries,
        )


def judge_resource_from_env() -> JudgeResource:
    """Each judge variable that is set, through `EnvVar`; the heuristic judge when none is.

    An unset one is left out rather than read through `EnvVar`, whose failure is a long config
    traceback: `judge()` refuses the half-set judge in one line instead."""
    return JudgeResource(**{field: dg.EnvVar(name) for field, name in JUDGE_SETTINGS.items() if os.environ.get(name)})
