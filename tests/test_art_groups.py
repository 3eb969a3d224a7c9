"""ART export: `groups.jsonl` loads with the real `openpipe-art` and dumps back to the same JSON.

`import art` takes about 5-7 s (it pulls in litellm, transformers patches, weave); it is done once
per module. LiteLLM would otherwise try to download its model cost map at import, so it is told
to use its bundled copy. ART also replaces `transformers.masking_utils._preprocess_mask_arguments`
at import with a wrapper whose signature transformers 5.23 no longer has; the stock function is put
back at once, or every model forward later in the same test process fails.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest
from openai.types.chat.chat_completion import Choice
from transformers import masking_utils

from babylon_pipeline.art import export_groups, from_jsonl, judge_view, to_jsonl
from babylon_pipeline.store.records import Trajectory

_stock_mask_arguments = masking_utils._preprocess_mask_arguments
import art  # noqa: E402  (after saving the function it replaces: see the docstring)

masking_utils._preprocess_mask_arguments = _stock_mask_arguments

W = "2025-11-15T10:00"


def _call(n: int, *, purpose: str = "action", logprobs: list[dict] | None = None, logger: bool = False) -> dict:
    call: dict[str, Any] = {
        "model": "qwen-2.5-7b",
        "systemPrompt": "You are Ava, a trader." if purpose == "action" else "Think first.",
        "userPrompt": f"tick {n}: markets... ({purpose})",
        "response": f'I think YES. {{"action": "BUY_SHARES", "n": {n}}} ({purpose})',
        "temperature": 0.7,
        "maxTokens": 512,
        "purpose": purpose,
    }
    if logger:  # the logger plugin's shape: the prompt also as full chat, ids, token counts
        call |= {
            "callId": f"call-{n}-{purpose}",
            "timestamp": 1_763_200_800_000 + n,
            "messages": [{"role": "system", "content": call["systemPrompt"]}, {"role": "user", "content": call["userPrompt"]}],
            "topP": 0.9,
            "promptTokens": 120,
            "completionTokens": 30,
        }
    if logprobs is not None:
        call["logprobs"] = logprobs
    return call


def _step(n: int, *, calls: list[dict], pnl: float, action: dict | None = None) -> dict:
    return {
        "stepNumber": n,
        "timestamp": 1_763_200_800_000 + 1000 * n,
        "environmentState": {"agentBalance": 1000 + pnl, "agentPnL": pnl},
        "llmCalls": calls,
        "action": action
        or {"actionType": "BUY_SHARES", "parameters": {"marketId": "m1", "side": "YES", "amount": "10"}, "success": True},
        "reward": 0.1,
    }


def _trajectory(tid: str, *, scenario: str | None, minute: int, steps: list[dict], agent: str = "ava") -> Trajectory:
    return Trajectory.model_validate(
        {
            "id": f"row-{tid}",
            "trajectoryId": tid,
            "agentId": agent,
            "windowId": W,
            "scenarioId": scenario,
            "startTime": f"2025-11-15T10:{minute:02d}:00",
            "endTime": f"2025-11-15T10:{minute:02d}:30",
            "durationMs": 30_000,
            "steps": steps,
            "totalReward": 0.3,
            "finalStatus": "completed",
        }
    )


WITH_IDS = [{"token": "I", "logprob": -0.25, "tokenId": 40}, {"token": " think", "logprob": -1.5, "tokenId": 1781}]
TEXT_ONLY = [{"token": "I", "logprob": -0.25}, {"token": " thïnk", "logprob": -0.75, "tokenId": 9}]


def _window() -> list[Trajectory]:
    """Two scenarios and the window's own group; every shape the export must handle."""
    recorder = _trajectory(
        "t-rec",
        scenario="s1",
        minute=5,
        steps=[
            _step(0, calls=[_call(0, purpose="reasoning"), _call(0, logprobs=WITH_IDS)], pnl=0.0),
            _step(1, calls=[], pnl=4.0),  # no recorded exchange
            _step(2, calls=[_call(2)], pnl=7.5,
                  action={"actionType": "OPEN_PERP", "parameters": {"ticker": "BTC"}, "success": False, "error": "no margin"}),
        ],
    )
    logger = _trajectory(
        "t-log", scenario="s1", minute=1, agent="bo",
        steps=[_step(0, calls=[_call(0, logger=True, logprobs=TEXT_ONLY)], pnl=2.0),
               _step(1, calls=[_call(1, logger=True)], pnl=1.0, action={"actionType": "CREATE_POST", "parameters": {"postId": "p"}})],
    )
    silent = _trajectory("t-silent", scenario="s1", minute=0, steps=[_step(0, calls=[], pnl=0.0)])
    other = _trajectory("t-other", scenario="s0", minute=9, steps=[_step(0, calls=[_call(0)], pnl=-3.0)])
    windowed = _trajectory("t-win", scenario=None, minute=2, steps=[_step(0, calls=[_call(0)], pnl=0.0)])
    alone = _trajectory("t-alone", scenario="s9", minute=3, steps=[_step(0, calls=[], pnl=0.0)])
    return [recorder, logger, silent, other, windowed, alone]


