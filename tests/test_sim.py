"""Babylon-lite: reproducible by seed, varied within a scenario, skill shows in earnings, recorded through the SDK."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from statistics import fmean, pstdev

import pytest
import sqlalchemy as sa

from babylon_pipeline.sim import AlreadySimulated, simulate
from babylon_pipeline.sim.actions import INVALID_RESPONSE, ParsedAction, ParseFailure, parse_response
from babylon_pipeline.sim.openai_policy import OpenAIChatPolicy
from babylon_pipeline.sim.policy import PolicyError, PolicyRequest, PolicyResponse
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.reader import read_window

START = datetime(2025, 11, 15, 10, 0)


def _dump(engine: sa.Engine) -> dict[str, list]:
    with engine.connect() as conn:
        return {t.name: sorted(map(tuple, conn.execute(sa.select(t)).all()), key=repr) for t in tables.BABYLON_TABLES}


def _fresh(path) -> sa.Engine:
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    return engine


def test_the_same_seed_writes_the_same_rows_and_another_seed_does_not(tmp_path) -> None:
    dumps = []
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        engine = _fresh(tmp_path / f"{name}.db")
        simulate(engine, hours=2, agents=10, seed=seed, start=START)
        dumps.append(_dump(engine))
        engine.dispose()
    assert dumps[0] == dumps[1]
    assert dumps[0]["trajectories"] != dumps[2]["trajectories"]
    assert len(dumps[0]["trajectories"]) == 20 and len(dumps[0]["llm_call_logs"]) == 100
    assert len(dumps[0]["market_outcomes"]) == 2 * 2 * 5  # 2 windows x 2 scenarios x (3 markets + 2 tickers)
    created = {row[1]: row[-1] for row in dumps[0]["market_outcomes"]}  # windowId -> createdAt: the simulated close
    assert created == {"2025-11-15T10:00": datetime(2025, 11, 15, 11, 0), "2025-11-15T11:00": datetime(2025, 11, 15, 12, 0)}


def test_simulated_windows_read_back_with_varied_rewards(db) -> None:
    summary = simulate(db, hours=2, agents=12, seed=3, start=START)
    assert summary.windows == ["2025-11-15T10:00", "2025-11-15T11:00"] and summary.trajectories == 24
    trajectories = list(read_window(db, "2025-11-15T10:00"))
    assert len(trajectories) == 12 and all(t.steps_with_llm_calls == 5 for t in trajectories)
    by_scenario = defaultdict(list)
    for t in trajectories:
        by_scenario[t.scenario_id].append(t.total_reward)
        assert t.metadata["gameKnowledge"]["actualOutcomes"]
        assert t.steps[0].llm_calls[0].system_prompt.startswith("You are ")
    assert len(by_scenario) == 3
    assert all(pstdev(rewards) > 0 for rewards in by_scenario.values())
    with pytest.raises(AlreadySimulated, match="seed 3"):
        simulate(db, hours=1, agents=12, seed=3, start=START)


def test_informed_agents_out_earn_random_ones(tmp_path) -> None:
    engine = _fresh(tmp_path / "skill.db")
    simulate(engine, hours=12, agents=40, seed=11, start=START)
    earned = defaultdict(list)
    for hour in range(12):
        for t in read_window(engine, f"2025-11-15T{10 + hour:02d}:00"):
            earned[t.metadata["policy"]].append(t.final_pnl)
    assert set(earned) == {"informed", "noisy", "contrarian", "random"}
    last = {kind: fmean(pnls[-len(pnls) // 12:]) for kind, pnls in earned.items()}  # lifetime P&L in the last hour
    assert last["informed"] > last["noisy"] and last["informed"] > last["random"], last


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('Buying.\n```json\n{"action": "BUY_SHARES", "parameters": {"marketId": "m1", "side": "yes", "amount": "$25"}}\n```',
         ("BUY_SHARES", {"marketId": "m1", "side": "YES", "amount": 25.0})),
        ('I think so {"action": "open_perp", "ticker": "$abc", "side": "Long", "size": "100"} done',
         ("OPEN_PERP", {"ticker": "ABC", "side": "long", "size": 100.0})),
        ('{"action": "hold"}', ("HOLD", {})),
    ],
)
def test_the_parser_is_lenient(text, expected) -> None:
    parsed = parse_response(text)
    assert isinstance(parsed, ParsedAction) and (parsed.action_type, parsed.parameters) == expected


@pytest.mark.parametrize("text", ["", "no json here", '{"action": "BUY_SHARES", "parameters": {"marketId": "m1"', '{"action": "FLY"}'])
def test_unreadable_answers_become_failures_with_a_reason(text) -> None:
    parsed = parse_response(text)
    assert isinstance(parsed, ParseFailure) and parsed.reason
    assert parsed.action_type in (INVALID_RESPONSE, "BUY_SHARES")


class _ChatHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append((self.headers.get("Authorization"), body))
        if self.server.fail:
            self.send_response(500)
            self.end_headers()
            return
        answer = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": 'Holding. {"action": "HOLD", "parameters": {}}'}}],
                  "usage": {"prompt_tokens": 50, "completion_tokens": 9, "total_tokens": 59}}
        data = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def chat_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatHandler)
    server.seen, server.fail = [], False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def test_openai_chat_policy_drives_agents_through_a_real_endpoint(tmp_path, chat_server) -> None:
    env = {"BABYLON_SIM_BASE_URL": f"http://127.0.0.1:{chat_server.server_port}/v1", "BABYLON_SIM_MODEL": "agent-model",
           "BABYLON_SIM_API_KEY": "sk-sim-secret"}
    policy = OpenAIChatPolicy.from_env(env, max_retries=0, timeout_s=5)
    engine = _fresh(tmp_path / "chat.db")
    summary = simulate(engine, hours=1, agents=3, seed=1, start=START, steps_per_window=2, policy_for=lambda agent: policy)
    assert summary.llm_calls == 6 and len(chat_server.seen) == 6
    auth, body = chat_server.seen[0]
    assert auth == "Bearer sk-sim-secret" and body["messages"][0]["role"] == "system"
    [trajectory, *_] = list(read_window(engine, "2025-11-15T10:00"))
    call = trajectory.steps[0].llm_calls[0]
    assert (call.model, call.prompt_tokens, trajectory.steps[0].action.action_type) == ("agent-model", 50, "HOLD")
    assert "sk-sim-secret" not in repr(policy)

    chat_server.fail = True
    with pytest.raises(PolicyError) as failure:
        policy.act("s", "u", None)  # type: ignore[arg-type]
    assert "sk-sim-secret" not in str(failure.value)
    with pytest.raises(ValueError, match="BABYLON_SIM_API_KEY"):
        OpenAIChatPolicy.from_env({"BABYLON_SIM_BASE_URL": "http://x", "BABYLON_SIM_MODEL": "m"})


def test_a_later_simulation_with_the_same_seed_writes_new_ids(db) -> None:
    simulate(db, hours=1, agents=5, seed=4, start=START)
    simulate(db, hours=1, agents=5, seed=4, start=datetime(2025, 11, 15, 11, 0))
    with db.connect() as conn:
        ids = conn.scalars(sa.select(tables.trajectories.c.trajectoryId)).all()
    assert len(ids) == len(set(ids)) == 10


class _CountingBatchPolicy:
    """Buys YES on the first market for every request (prices move with each answer applied) and keeps the
    agents of each batch it was handed."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def act(self, system_prompt, user_prompt, observation):
        return self.act_batch([PolicyRequest(system_prompt, user_prompt, observation)])[0]

    def act_batch(self, requests):
        self.batches.append([r.observation.agent_id for r in requests])
        buy = '{"action": "BUY_SHARES", "parameters": {"marketId": "M1", "side": "YES", "amount": 300}}'
        return [PolicyResponse(buy, "counting", 1.0, 8) for _ in requests]


