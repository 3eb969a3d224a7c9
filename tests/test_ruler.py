"""RULER judging: prompt, answer parsing, every judge fault against a real loopback endpoint through
the real `openai` client, the cache, the heuristic judge and the reward blend."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import Any

import pytest

from babylon_pipeline.ruler import (
    BABYLON_TRADING,
    GENERAL,
    CachedJudge,
    GroupJudgment,
    HeuristicJudge,
    JudgeGroup,
    JudgeResponseError,
    JudgeTrajectory,
    JudgmentCache,
    OpenAIJudge,
    TrajectoryScore,
    UnknownRubric,
    build_prompt,
    get_rubric,
    group_training_rewards,
    parse_scores,
    response_format,
    shared_prefix_length,
    summarize,
    training_reward,
)
from tests.judge_server import (
    JudgeServer,
    Reply,
    expected_score,
    garbage,
    hang,
    malformed,
    out_of_range,
    status,
    unknown_ids,
    unused_port_url,
    wrong_count,
)

API_KEY = "sk-test-SECRET-4f2a9c"
SYSTEM = {"role": "system", "content": "You are a Babylon trader. SHARED-MARKER"}
SCENARIO = {"role": "user", "content": "Markets: BTC-100K at 0.42, ETH perp 3120. Your balance: 1000."}


def make_group(group_id: str = "g1", n: int = 3, **metrics: list[float]) -> JudgeGroup:
    return JudgeGroup(group_id=group_id, trajectories=[
        JudgeTrajectory(
            trajectory_id=f"{group_id}-t{k}",
            messages=[SYSTEM, SCENARIO, {"role": "assistant", "content": f"BUY_SHARES YES {10 * k} on BTC-100K ({group_id})"}],
            metrics={name: values[k] for name, values in metrics.items()},
        )
        for k in range(n)
    ])


def make_judge(server: JudgeServer | str, **options: object) -> OpenAIJudge:
    base_url = server if isinstance(server, str) else server.base_url
    settings: dict[str, Any] = {"timeout_s": 0.5, "max_retries": 2, **options}
    return OpenAIJudge(base_url, "judge-test", API_KEY, **settings)


def assert_scored_by_server_rule(judgment: GroupJudgment, group: JudgeGroup) -> None:
    assert judgment.status == "scored" and judgment.error is None
    n = len(group.trajectories)
    assert {tid: s.score for tid, s in judgment.scores.items()} == {
        tid: expected_score(k, n) for k, tid in enumerate(group.trajectory_ids, 1)
    }


def assert_failed(judgment: GroupJudgment, *fragments: str) -> None:
    assert judgment.status == "judge_failed" and judgment.scores == {}
    assert judgment.error is not None
    for fragment in fragments:
        assert fragment in judgment.error


class MemoryStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get_bytes(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.objects[key] = data


# --- input types ---------------------------------------------------------------------------------

def test_group_rejects_duplicate_ids_and_emptiness() -> None:
    t = JudgeTrajectory(trajectory_id="a", messages=[])
    with pytest.raises(ValueError, match="duplicate"):
        JudgeGroup(group_id="g", trajectories=[t, t])
    with pytest.raises(ValueError):
        JudgeGroup(group_id="g", trajectories=[])


def test_judgment_is_all_or_nothing() -> None:
    with pytest.raises(ValueError):
        GroupJudgment(group_id="g", status="judge_failed", error="x", judge_model="m", rubric="general",
                      scores={"a": TrajectoryScore(score=0.5, explanation="")})
    with pytest.raises(ValueError):
        GroupJudgment(group_id="g", status="judge_failed", judge_model="m", rubric="general")


# --- prompt ----------------------------------------------------------------------------------------

def test_shared_prefix_compares_whole_messages() -> None:
    a = [SYSTEM, SCENARIO, {"role": "assistant", "content": "x"}]
    b = [SYSTEM, SCENARIO, {"role": "assistant", "content": "y"}]
    assert shared_prefix_length([a, b]) == 2
    assert shared_prefix_length([a, a[:2]]) == 2
    assert shared_prefix_length([a, a]) == 3
    assert shared_prefix_length([a, [{**SYSTEM, "name": "other"}, SCENARIO]]) == 0
    assert shared_prefix_length([a]) == 3


def test_prompt_sends_the_shared_prefix_once_and_numbered_remainders() -> None:
    group = make_group(n=3, window_pnl=[1.0, -2.0, 3.5])
    prompt = build_prompt(group, BABYLON_TRADING)
    system, user = prompt.messages
    assert system["role"] == "system" and BABYLON_TRADING.text in system["content"]
    assert "never answer with the block number" in system["content"]
    assert user["content"].count("SHARED-MARKER") == 1
    assert user["content"].startswith("<context>\n")
    assert prompt.block_ids == ["g1-t0", "g1-t1", "g1-t2"]
    assert '<trajectory_ids>{"1": "g1-t0", "2": "g1-t1", "3": "g1-t2"}</trajectory_ids>' in user["content"]
    blocks = user["content"].split('<trajectory id="')[1:]
    assert [b.split('"')[0] for b in blocks] == ["1", "2", "3"]
    assert "BUY_SHARES YES 10 on" in blocks[1] and "SHARED" not in blocks[1]
    assert '<outcome>{"window_pnl": -2.0}</outcome>' in blocks[1]


def test_prompt_without_a_shared_prefix_has_no_context() -> None:
    group = JudgeGroup(group_id="g", trajectories=[
        JudgeTrajectory(trajectory_id="a", messages=[{"role": "user", "content": "one"}]),
        JudgeTrajectory(trajectory_id="b", messages=[{"role": "user", "content": "two"}]),
    ])
    user = build_prompt(group, GENERAL).messages[1]["content"]
    assert "<context>" not in user and "<outcome>" not in user
    assert '"one"' in user and '"two"' in user


def test_rubrics_by_name() -> None:
    assert get_rubric("general") is GENERAL
    text = get_rubric("babylon_trading").text
    for topic in ("P&L", "Timing", "Risk", "Prediction accuracy", "Post quality"):
        assert topic in text
    with pytest.raises(UnknownRubric, match="babylon_trading, general"):
        get_rubric("vibes")
    with pytest.raises(UnknownRubric):
        HeuristicJudge().judge_groups([make_group(window_pnl=[1, 2, 3])], "vibes")


# --- answer parsing --------------------------------------------------------------------------------

IDS = ["a", "b", "c"]


def answer(*entries: tuple[object, object]) -> str:
    return json.dumps({"scores": [{"trajectory_id": tid, "explanation": "why", "score": s} for tid, s in entries]})


@pytest.mark.parametrize(("content", "kind", "detail"), [
    (None, "not_json", "no text"),
    ("I'd rate them 0.3, 0.5, 0.9", "not_json", "not JSON"),
    ('{"scores": [', "not_json", "not JSON"),
    ("[]", "bad_shape", '"scores" key'),
    ('{"score": []}', "bad_shape", '"scores" key'),
    ('{"scores": {"a": 1}}', "bad_shape", "not a list"),
    ('{"scores": [1, 2, 3]}', "bad_shape", "scores[0] is not an object"),
    ('{"scores": [{"trajectory_id": "a", "score": 0.5}]}', "bad_shape", "lacks explanation"),
    ('{"scores": [{"trajectory_id": 1, "explanation": "", "score": 0.5}]}', "bad_shape", "not a string"),
    (answer(("a", 0.1), ("b", 0.2)), "wrong_count", "expected 3 scores, got 2; missing ['c']"),
    (answer(("1", 0.1), ("2", 0.2), ("3", 0.3)), "unknown_ids", "unknown trajectory_id values ['1', '2', '3']"),
    (answer(("a", 0.1), ("a", 0.2), ("b", 0.3)), "duplicate_ids", "['a']"),
    (answer(("a", "0.5"), ("b", 0.2), ("c", 0.3)), "bad_score", "not a number"),
    (answer(("a", True), ("b", 0.2), ("c", 0.3)), "bad_score", "not a number"),
    (answer(("a", 1.5), ("b", 0.2), ("c", 0.3)), "bad_score", "outside [0, 1]"),
    (answer(("a", -0.1), ("b", 0.2), ("c", 0.3)), "bad_score", "outside [0, 1]"),
    (answer(("a", 0.1), ("b", 0.2), ("c", 0.3)).replace("0.3", "NaN"), "bad_score", "outside [0, 1]"),
])
def test_parser_names_what_is_wrong(content: str | None, kind: str, detail: str) -> None:
    with pytest.raises(JudgeResponseError) as caught:
        parse_scores(content, IDS)
    assert caught.value.kind == kind
    assert detail in str(caught.value)


def test_parser_matches_by_id_not_order_and_accepts_a_fenced_answer() -> None:
    content = "```json\n" + answer(("c", 1), ("a", 0.0), ("b", 0.25)) + "\n```"
    scores = parse_scores(content, IDS)
    assert {tid: s.score for tid, s in scores.items()} == {"a": 0.0, "b": 0.25, "c": 1.0}


def test_response_format_restricts_ids() -> None:
    fmt = response_format(IDS)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    item = fmt["json_schema"]["schema"]["properties"]["scores"]["items"]
    assert item["properties"]["trajectory_id"]["enum"] == IDS
    assert item["required"] == ["trajectory_id", "explanation", "score"]


# --- the OpenAI-compatible judge against a loopback endpoint ---------------------------------------

def test_scores_a_group_in_one_call(judge_server: JudgeServer) -> None:
    group = make_group(n=4)
    [judgment] = make_judge(judge_server, price_per_1k_prompt=0.5, price_per_1k_completion=2.0).judge_groups([group])
    assert_scored_by_server_rule(judgment, group)
    assert (judgment.calls, judgment.judge_model, judgment.rubric, judgment.cached) == (1, "judge-test", "general", False)
    assert judgment.prompt_tokens > 0 and judgment.completion_tokens > 0
    assert judgment.cost_usd == pytest.approx((judgment.prompt_tokens * 0.5 + judgment.completion_tokens * 2.0) / 1000)
    [request] = judge_server.requests
    assert request.authorization == f"Bearer {API_KEY}"
    assert request.body["model"] == "judge-test"
    assert request.body["response_format"]["json_schema"]["schema"]["properties"]["scores"]["items"]["properties"][
        "trajectory_id"]["enum"] == group.trajectory_ids


def test_429_then_success_waits_for_retry_after(judge_server: JudgeServer) -> None:
    judge_server.script(status(429, retry_after_ms=300))
    group = make_group()
    [judgment] = make_judge(judge_server).judge_groups([group])
    assert_scored_by_server_rule(judgment, group)
    assert judge_server.count == 2 and judgment.calls == 1
    first, second = judge_server.requests
    assert second.received_at - first.received_at >= 0.3


def test_500_then_success_is_retried_by_the_client(judge_server: JudgeServer) -> None:
    judge_server.script(status(500))
    group = make_group()
    [judgment] = make_judge(judge_server).judge_groups([group])
    assert_scored_by_server_rule(judgment, group)
    assert judge_server.count == 2


def test_persistent_500_fails_the_group_after_the_clients_retries(judge_server: JudgeServer) -> None:
    judge_server.script(status(500), status(500), status(500))
    [judgment] = make_judge(judge_server, max_retries=2).judge_groups([make_group()])
    assert_failed(judgment, "transport: InternalServerError", "500")
    assert judge_server.count == 3 and judgment.calls == 1


def test_timeout_then_success(judge_server: JudgeServer) -> None:
    judge_server.script(hang())
    group = make_group()
    [judgment] = make_judge(judge_server, max_retries=1).judge_groups([group])
    assert_scored_by_server_rule(judgment, group)
    assert judge_server.count == 2


def test_persistent_timeout_fails_the_group(judge_server: JudgeServer) -> None:
    judge_server.script(hang(), hang())
    started = time.monotonic()
    [judgment] = make_judge(judge_server, max_retries=1).judge_groups([make_group()])
    assert_failed(judgment, "transport: APITimeoutError")
    assert judge_server.count == 2
    assert time.monotonic() - started < 5


def test_server_down_fails_the_group() -> None:
    [judgment] = make_judge(unused_port_url(), max_retries=1).judge_groups([make_group()])
    assert_failed(judgment, "transport: APIConnectionError")
    assert judgment.calls == 1 and judgment.prompt_tokens == 0


@pytest.mark.parametrize(("fault", "kind"), [
    (malformed, "not_json"), (garbage, "not_json"), (wrong_count, "wrong_count"),
    (unknown_ids, "unknown_ids"), (out_of_range, "bad_score"),
])
def test_a_bad_answer_is_retried_once_with_feedback(judge_server: JudgeServer, fault: Callable[[], Reply], kind: str) -> None:
    judge_server.script(fault())
    group = make_group()
    [judgment] = make_judge(judge_server).judge_groups([group])
    assert_scored_by_server_rule(judgment, group)
    assert judge_server.count == 2 and judgment.calls == 2
    first, retry = (r.body["messages"] for r in judge_server.requests)
    assert retry[:2] == first and [m["role"] for m in retry[2:]] == ["assistant", "user"]
    assert f"could not be used: {kind}:" in retry[3]["content"]
    assert json.dumps(group.trajectory_ids) in retry[3]["content"]


@pytest.mark.parametrize(("fault", "kind"), [
    (malformed, "not_json"), (garbage, "not_json"), (wrong_count, "wrong_count"),
    (unknown_ids, "unknown_ids"), (out_of_range, "bad_score"),
])
def test_a_second_bad_answer_fails_the_group(judge_server: JudgeServer, fault: Callable[[], Reply], kind: str) -> None:
    judge_server.script(fault(), fault())
    [judgment] = make_judge(judge_server).judge_groups([make_group()])
    assert_failed(judgment, f"answer: {kind}:", "after 2 answers")
    assert judge_server.count == 2 and judgment.calls == 2


def test_usage_adds_up_over_the_retry(judge_server: JudgeServer) -> None:
    judge_server.script(malformed())
    judge = make_judge(judge_server, price_per_1k_prompt=1.0, price_per_1k_completion=1.0)
    [judgment] = judge.judge_groups([make_group()])
    first, retry = judge_server.requests
    prompt_chars = sum(len(m["content"]) for r in (first, retry) for m in r.body["messages"])
    assert judgment.prompt_tokens == pytest.approx(prompt_chars // 4, abs=1)
    assert judgment.cost_usd == pytest.approx((judgment.prompt_tokens + judgment.completion_tokens) / 1000)


def test_one_failed_group_leaves_the_others_scored(judge_server: JudgeServer) -> None:
    groups = [make_group(f"g{i}") for i in range(3)]
    judge_server.script(status(500), status(500), status(500))  # the first group's call and its 2 retries
    judgments = make_judge(judge_server, concurrency=1).judge_groups(groups)
    assert [j.group_id for j in judgments] == ["g0", "g1", "g2"]
    assert_failed(judgments[0], "InternalServerError")
    for judgment, group in zip(judgments[1:], groups[1:], strict=True):
        assert_scored_by_server_rule(judgment, group)
    totals = summarize(judgments)
    assert (totals.groups, totals.scored, totals.judge_failed, totals.calls) == (3, 2, 1, 3)


def test_concurrency_bound_is_honoured(judge_server: JudgeServer) -> None:
    judge_server.latency_s = 0.1
    started = time.monotonic()
    judgments = make_judge(judge_server, concurrency=4, timeout_s=5).judge_groups([make_group(f"g{i}") for i in range(16)])
    elapsed = time.monotonic() - started
    assert all(j.status == "scored" for j in judgments)
    assert judge_server.max_in_flight == 4
    assert 0.4 <= elapsed < 1.5


def test_the_api_key_never_reaches_a_judgment(judge_server: JudgeServer) -> None:
    judge_server.script(status(500, echo_auth=True), status(500, echo_auth=True), status(500, echo_auth=True))
    judge = make_judge(judge_server, concurrency=1)
    failed, scored = judge.judge_groups([make_group("g0"), make_group("g1")])
    assert_failed(failed, "Bearer [redacted]")
    assert scored.status == "scored"
    for text in (failed.model_dump_json(), scored.model_dump_json(), repr(judge)):
        assert API_KEY not in text


def test_from_env_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="BABYLON_JUDGE_MODEL, BABYLON_JUDGE_API_KEY"):
        OpenAIJudge.from_env({"BABYLON_JUDGE_BASE_URL": "http://127.0.0.1:1/v1"})
    env = {"BABYLON_JUDGE_BASE_URL": "http://h/v1", "BABYLON_JUDGE_MODEL": "qwen", "BABYLON_JUDGE_API_KEY": "k"}
    judge = OpenAIJudge.from_env(env, concurrency=3)
    assert (judge.base_url, judge.model, judge.concurrency) == ("http://h/v1", "qwen", 3)


# --- cache -----------------------------------------------------------------------------------------

def test_second_run_makes_zero_calls(judge_server: JudgeServer) -> None:
    groups = [make_group(f"g{i}") for i in range(5)]
    judge = CachedJudge(make_judge(judge_server), JudgmentCache(MemoryStore()))
    first = judge.judge_groups(groups, BABYLON_TRADING)
    assert judge_server.count == 5 and not any(j.cached for j in first)
    second = judge.judge_groups(groups, BABYLON_TRADING)
    assert judge_server.count == 5
    assert all(j.cached and j.calls == 0 and j.prompt_tokens == 0 for j in second)
    assert [j.scores for j in second] == [j.scores for j in first]
    assert summarize(second).calls == 0


def test_failures_are_not_cached(judge_server: JudgeServer) -> None:
    store = MemoryStore()
    judge = CachedJudge(make_judge(judge_server, concurrency=1), JudgmentCache(store))
    judge_server.script(malformed(), malformed())
    first = judge.judge_groups([make_group("g0"), make_group("g1")])
    assert [j.status for j in first] == ["judge_failed", "scored"] and len(store.objects) == 1
    before = judge_server.count
    second = judge.judge_groups([make_group("g0"), make_group("g1")])
    assert [(j.status, j.cached) for j in second] == [("scored", False), ("scored", True)]
    assert judge_server.count == before + 1


def test_cache_key_follows_model_rubric_and_content_not_group_id() -> None:
    cache = JudgmentCache(MemoryStore())
    group = make_group("g", window_pnl=[1, 2, 3])
    key = cache.key("m", GENERAL, group)
    assert key == cache.key("m", GENERAL, group.model_copy(update={"group_id": "other"}))
    assert len({key, cache.key("m2", GENERAL, group), cache.key("m", BABYLON_TRADING, group),
                cache.key("m", GENERAL, make_group("g", window_pnl=[1, 2, 4]))}) == 4


def test_a_cached_judgment_is_reported_for_the_group_asking() -> None:
    judge = CachedJudge(HeuristicJudge(), JudgmentCache(MemoryStore()))
    group = make_group("g", window_pnl=[1, 2, 3])
    judge.judge_groups([group])
    [again] = judge.judge_groups([group.model_copy(update={"group_id": "same-content"})])
    assert again.cached and again.group_id == "same-content"


def test_an_unreadable_cache_entry_is_judged_again(judge_server: JudgeServer) -> None:
    store = MemoryStore()
    judge = CachedJudge(make_judge(judge_server), JudgmentCache(store))
    group = make_group()
    judge.judge_groups([group])
    [key] = store.objects
    store.objects[key] = b'{"group_id": "g1", "status": "sco'
    [judgment] = judge.judge_groups([group])
    assert judgment.status == "scored" and not judgment.cached and judge_server.count == 2
    assert GroupJudgment.model_validate_json(store.objects[key]).status == "scored"


# --- heuristic judge -------------------------------------------------------------------------------

def test_heuristic_ranks_by_the_metric() -> None:
    judge = HeuristicJudge()
    [judgment] = judge.judge_groups([make_group(window_pnl=[-5.0, 10.0, 2.5])])
    assert "heuristic" in judgment.judge_model and judge.model == judgment.judge_model
    assert {tid: s.score for tid, s in judgment.scores.items()} == {"g1-t0": 0.0, "g1-t1": 1.0, "g1-t2": 0.5}
    assert "window_pnl=10" in judgment.scores["g1-t1"].explanation
    assert (judgment.calls, judgment.cost_usd) == (0, 0.0)


def test_heuristic_equal_outcomes_score_one_half() -> None:
    [judgment] = HeuristicJudge().judge_groups([make_group(window_pnl=[3.0, 3.0, 3.0])])
    assert {s.score for s in judgment.scores.values()} == {0.5}


def test_heuristic_weighted_metrics() -> None:
    judge = HeuristicJudge({"window_pnl": 3.0, "prediction_accuracy": 1.0})
    [judgment] = judge.judge_groups([make_group(window_pnl=[0.0, 10.0, 5.0], prediction_accuracy=[1.0, 0.0, 1.0])])
    assert {tid: s.score for tid, s in judgment.scores.items()} == pytest.approx({"g1-t0": 0.25, "g1-t1": 0.75, "g1-t2": 0.625})
    assert judge.model == "heuristic-outcome-v1:prediction_accuracy=1,window_pnl=3"


def test_heuristic_fails_a_group_with_a_missing_metric() -> None:
    group = make_group(window_pnl=[1.0, math.nan, 2.0])
    [judgment] = HeuristicJudge().judge_groups([group])
    assert_failed(judgment, "g1-t1:window_pnl")
    with pytest.raises(ValueError):
        HeuristicJudge({"window_pnl": 0.0})


# --- reward blend ----------------------------------------------------------------------------------

def scored(scores: dict[str, float]) -> GroupJudgment:
    return GroupJudgment(group_id="g", status="scored", judge_model="m", rubric="general",
                         scores={tid: TrajectoryScore(score=s, explanation="") for tid, s in scores.items()})


def test_blend_formula() -> None:
    judgment, outcomes = scored({"a": 1.0, "b": 0.0, "c": 0.5}), {"a": -10.0, "b": 30.0, "c": 10.0}
    rewards = group_training_rewards(judgment, outcomes, judge_weight=0.25)
    # w * judge + (1 - w) * outcome scaled within the group (-10 -> 0, 30 -> 1, 10 -> 0.5)
    assert rewards == pytest.approx({"a": 0.25, "b": 0.75, "c": 0.5})
    assert training_reward(0.8, 0.2, judge_weight=1.0) == 0.8
    assert training_reward(0.8, 0.2, judge_weight=0.0) == 0.2


def test_blend_without_a_judgment_is_outcome_only() -> None:
    failed = GroupJudgment(group_id="g", status="judge_failed", error="transport: down", judge_model="m", rubric="general")
    assert group_training_rewards(failed, {"a": 1.0, "b": 3.0}) == {"a": 0.0, "b": 1.0}
    assert training_reward(None, 0.3) == 0.3


def test_blend_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        training_reward(0.5, 0.5, judge_weight=1.5)
    with pytest.raises(ValueError, match="ids differ"):
        group_training_rewards(scored({"a": 1.0}), {"b": 1.0})
    with pytest.raises(ValueError, match="non-finite"):
        group_training_rewards(scored({"a": 1.0, "b": 0.0}), {"a": 1.0, "b": math.nan})
