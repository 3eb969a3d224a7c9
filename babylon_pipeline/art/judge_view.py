"""An ART group as the judge reads it: plain role/content messages per trajectory.

The judge compares what the agents said and did, not how it was sampled, so Choices are
flattened back into assistant messages (logprobs dropped) and every content becomes a string.
Metrics travel along because the outcome heuristic judge ranks by them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from babylon_pipeline.art.turns import is_choice


class JudgeTrajectoryView(NamedTuple):
    trajectory_id: str
    messages: list[dict[str, str]]
    metrics: dict[str, float]


def judge_view(group: dict[str, Any]) -> tuple[str, list[JudgeTrajectoryView]]:
    """(group id, one view per trajectory in the group's order)."""
    return str(group["metadata"]["group_id"]), [
        JudgeTrajectoryView(
            trajectory_id=str(trajectory["metadata"]["trajectory_id"]),
            messages=[_plain(turn) for turn in trajectory["messages_and_choices"]],
            metrics={name: float(value) for name, value in trajectory["metrics"].items()},
        )
        for trajectory in group["trajectories"]
    ]


def _plain(turn: dict[str, Any]) -> dict[str, str]:
    message = turn["message"] if is_choice(turn) else turn
    return {"role": str(message["role"]), "content": message.get("content") or ""}