def test_a_tick_of_every_scenario_is_answered_in_one_batch_from_one_public_state(tmp_path) -> None:
    policy = _CountingBatchPolicy()
    engine = _fresh(tmp_path / "batch.db")
    simulate(engine, hours=1, agents=12, seed=2, start=START, steps_per_window=4, policy_for=lambda agent: policy)
    assert [len(batch) for batch in policy.batches] == [12, 12, 12, 12]  # three scenarios, four ticks
    prompts = defaultdict(set)  # agents of one scenario saw the same markets at the same tick
    for t in read_window(engine, "2025-11-15T10:00"):
        for tick, step in enumerate(t.steps):
            prompts[t.scenario_id, tick].add(step.llm_calls[0].user_prompt.split("Prediction markets:")[1])
    assert len(prompts) == 12 and all(len(shown) == 1 for shown in prompts.values())
    assert all(step.action.success for t in read_window(engine, "2025-11-15T10:00") for step in t.steps)
    engine.dispose()


def test_rollouts_play_each_scenario_k_times_from_one_start_under_one_scenario_id(tmp_path) -> None:
    engine = _fresh(tmp_path / "rollouts.db")
    summary = simulate(engine, hours=2, agents=3, seed=6, start=START, scenario_size=1, rollouts=4)
    assert summary.trajectories == 2 * 3 * 4 and summary.market_outcomes == 2 * 3 * 5  # outcomes of the first plays
    window = list(read_window(engine, "2025-11-15T10:00"))
    groups = defaultdict(list)
    for t in window:
        groups[t.scenario_id].append(t)
    assert len(groups) == 3 and all(len(plays) == 4 for plays in groups.values())
    for plays in groups.values():
        assert len({t.agent_id for t in plays}) == 1 and sorted(t.metadata["rollout"] for t in plays) == [0, 1, 2, 3]
        assert len({t.steps[0].llm_calls[0].user_prompt for t in plays}) == 1  # the same first situation
        assert len({t.steps[0].llm_calls[0].response for t in plays}) > 1  # answered differently
        assert len({t.final_pnl for t in plays}) > 1
    # the first play carries on: the next window starts from its cash
    first = {t.agent_id: t.final_balance for t in window if t.metadata["rollout"] == 0}
    later = {(t.agent_id, t.steps[0].environment_state.agent_balance) for t in read_window(engine, "2025-11-15T11:00")}
    assert later == set(first.items())
    engine.dispose()