def _load(line: dict[str, Any]) -> art.TrajectoryGroup:
    """ART's own loading: plain messages stay dicts, assistant turns are rebuilt as Choice objects."""
    trajectories = []
    for data in line["trajectories"]:
        turns = [Choice.model_validate(turn) if "finish_reason" in turn else turn for turn in data["messages_and_choices"]]
        trajectories.append(art.Trajectory.model_validate({**data, "messages_and_choices": turns}))
    return art.TrajectoryGroup(trajectories, metadata=line["metadata"], metrics=line["metrics"], logs=line["logs"])


@pytest.fixture(scope="module")
def exported():
    return export_groups(iter(_window()), rewards={"t-rec": 0.8, "t-log": -0.2, "t-other": 1})


@pytest.fixture(scope="module")
def lines(exported) -> list[dict[str, Any]]:
    return from_jsonl(to_jsonl(exported.groups))


def test_every_trajectory_round_trips_through_art(lines) -> None:
    assert len(lines) == 3
    for line in lines:
        group = _load(line)
        assert group.model_dump(mode="json") == line
        assert json.loads(group.model_dump_json()) == line
        for trajectory, data in zip(group.trajectories, line["trajectories"], strict=True):
            choices = [turn for turn in trajectory.messages_and_choices if isinstance(turn, Choice)]
            assert len(choices) == sum("finish_reason" in turn for turn in data["messages_and_choices"]) > 0
            assert trajectory.messages()[0]["role"] == "system"


def test_groups_are_keyed_by_scenario_or_window_and_ordered(lines) -> None:
    assert [line["metadata"] for line in lines] == [
        {"window_id": W, "group_id": W},  # no scenario: the window is the group
        {"window_id": W, "group_id": "s0"},
        {"window_id": W, "group_id": "s1"},
    ]
    s1 = lines[2]
    assert [t["metadata"]["trajectory_id"] for t in s1["trajectories"]] == ["t-log", "t-rec"]  # by start time
    assert s1["metrics"] == {"trajectories": 2, "excluded_no_llm_exchange": 1}


def test_chat_follows_the_recorded_calls(lines) -> None:
    rec = lines[2]["trajectories"][1]
    turns = rec["messages_and_choices"]
    assert turns[0] == {"role": "system", "content": "You are Ava, a trader."}  # the action call's, not the first call's
    assert [t.get("role") or "choice" for t in turns] == ["system", "user", "choice", "user", "choice", "user", "choice"]
    assert turns[1]["content"] == "tick 0: markets... (reasoning)" and turns[3]["content"] == "tick 0: markets... (action)"
    assert turns[6]["message"] == {
        "content": 'I think YES. {"action": "BUY_SHARES", "n": 2} (action)',
        "refusal": None, "role": "assistant", "annotations": None, "audio": None, "function_call": None, "tool_calls": None,
    }


def test_a_non_finite_recorded_logprob_exports_none_of_the_calls_logprobs() -> None:
    broken = [{"token": "I", "logprob": -0.25}, {"token": " x", "logprob": -math.inf}]
    trajectory = Trajectory.model_validate(_window()[0].model_dump(by_alias=True) | {
        "steps": [_step(0, calls=[_call(0, logprobs=broken)], pnl=0.0)]})
    [group] = from_jsonl(to_jsonl(export_groups([trajectory]).groups))
    [choice] = [turn for turn in group["trajectories"][0]["messages_and_choices"] if "message" in turn]
    assert choice["logprobs"] is None


def test_logprobs_are_preserved(lines) -> None:
    rec_choices = [t for t in lines[2]["trajectories"][1]["messages_and_choices"] if "finish_reason" in t]
    assert [c["logprobs"] for c in rec_choices][::2] == [None, None]  # reasoning call and step 2: none recorded
    with_ids = Choice.model_validate(rec_choices[1]).logprobs.content
    assert [(t.token, t.logprob, bytes(t.bytes).decode()) for t in with_ids] == [("token_id:40", -0.25, "I"), ("token_id:1781", -1.5, " think")]
    log_choice = Choice.model_validate(lines[2]["trajectories"][0]["messages_and_choices"][2])
    # one token lacks its id: texts are kept, so ART maps all of them through the tokenizer alike
    assert [(t.token, t.logprob, bytes(t.bytes).decode()) for t in log_choice.logprobs.content] == [("I", -0.25, "I"), (" thïnk", -0.75, " thïnk")]


