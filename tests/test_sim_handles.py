"""Markets and posts shown by short handles, mapped back to their ids before the game applies an action."""

from __future__ import annotations

import re
from datetime import datetime

import pytest

from babylon_pipeline.sim import simulate
from babylon_pipeline.sim.actions import ParsedAction, parse_response, resolve_references
from babylon_pipeline.sim.observation import MarketView, Observation, PostView
from babylon_pipeline.sim.prompts import observation_prompt
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.outcomes import read_outcomes_since
from babylon_pipeline.store.reader import read_window

START = datetime(2025, 11, 15, 10, 0)
WINDOW = "2025-11-15T10:00"
SNOWFLAKE = re.compile(r"\d{15,}")

OBSERVATION = Observation(
    agent_id="a", handle="a", window_id=WINDOW, scenario_id="s", tick=0, ticks=5, balance=100.0, pnl=0.0,
    holdings=(), perp_positions=(), perps=(),
    markets=(MarketView("734919282735104000", "M1", "Will it rain?", 0.4, 10.0),
             MarketView("734919282735104001", "M2", "Will it snow?", 0.6, 10.0)),
    posts=(PostView("734919282735109999", "P12", "ana_quant", "Rain, surely."),),
)


@pytest.mark.parametrize(("named", "resolved"), [
    ("M2", "734919282735104001"), ("m2", "734919282735104001"), ("[M2]", "734919282735104001"),
    (" M1 ", "734919282735104000"),
    ("734919282735104001", "734919282735104001"),  # the id itself still works
    ("M3", "M3"), ("M", "M"), ("M21", "M21"),  # names nothing shown: left for the game to reject
])
def test_a_market_handle_resolves_to_the_id_it_was_shown_for(named, resolved) -> None:
    action = ParsedAction("BUY_SHARES", {"marketId": named, "side": "YES", "amount": 5.0})
    assert resolve_references(action, OBSERVATION).parameters["marketId"] == resolved


def test_a_post_handle_resolves_and_other_parameters_are_kept() -> None:
    action = ParsedAction("CREATE_COMMENT", {"postId": "p12", "content": "Source?"}, reasoning="why not")
    resolved = resolve_references(action, OBSERVATION)
    assert resolved == ParsedAction("CREATE_COMMENT", {"postId": "734919282735109999", "content": "Source?"}, "why not")
    hold = parse_response('{"action": "HOLD"}')
    assert resolve_references(hold, OBSERVATION) is hold


def test_the_prompt_shows_handles_not_ids_and_ends_with_the_markets() -> None:
    prompt = observation_prompt(OBSERVATION)
    assert not SNOWFLAKE.search(prompt)
    assert "- [P12] @ana_quant: Rain, surely." in prompt
    lines = prompt.splitlines()
    assert lines[-4:] == ["Prediction markets:", "- [M1] Will it rain? YES 0.400, volume $10.00",
                          "- [M2] Will it snow? YES 0.600, volume $10.00", "What is your next action?"]


def test_agents_answer_with_handles_and_the_game_records_the_real_ids(tmp_path) -> None:
    """Scripted agents read the prompt's handles as a model would; what is recorded joins the market outcomes."""
    engine = make_engine(f"sqlite:///{tmp_path / 'sim.db'}")
    upgrade(engine)
    simulate(engine, hours=1, agents=10, seed=5, start=START)
    outcomes = {o["predictionMarketId"] for o in read_outcomes_since(engine, WINDOW) if o["predictionMarketId"]}
    bought = commented = 0
    for trajectory in read_window(engine, WINDOW):
        for step in trajectory.steps:
            call, action = step.llm_calls[0], step.action
            assert not SNOWFLAKE.search(call.user_prompt)
            if action.action_type == "BUY_SHARES" and action.success:
                bought += 1
                assert action.parameters["marketId"] in outcomes
                assert re.search(r'"marketId": "M\d"', call.response)
            if action.action_type == "CREATE_COMMENT" and action.success:
                commented += 1
                assert SNOWFLAKE.fullmatch(action.parameters["postId"])
                assert re.search(r'"postId": "P\d+"', call.response)
    assert bought >= 5 and commented >= 1
    engine.dispose()
