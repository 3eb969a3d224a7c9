"""A group too large for the judge's context is trimmed, then split; it is never failed for its size.

The rule, applied to the user message as sent (`max_prompt_chars` characters):
1. A group that fits is sent whole.
2. The shared context may take at most half the budget: it keeps its first messages, and the rest
   are replaced by a note saying how many were left out (a first message too long keeps its start).
3. What remains is shared equally among the trajectories. A trajectory over its share loses its
   oldest turns first, replaced by a note, and a latest turn still too long keeps its end.
4. When that share would fall below `min_trajectory_chars`, the group is split, in order, into the
   fewest sub-groups (sizes differing by at most one, at least two trajectories each) whose share
   reaches it. Each sub-group is judged with the same context and rubric; the group is scored only
   when every sub-group is, and its scores are then relative within each sub-group.
Ids, tags and outcome metrics are never cut (they are small; a group whose ids and outcomes alone
exceed the budget is sent over it, with each trajectory cut to `MIN_SHARE_CHARS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from babylon_pipeline.ruler.prompt import Block, JudgePrompt, fenced_json, fenced_length, render_prompt, split_group
from babylon_pipeline.ruler.rubrics import Rubric
from babylon_pipeline.ruler.types import JudgeGroup

Keep = Literal["start", "end"]
MIN_SHARE_CHARS = 200
"""A trajectory's share never goes below this, even when ids and outcomes alone are near the budget."""
NOTE_ROLE = "pipeline"


def _size(prompt: JudgePrompt) -> int:
    return len(prompt.messages[1]["content"])


def _note(omitted: int, what: str) -> dict[str, Any]:
    return {"role": NOTE_ROLE, "content": f"[{omitted} {what} left out to fit the judge's context]"}


def _cut(message: dict[str, Any], budget: int, keep: Keep) -> dict[str, Any]:
    """One message as text, cut to fit `budget` characters of fenced JSON, keeping its start or end."""
    role = message.get("role")
    role = role if isinstance(role, str) and len(role) <= 40 else "unknown"
    content = message.get("content")
    text = content if isinstance(content, str) else fenced_json({k: v for k, v in message.items() if k != "role"})
    length = max(0, budget - 80)
    while True:
        kept = text[:length] if keep == "start" else text[len(text) - length:] if length else ""
        marker = f"[{len(text) - len(kept)} characters left out]"
        cut = {"role": role, "content": kept + " " + marker if keep == "start" else marker + " " + kept}
        size = fenced_length(cut)
        if size <= budget or length == 0:
            return cut
        length = max(0, min(length - 1, length * budget // size - 1))


def _fits(message_lists: Sequence[list[dict[str, Any]]], budget: int) -> bool:
    """Whether the fenced JSON of every list, less 2 characters of `[]` each, fits `budget`, measuring
    no further than needed (a 10 MB trajectory is not encoded to learn that it is too long)."""
    used = sum(2 * max(0, len(messages) - 1) for messages in message_lists)  # the ", " between messages
    for messages in message_lists:
        for message in messages:
            used += fenced_length(message)
            if used > budget:
                return False
    return used <= budget


def fit_messages(messages: list[dict[str, Any]], budget: int, keep: Keep) -> list[dict[str, Any]]:
    """`messages` whose fenced JSON fits `budget`: whole messages kept from one end, a note for the rest."""
    if _fits([messages], budget - 2):
        return messages
    ordered = messages if keep == "start" else messages[::-1]
    note_size = fenced_length([_note(len(messages), "messages")]) + 2
    kept: list[dict[str, Any]] = []
    used = note_size
    for message in ordered:
        size = fenced_length(message) + 2
        if used + size > budget:
            break
        kept.append(message)
        used += size
    if not kept:
        kept = [_cut(ordered[0], budget - note_size, keep)]
    note = _note(len(messages) - len(kept), "messages")
    return [*kept, note] if keep == "start" else [note, *kept[::-1]]


def _chunks(blocks: Sequence[Block], parts: int) -> list[list[Block]]:
    """`blocks` in order, in `parts` runs whose sizes differ by at most one."""
    size, extra = divmod(len(blocks), parts)
    runs, start = [], 0
    for i in range(parts):
        end = start + size + (i < extra)
        runs.append(list(blocks[start:end]))
        start = end
    return runs


def _share(context: list[dict[str, Any]], run: list[Block], rubric: Rubric, max_chars: int) -> int:
    """Characters each trajectory of `run` may use once the tags, ids and outcomes are counted."""
    skeleton = render_prompt(context, [Block(b.trajectory_id, [], b.metrics) for b in run], rubric)
    return (max_chars - _size(skeleton)) // len(run) + 2  # `[]` of each empty block is counted already


def fit_prompts(group: JudgeGroup, rubric: Rubric, max_chars: int, min_trajectory_chars: int) -> list[JudgePrompt]:
    """The prompts that judge `group` within `max_chars` each: one, unless it had to be split."""
    context, blocks = split_group(group)
    room = max_chars - _size(render_prompt(context, [Block(b.trajectory_id, [], b.metrics) for b in blocks], rubric))
    if _fits([b.messages for b in blocks], room):
        return [render_prompt(context, blocks, rubric)]
    context = fit_messages(context, max_chars // 2, "start") if context else context
    most_parts = max(1, len(blocks) // 2)
    for parts in range(1, most_parts + 1):
        runs = _chunks(blocks, parts)
        shares = [_share(context, run, rubric, max_chars) for run in runs]
        if min(shares) >= min_trajectory_chars or parts == most_parts:
            break
    prompts = []
    for run, share in zip(runs, shares, strict=True):
        budget = max(share, MIN_SHARE_CHARS)
        trimmed = [Block(b.trajectory_id, fit_messages(b.messages, budget, "end"), b.metrics) for b in run]
        prompts.append(render_prompt(context, trimmed, rubric))
    return prompts