def test_metrics_numeric_metadata_scalar_reward_passed(lines) -> None:
    by_id = {t["metadata"]["trajectory_id"]: t for line in lines for t in line["trajectories"]}
    for t in by_id.values():
        assert all(isinstance(v, int | float) and math.isfinite(v) for v in t["metrics"].values())
        assert all(v is None or isinstance(v, str | int | float | bool) for v in t["metadata"].values())
    rec = by_id["t-rec"]
    assert rec["metrics"] == {"window_pnl": 7.5, "total_reward": 0.3, "steps": 3, "steps_with_llm_calls": 2, "llm_calls": 3,
                              "failed_actions": 1, "trades": 2, "posts": 0}
    assert rec["metadata"] == {"window_id": W, "scenario_id": "s1", "agent_id": "ava", "trajectory_id": "t-rec",
                               "model": "qwen-2.5-7b", "model_version": None, "temperature": 0.7, "top_p": None}
    assert by_id["t-log"]["metrics"]["posts"] == 1
    assert (rec["reward"], by_id["t-log"]["reward"], by_id["t-other"]["reward"], by_id["t-win"]["reward"]) == (0.8, -0.2, 1.0, 0.0)


def test_counts(exported) -> None:
    assert exported.counts.as_metadata() == {
        "trajectories_exported": 4,
        "excluded_no_llm_exchange": 2,  # t-silent, and t-alone whose scenario then has no group
        "steps_without_llm_exchange": 1,
        "groups": 3,
        "rewards_defaulted": 1,
        "assistant_turns": 7,
        "assistant_turns_with_logprobs": 2,
    }


def test_jsonl_is_deterministic_whatever_the_input_order() -> None:
    window = _window()
    assert to_jsonl(export_groups(window).groups) == to_jsonl(export_groups(reversed(window)).groups)


def test_extra_metrics_must_be_numbers() -> None:
    window = _window()[3:4]
    groups = export_groups(window, extra_metrics={"t-other": {"outcome_reward": 0.25, "resolved": True}}).groups
    assert groups[0]["trajectories"][0]["metrics"]["outcome_reward"] == 0.25
    with pytest.raises(ValueError, match="finite number"):
        export_groups(window, extra_metrics={"t-other": {"note": "good"}})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="replace"):
        export_groups(window, extra_metrics={"t-other": {"window_pnl": 1.0}})
    with pytest.raises(ValueError, match="finite"):
        export_groups(window, rewards={"t-other": math.nan})


@pytest.mark.parametrize("where", ["reward", "metric", "metadata", "group metric"])
def test_groups_jsonl_refuses_numbers_json_cannot_hold(where) -> None:
    [group, *_] = export_groups(_window()).groups
    trajectory = group["trajectories"][0]
    if where == "reward":
        trajectory["reward"] = math.inf
    elif where == "metric":
        trajectory["metrics"]["window_pnl"] = math.nan
    elif where == "metadata":
        trajectory["metadata"]["temperature"] = math.nan
    else:
        group["metrics"]["trajectories"] = math.nan
    with pytest.raises(ValueError, match="JSON cannot"):
        to_jsonl([group])


def test_judge_view_flattens_choices(lines) -> None:
    group_id, views = judge_view(lines[2])
    assert group_id == "s1" and [v.trajectory_id for v in views] == ["t-log", "t-rec"]
    log = views[0]
    assert log.messages == [
        {"role": "system", "content": "You are Ava, a trader."},
        {"role": "user", "content": "tick 0: markets... (action)"},
        {"role": "assistant", "content": 'I think YES. {"action": "BUY_SHARES", "n": 0} (action)'},
        {"role": "user", "content": "tick 1: markets... (action)"},
        {"role": "assistant", "content": 'I think YES. {"action": "BUY_SHARES", "n": 1} (action)'},
    ]
    assert log.metrics["window_pnl"] == -1.0 and all(isinstance(v, float) for v in log.metrics.values())
    art_messages = [[dict(m) for m in t.messages()] for t in _load(lines[2]).trajectories]
    assert [v.messages for v in views] == art_messages  # the same flattening as ART's own `messages()`


def test_logger_call_without_prompt_fields_uses_its_messages() -> None:
    call = _call(0, logger=True) | {"systemPrompt": "", "userPrompt": ""}
    call["messages"] = [{"role": "system", "content": "You are Bo."}, {"role": "user", "content": "old"},
                        {"role": "assistant", "content": "ok"}, {"role": "user", "content": "observe 0"}]
    trajectory = _trajectory("t-bo", scenario="s1", minute=0, steps=[_step(0, calls=[call], pnl=0.0)])
    turns = export_groups([trajectory]).groups[0]["trajectories"][0]["messages_and_choices"]
    assert turns[:2] == [{"role": "system", "content": "You are Bo."}, {"role": "user", "content": "observe 0"}]
