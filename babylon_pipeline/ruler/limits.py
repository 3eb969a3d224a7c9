"""How much time, text and answer one judge may use: every bound in one place, with defaults.

The `openai` client's `timeout` bounds each wait for bytes, not a whole answer: a server that sends
one byte a second never trips it. The deadlines here are wall-clock: `call_deadline_s` for one
answer (the client's own transport retries included), `window_deadline_s` for one `judge_groups`
call, which the window stage makes once per window. Sizes are in characters of the prompt as sent
(about 4 per token) and in bytes of the HTTP body received.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class JudgeLimits:
    call_deadline_s: float = 180.0
    """Wall-clock bound on one answer; past it the group is `judge_failed` (no second answer)."""
    window_deadline_s: float = 1800.0
    """Wall-clock bound on all groups of one call; groups still open then are `judge_failed`."""
    max_answer_tokens: int = 4096
    """`max_tokens` on each request."""
    max_response_bytes: int = 1_000_000
    """Largest HTTP body read for an answer; a larger one is an unusable answer (retried once)."""
    max_prompt_chars: int = 100_000
    """Largest user message sent; a larger group is trimmed, then split (see `ruler.fitting`)."""
    min_trajectory_chars: int = 2_000
    """Smallest share of the prompt a trajectory is trimmed to before its group is split instead."""
    max_explanation_chars: int = 2_000
    """Longer explanations are cut to this length when stored."""

    def __post_init__(self) -> None:
        if bad := {name: value for name, value in vars(self).items() if not value > 0}:
            raise ValueError(f"judge limits must be positive: {bad}")
        if self.min_trajectory_chars * 2 > self.max_prompt_chars:
            raise ValueError("max_prompt_chars must hold at least two trajectories of min_trajectory_chars")
