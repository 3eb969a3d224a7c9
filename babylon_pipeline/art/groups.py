"""A window's trajectories as ART `TrajectoryGroup` JSON, one group per scenario.

Each group is the dict `art.TrajectoryGroup.model_dump(mode="json")` would give, so that the
trainer and the judge read one format and the file loads with ART itself. Choices made here:

- Groups are keyed by (window, `Trajectory.group_key`): the scenario, or the window when the app
  stored none. Groups are ordered by key, trajectories within a group by (start time, id).
- A trajectory's chat is the system prompt of its first `action` call (else its first call), then,
  for every LLM call of every step in recorded order, the call's user prompt as a plain message
  and its response as a trainable Choice (`art.turns`). All calls are kept, not just `action`
  ones: reasoning calls are the policy's output too, and the action depended on them.
- A step without LLM calls has no recorded exchange and adds no turn; a trajectory with none at
  all cannot be trained on and is left out of every group. Both are counted, never hidden
  (`steps_without_llm_exchange` counts the exported trajectories' steps only).
- `reward` is the caller's reward for the trajectory, 0.0 when it has none yet (counted as
  `rewards_defaulted`): export runs before the rewards, and GRPO only compares within a group.
- `metrics` hold numbers and bools only, `metadata` scalars only, as ART requires; a non-finite
  measured metric is left out rather than written as a number JSON cannot hold.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from babylon_pipeline.art.turns import assistant_choice, has_logprobs, system_prompt, user_message
from babylon_pipeline.store.recorder import POST_ACTIONS, TRADE_ACTIONS
from babylon_pipeline.store.records import LLMCall, Trajectory
from babylon_pipeline.windows import to_utc_naive

DEFAULT_REWARD = 0.0
Metric = float | int | bool


@dataclass(frozen=True)
class ExportCounts:
    trajectories_exported: int
    excluded_no_llm_exchange: int
    steps_without_llm_exchange: int
    groups: int
    rewards_defaulted: int
    assistant_turns: int
    assistant_turns_with_logprobs: int

    def as_metadata(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ExportResult:
    groups: list[dict[str, Any]]
    counts: ExportCounts


def export_groups(
    trajectories: Iterable[Trajectory],
    rewards: Mapping[str, float] | None = None,
    extra_metrics: Mapping[str, Mapping[str, Metric]] | None = None,
) -> ExportResult:
    """One pass over the window; `rewards` and `extra_metrics` are keyed by trajectory id."""
    rewards = rewards or {}
    extra_metrics = extra_metrics or {}
    members: dict[tuple[str, str], list[tuple[datetime, str, dict[str, Any]]]] = defaultdict(list)
    excluded: Counter[tuple[str, str]] = Counter()
    tally: Counter[str] = Counter()
    for trajectory in trajectories:
        key = (trajectory.window_id, trajectory.group_key)
        calls = [call for step in trajectory.steps for call in step.llm_calls]
        if not calls:
            excluded[key] += 1
            continue
        tid = trajectory.trajectory_id
        tally["steps_without_llm_exchange"] += len(trajectory.steps) - trajectory.steps_with_llm_calls
        tally["rewards_defaulted"] += tid not in rewards
        tally["assistant_turns"] += len(calls)
        tally["assistant_turns_with_logprobs"] += sum(map(has_logprobs, calls))
        art = art_trajectory(trajectory, rewards.get(tid, DEFAULT_REWARD), extra_metrics.get(tid, {}))
        members[key].append((to_utc_naive(trajectory.start_time), tid, art))
    groups = [_group(key, members[key], excluded[key]) for key in sorted(members)]
    counts = ExportCounts(
        trajectories_exported=sum(len(group["trajectories"]) for group in groups),
        excluded_no_llm_exchange=sum(excluded.values()),
        steps_without_llm_exchange=tally["steps_without_llm_exchange"],
        groups=len(groups),
        rewards_defaulted=tally["rewards_defaulted"],
        assistant_turns=tally["assistant_turns"],
        assistant_turns_with_logprobs=tally["assistant_turns_with_logprobs"],
    )
    return ExportResult(groups=groups, counts=counts)


def art_trajectory(trajectory: Trajectory, reward: float, extra_metrics: Mapping[str, Metric]) -> dict[str, Any]:
    """One trajectory as `art.Trajectory.model_dump(mode="json")`, keys in ART's field order."""
    if not math.isfinite(reward):
        raise ValueError(f"trajectory {trajectory.trajectory_id}: reward must be finite, got {reward!r}")
    calls = [call for step in trajectory.steps for call in step.llm_calls]
    lead = next((call for call in calls if call.purpose == "action"), calls[0])
    system = system_prompt(lead)
    turns: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for call in calls:
        turns += [user_message(call), assistant_choice(call)]
    return {
        "messages_and_choices": turns,
        "tools": None,
        "additional_histories": [],
        "reward": float(reward),
        "initial_policy_version": None,
        "final_policy_version": None,
        "metrics": _metrics(trajectory, extra_metrics),
        "metadata": _metadata(trajectory, lead),
        "logs": [],
    }


