"""The judge's messages for one group, RULER style.

The messages every trajectory starts with (system prompt, scenario, first observations) are sent
once as `<context>`; each trajectory contributes only its remainder, in a numbered block. Block
numbers are positions, not identities: the judge must answer with the real trajectory ids, which
`<trajectory_ids>` maps from the numbers, so answers are matched by id and never by order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from babylon_pipeline.ruler.rubrics import Rubric
from babylon_pipeline.ruler.types import JudgeGroup

INSTRUCTIONS = """\
You compare several attempts by AI agents at the same task and score each from 0 to 1.

All attempts started from the same conversation, shown once inside <context> (absent when they share \
nothing). Each <trajectory id="N"> block holds only what followed that shared start, as JSON chat \
messages; an <outcome> inside a block, when present, holds results measured after the attempt ended, \
which the agent never saw. Work out the agent's goal from the conversation, weigh the attempts against \
one another, and score them by these standards:

{rubric}
Reply with JSON only, of the form {{"scores": [{{"trajectory_id": "...", "explanation": "...", "score": 0.5}}]}}, \
with exactly one entry per trajectory. "trajectory_id" is the trajectory's id string from \
<trajectory_ids>, which maps each block number to its id: never answer with the block number. \
"explanation" says in one or two sentences why; "score" is a number from 0 to 1."""

FEEDBACK = """\
Your previous answer could not be used: {error}. Reply again with JSON only, of the form \
{{"scores": [{{"trajectory_id": "...", "explanation": "...", "score": 0.5}}]}}, with exactly one entry \
for each of these trajectory_id values: {ids}, and each score a number from 0 to 1."""


@dataclass(frozen=True)
class JudgePrompt:
    """The chat messages to send, and `block_ids[k - 1]`: the trajectory id of block k."""

    messages: list[dict[str, str]]
    block_ids: list[str]


def shared_prefix_length(message_lists: Sequence[Sequence[dict[str, Any]]]) -> int:
    """How many leading messages (compared whole) every list has in common."""
    shortest = min((len(m) for m in message_lists), default=0)
    for i in range(shortest):
        first = message_lists[0][i]
        if any(messages[i] != first for messages in message_lists[1:]):
            return i
    return shortest


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def build_prompt(group: JudgeGroup, rubric: Rubric) -> JudgePrompt:
    message_lists = [t.messages for t in group.trajectories]
    prefix = shared_prefix_length(message_lists)
    block_ids = group.trajectory_ids
    parts: list[str] = []
    if prefix:
        parts.append(f"<context>\n{_json(message_lists[0][:prefix])}\n</context>")
    parts.append(f"<trajectory_ids>{_json({str(k): tid for k, tid in enumerate(block_ids, 1)})}</trajectory_ids>")
    for k, trajectory in enumerate(group.trajectories, 1):
        block = f'<trajectory id="{k}">\n{_json(trajectory.messages[prefix:])}'
        if trajectory.metrics:
            block += f"\n<outcome>{_json(trajectory.metrics)}</outcome>"
        parts.append(block + "\n</trajectory>")
    return JudgePrompt(
        messages=[
            {"role": "system", "content": INSTRUCTIONS.format(rubric=rubric.text)},
            {"role": "user", "content": "\n\n".join(parts)},
        ],
        block_ids=block_ids,
    )


def feedback_message(error: str, block_ids: Sequence[str]) -> str:
    """What the judge is told after an unusable answer, before its one retry."""
    return FEEDBACK.format(error=error, ids=_json(list(block_ids)))
