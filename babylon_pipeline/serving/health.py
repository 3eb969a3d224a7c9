"""The health check's question and how its answer is judged, shared by every inference backend.

An adapter is healthy when, asked one fixed game tick in the simulator's own prompts, it answers
with something the simulator's parser reads as a game action. That is the least a version must do
before any agent is routed to it: weights that load but answer garbage would turn every routed
agent's tick into a failed action.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from babylon_pipeline.sim.actions import ParsedAction, parse_response
from babylon_pipeline.sim.determinism import stream
from babylon_pipeline.sim.markets import new_perp_markets, new_prediction_markets
from babylon_pipeline.sim.observation import MarketView, Observation, PerpView
from babylon_pipeline.sim.personas import make_agents
from babylon_pipeline.sim.prompts import observation_prompt, system_prompt

SEED = 0
MARKETS_PER_SCENARIO, PERPS_PER_SCENARIO = 3, 2  # as `sim.world` deals them
ANSWER_CHARS = 200
"""What of a bad answer an error quotes."""


@dataclass(frozen=True)
class HealthCheck:
    """A passed health check: the adapter that answered and the action it chose."""

    version: str
    model: str
    action_type: str
    latency_ms: float
    completion_tokens: int | None
    answers: int = 1  # asked
    actions: int = 1  # of those, answers holding a game action


def health_observation() -> Observation:
    """A window's first tick as the simulator would show it (its own market and ticker generators, a fixed
    seed): what every version was trained and evaluated on, so a healthy adapter is not judged out of its
    depth."""
    moment = datetime(2025, 1, 1)
    markets = new_prediction_markets(stream(SEED, "markets"), stream(SEED, "ids"), moment, MARKETS_PER_SCENARIO)
    perps = new_perp_markets(stream(SEED, "perps"), PERPS_PER_SCENARIO, set())
    return Observation(
        agent_id="health-check", handle="health_check", window_id="2025-01-01T00:00", scenario_id="health-check",
        tick=0, ticks=5, balance=10_000.0, pnl=0.0, holdings=(), perp_positions=(),
        markets=tuple(MarketView(m.market_id, f"M{k}", m.question, m.price, 0.0) for k, m in enumerate(markets, start=1)),
        perps=tuple(PerpView(p.ticker, p.name, p.price, 0.0) for p in perps), posts=(),
    )


def health_prompts() -> tuple[str, str, Observation]:
    """The system prompt, the user prompt and the observation of the health check's tick."""
    observation = health_observation()
    agent = make_agents(0, 1)[0]
    return system_prompt(agent), observation_prompt(observation), observation


def read_action(text: str) -> ParsedAction | str:
    """The action in a health-check answer, or why there is none (with the start of the answer)."""
    parsed = parse_response(text)
    if isinstance(parsed, ParsedAction):
        return parsed
    return f"{parsed.reason}; it answered {text[:ANSWER_CHARS]!r}"