def _metrics(trajectory: Trajectory, extra: Mapping[str, Metric]) -> dict[str, Metric]:
    actions = trajectory.actions
    done = [action.action_type for action in actions if action.success]
    measured: dict[str, Metric] = {
        "window_pnl": trajectory.window_pnl,
        "total_reward": trajectory.total_reward,
        "steps": len(trajectory.steps),
        "steps_with_llm_calls": trajectory.steps_with_llm_calls,
        "llm_calls": trajectory.llm_call_count,
        "failed_actions": len(actions) - len(done),
        "trades": sum(kind in TRADE_ACTIONS for kind in done),
        "posts": sum(kind in POST_ACTIONS for kind in done),
    }
    metrics = {name: value for name, value in measured.items() if math.isfinite(value)}
    for name, value in extra.items():
        if name in measured:
            raise ValueError(f"extra metric {name!r} would replace a measured one")
        if not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"extra metric {name!r} must be a finite number or bool, got {value!r}")
        metrics[name] = value
    return metrics


def sampled_from_the_policy_itself(metadata: Mapping[str, Any]) -> bool | None:
    """Temperature 1 and no nucleus cut: recorded logprobs are then the policy's own (None: not recorded)."""
    temperature = metadata.get("temperature")
    if temperature is None:
        return None
    return temperature == 1.0 and metadata.get("top_p") in (None, 1.0)


def _metadata(trajectory: Trajectory, lead: LLMCall) -> dict[str, str | float | None]:
    """Who sampled the responses and how: the trainer uses recorded logprobs only from its own lineage at T=1."""
    return {
        "window_id": trajectory.window_id,
        "scenario_id": trajectory.scenario_id,
        "agent_id": trajectory.agent_id,
        "trajectory_id": trajectory.trajectory_id,
        "model": lead.model,
        "model_version": lead.model_version,
        "temperature": _finite_or_none(lead.temperature),
        "top_p": _finite_or_none(lead.top_p),
    }


def _finite_or_none(value: float | None) -> float | None:
    """A sampling parameter recorded as NaN or infinity (a Python writer's JSON) is unknown, not a number."""
    return value if value is None or math.isfinite(value) else None


def _group(key: tuple[str, str], members: list[tuple[datetime, str, dict[str, Any]]], excluded: int) -> dict[str, Any]:
    window_id, group_id = key
    members.sort(key=lambda member: member[:2])
    return {
        "trajectories": [art for _, _, art in members],
        "exceptions": [],
        "metadata": {"window_id": window_id, "group_id": group_id},
        "metrics": {"trajectories": len(members), "excluded_no_llm_exchange": excluded},
        "logs": [],
    }
