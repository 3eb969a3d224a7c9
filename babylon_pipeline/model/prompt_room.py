"""The policy's prompt room: how many prompt tokens the local policy feeds its model, and the trainer keeps.

The local policy answers in at most `max_new_tokens` within the base's `context_tokens`, so a
prompt keeps its last `context_tokens - max_new_tokens` tokens (the end: the observation and the
question). The trainer cuts every recorded turn's prompt with the same rule and room, so it trains
each answer in the context it was sampled in: the recorded log-probs are then the log-probs of what
is trained, and the importance ratio of the first step is 1. Torch-free: the orchestrator derives
the trainer's room with it.
"""

from __future__ import annotations

from collections.abc import Sequence

ANSWER_TOKENS = 96  # the local policy's answer budget (`max_new_tokens`) unless told otherwise


def prompt_room(context_tokens: int, max_new_tokens: int = ANSWER_TOKENS) -> int:
    if not 0 < max_new_tokens < context_tokens:
        raise ValueError(f"max_new_tokens ({max_new_tokens}) must leave room for the prompt within "
                         f"context_tokens ({context_tokens})")
    return context_tokens - max_new_tokens


def keep_end(ids: Sequence[int], room: int | None) -> list[int]:
    """The last `room` ids (all of them when `room` is None)."""
    return list(ids) if room is None else list(ids[max(0, len(ids) - room) :])
