"""The simulation loop: windows of scenarios of ticks, every agent step recorded through the SDK.

Each window splits the agents into scenarios of a few agents that share one market set, feed and
seed (a natural GRPO comparison group). Each tick, NPC sources post (truthfully with their hidden
reliability), outside traders pull prices towards the truth, perps move; then every agent of the
scenario sees the same public state, all agents of the window are asked together (a model answers
the whole tick in one batch), and the parsed actions are applied, in agent order, and recorded. At the hour's end markets resolve, positions settle into cash (lifetime P&L carries to
the next window), trajectories are written, and the window's `market_outcomes` rows as the app
writes them. Everything random comes from the seed: the same seed writes the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from copy import deepcopy
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from babylon_pipeline.sim.accounts import Account
from babylon_pipeline.sim.actions import ParseFailure, apply_action, parse_response, resolve_references
from babylon_pipeline.sim.determinism import SeededIds, SimClock, stream
from babylon_pipeline.sim.feed import Feed, Post, Source, npc_posts, npc_roster
from babylon_pipeline.sim.markets import PerpMarket, PredictionMarket, new_perp_markets, new_prediction_markets
from babylon_pipeline.sim.observation import HoldingView, MarketView, Observation, PerpPositionView, PerpView, PostView
from babylon_pipeline.sim.personas import AgentProfile, agent_id_prefix, make_agents
from babylon_pipeline.sim.policy import Policy, PolicyError, PolicyRequest, PolicyResponse, act_all
from babylon_pipeline.sim.prompts import observation_prompt, system_prompt
from babylon_pipeline.sim.scripted import ScriptedPolicy
from babylon_pipeline.sim.seeds import refuse_reserved_seed
from babylon_pipeline.store import tables
from babylon_pipeline.store.outcomes import record_market_outcomes, window_market_keys
from babylon_pipeline.store.recorder import TrajectoryRecorder
from babylon_pipeline.store.users import AgentUser, agent_link, missing_agents, named
from babylon_pipeline.windows import WINDOW, window_of, window_start, windows_between

SCENARIO_SIZE = 5
MARKETS_PER_SCENARIO = 3
PERPS_PER_SCENARIO = 2
FEED_SHOWN = 8
REWARD_DOLLARS = 100.0  # a step's reward is its change in equity in units of this many dollars
FAILED_ACTION_PENALTY = 0.1
INSIGHT_NOISE = {"informed": 0.05, "noisy": 0.25}  # std of a scripted agent's private estimate; others get none


class AlreadySimulated(ValueError):
    """Some of the windows already hold this seed's agents: simulating them again would duplicate ids."""


class AgentsAreNotUsers(ValueError):
    """The app's database requires every agent to be a `User` row, some are not, and creating them was declined."""


@dataclass
class SimulationSummary:
    windows: list[str] = field(default_factory=list)
    trajectories: int = 0
    steps: int = 0
    llm_calls: int = 0
    failed_actions: int = 0
    market_outcomes: int = 0
    seconds: float = 0.0

    def describe(self) -> str:
        span = f"{self.windows[0]} .. {self.windows[-1]}" if self.windows else "no windows"
        return (f"simulated {_count(len(self.windows), 'window')} ({span}): {_count(self.trajectories, 'trajectory')}, "
                f"{_count(self.steps, 'step')}, {_count(self.llm_calls, 'LLM call')}, "
                f"{_count(self.failed_actions, 'failed action')}, {_count(self.market_outcomes, 'market outcome')} "
                f"in {self.seconds:.1f} s")


def _count(n: int, noun: str) -> str:
    """`1 window`, `2 windows`; `trajectory` becomes `trajectories`."""
    if n == 1:
        return f"1 {noun}"
    return f"{n} {noun[:-1] + 'ies' if noun.endswith('y') else noun + 's'}"


@dataclass
class _Scenario:
    scenario_id: str
    agents: list[AgentProfile]
    markets: dict[str, PredictionMarket]
    perps: dict[str, PerpMarket]
    feed: Feed


def simulate(
    engine: sa.Engine,
    *,
    hours: int,
    agents: int,
    seed: int,
    start: datetime,
    steps_per_window: int = 5,
    policy_mix: Mapping[str, float] | None = None,
    policy_for: Callable[[AgentProfile], Policy] | None = None,
    create_users: bool = True,
    evaluation: bool = False,
    scenario_size: int = SCENARIO_SIZE,
    rollouts: int = 1,
) -> SimulationSummary:
    """Simulate `hours` windows from the one containing `start`; `policy_for` overrides the scripted policies.

    With `rollouts` K > 1 every scenario is played K times from the same start (the same markets, feed and
    cash; only the policies' answers differ), each play recorded as its own trajectories under the one
    scenario id: GRPO's comparison group, answers to the same situations (with `scenario_size=1`, one
    agent's K plays). The first play is the one that counts: its accounts carry to the next window and its
    markets' outcomes are recorded.

    In the app's database (which has a `User` table) the agents become `User` rows, each in the transaction of
    its first trajectory; with `create_users=False` a missing one is refused before anything is written. Other
    seeds may already have written these windows: scenario ids carry the seed, and markets and tickers avoid
    the ones the windows' outcomes already name. Seeds reserved for the benchmark (`sim.seeds`) are
    refused unless `evaluation` says the benchmark itself is playing."""
    if not evaluation:
        refuse_reserved_seed(seed)
    if min(hours, agents, steps_per_window, scenario_size, rollouts) < 1:
        raise ValueError("hours, agents, steps_per_window, scenario_size and rollouts must be positive")
    began = time.perf_counter()
    profiles = make_agents(seed, agents, policy_mix)
    policies = {p.agent_id: (policy_for(p) if policy_for else ScriptedPolicy(p, seed)) for p in profiles}
    accounts = {p.agent_id: Account() for p in profiles}
    roster = npc_roster(stream(seed, "npcs"))
    clock = SimClock(start)
    first = window_of(start)
    recorder = TrajectoryRecorder(engine, clock=clock, ids=SeededIds(seed, first))
    last = window_of(window_start(first) + WINDOW * (hours - 1))
    windows = list(windows_between(first, last))
    if taken := _simulated_windows(engine, windows, seed):
        raise AlreadySimulated(f"windows {', '.join(taken)} already hold seed {seed}'s agents: simulating them again "
                               "would record those agents twice; another --seed can share these windows, or pick "
                               "--start and --hours that leave them out")
    users = _agent_users(engine, profiles, seed, create_users)
    summary = SimulationSummary()
    for window_id in windows:
        _run_window(engine, recorder, clock, window_id, seed, profiles, policies, accounts, roster, steps_per_window,
                    summary, users, scenario_size, rollouts)
        summary.windows.append(window_id)
    summary.seconds = time.perf_counter() - began
    return summary


def _simulated_windows(engine: sa.Engine, windows: list[str], seed: int) -> list[str]:
    t = tables.trajectories
    query = (sa.select(t.c.windowId).distinct()
             .where(t.c.windowId.in_(windows), t.c.agentId.like(f"{agent_id_prefix(seed)}%")).order_by(t.c.windowId))
    with engine.connect() as conn:
        return list(conn.scalars(query))


def _agent_users(engine: sa.Engine, profiles: Sequence[AgentProfile], seed: int, create: bool) -> dict[str, AgentUser]:
    """The `User` rows still to create, by agent id: none where the database has no `User` table.

    The username is the persona's handle plus the seed: handles repeat across seeds, usernames must not."""
    with engine.connect() as conn:
        link = agent_link(conn)
        if not link.has_user_table:
            return {}
        if create:
            return {p.agent_id: AgentUser(p.agent_id, f"{p.handle}_s{seed}") for p in profiles}
        missing = missing_agents(conn, [p.agent_id for p in profiles]) if link.requires_users else []
    if missing:
        raise AgentsAreNotUsers(f"{len(missing)} of the {len(profiles)} agents are not User rows and {link.describe()}: "
                                f"{named(missing)}; nothing was written: let simulate create them (drop "
                                "--no-create-users) or create them in the app first")
    return {}


def _scenarios(window_id: str, seed: int, profiles: Sequence[AgentProfile], engine: sa.Engine,
               size: int) -> list[_Scenario]:
    order = list(profiles)
    stream(seed, window_id, "grouping").shuffle(order)
    opened = window_start(window_id)
    taken_markets, taken_tickers = window_market_keys(engine, window_id)  # other seeds' markets in this window
    scenarios = []
    for k in range(0, len(order), size):
        world = stream(seed, window_id, k, "world")
        ids = stream(seed, window_id, k, "ids")
        markets = new_prediction_markets(world, ids, opened, MARKETS_PER_SCENARIO, taken_markets)
        perps = new_perp_markets(world, PERPS_PER_SCENARIO, taken_tickers)
        scenarios.append(_Scenario(
            scenario_id=f"{window_id}:seed{seed}:s{k // size}",
            agents=sorted(order[k:k + size], key=lambda p: p.index),
            markets={m.market_id: m for m in markets},
            perps={p.ticker: p for p in perps},
            feed=Feed(stream(seed, window_id, k, "posts")),
        ))
    return scenarios


def _insight(agent: AgentProfile, scenario: _Scenario, rng) -> dict[str, float]:
    noise = INSIGHT_NOISE.get(agent.policy_kind)
    if noise is None:
        return {}
    seen = {m.market_id: min(max(m.true_probability + rng.gauss(0.0, noise), 0.01), 0.99) for m in scenario.markets.values()}
    seen |= {p.ticker: p.drift + rng.gauss(0.0, noise * 0.04) for p in scenario.perps.values()}
    return seen


def _observation(agent: AgentProfile, account: Account, scenario: _Scenario, window_id: str, tick: int, ticks: int,
                 insight: dict[str, float]) -> Observation:
    markets, perps = scenario.markets, scenario.perps
    return Observation(
        agent_id=agent.agent_id, handle=agent.handle, window_id=window_id, scenario_id=scenario.scenario_id,
        tick=tick, ticks=ticks, balance=round(account.cash, 2), pnl=round(account.pnl(markets, perps), 2),
        holdings=tuple(HoldingView(h.market_id, h.side, h.shares, h.cost / h.shares if h.shares else 0.0,
                                   markets[h.market_id].side_price(h.side)) for h in account.holdings.values()),
        perp_positions=tuple(PerpPositionView(p.ticker, p.side, p.size, p.entry, perps[p.ticker].price,
                                              p.value(perps[p.ticker].price) - p.size) for p in account.perps),
        markets=tuple(MarketView(m.market_id, f"M{k}", m.question, round(m.price, 4), round(m.volume, 2))
                      for k, m in enumerate(markets.values(), start=1)),
        perps=tuple(PerpView(p.ticker, p.name, round(p.price, 4), round(p.change, 5)) for p in perps.values()),
        posts=tuple(_post_view(p, scenario.feed) for p in scenario.feed.recent(FEED_SHOWN)),
        insight=insight,
    )


def _post_view(post: Post, feed: Feed) -> PostView:
    parent = feed.get(post.reply_to) if post.reply_to else None
    return PostView(post.post_id, post.handle, post.author, post.content, post.claim, parent.handle if parent else None)


def _run_window(engine, recorder, clock, window_id, seed, profiles, policies, accounts, roster: Sequence[Source],
                ticks: int, summary: SimulationSummary, users: dict[str, AgentUser], scenario_size: int,
                rollouts: int) -> None:
    """All scenarios (and plays) of the window tick in lockstep: every agent of a tick is asked at once
    (`act_all`, so a model answers the whole tick in one batch), then the answers are applied agent by agent.
    `users` holds the agents still to create as `User` rows; each is created with its first trajectory."""
    opened = window_start(window_id)
    plays = [_Play(k, scenario, _accounts(scenario, accounts, copy=k > 0))
             for k in range(rollouts) for scenario in _scenarios(window_id, seed, profiles, engine, scenario_size)]
    scenario_count = len(plays) // rollouts
    for n, play in enumerate(plays):
        clock.set(opened + timedelta(seconds=n % scenario_count))
        play.trajectories |= {
            a.agent_id: recorder.start_trajectory(
                a.agent_id, scenario_id=play.scenario.scenario_id, window_id=window_id,
                metadata={"agentName": a.name, "handle": a.handle, "archetype": a.archetype, "policy": a.policy_kind,
                          "simulator": "babylon-lite", "seed": seed, **({"rollout": play.rollout} if rollouts > 1 else {})})
            for a in play.scenario.agents
        }
    flows = [stream(seed, window_id, n % scenario_count, "flow") for n in range(len(plays))]
    insights = {a.agent_id: _insight(a, scenario, stream(seed, window_id, s, "insight", a.agent_id))
                for s, scenario in enumerate(p.scenario for p in plays[:scenario_count]) for a in scenario.agents}
    for tick in range(ticks):
        moment = opened + timedelta(minutes=(tick + 0.5) * 60 / ticks)
        for play, flow in zip(plays, flows, strict=True):
            scenario = play.scenario
            npc_posts(flow, roster, list(scenario.markets.values()), list(scenario.perps.values()), scenario.feed, tick, moment)
            for market in scenario.markets.values():
                market.outside_flow(flow, pull=0.15, noise=0.05)
            for perp in scenario.perps.values():
                perp.step(flow)
        turns = [_Turn(play.scenario, j, agent, play.accounts[agent.agent_id], play.trajectories[agent.agent_id],
                       _observation(agent, play.accounts[agent.agent_id], play.scenario, window_id, tick, ticks,
                                    insights[agent.agent_id]))
                 for play in plays for j, agent in enumerate(play.scenario.agents)]
        requests = [PolicyRequest(system_prompt(t.agent), observation_prompt(t.observation), t.observation) for t in turns]
        answers = act_all([policies[t.agent.agent_id] for t in turns], requests)
        for turn, request, answer in zip(turns, requests, answers, strict=True):
            clock.set(moment + timedelta(seconds=turn.index + 1))
            _agent_step(recorder, turn, request, answer, tick, moment, summary)
    for n, play in enumerate(plays):
        s, scenario = n % scenario_count, play.scenario
        resolve = stream(seed, window_id, s, "resolve")
        outcomes = {m.market_id: m.resolve(resolve) for m in scenario.markets.values()}
        clock.set(opened + WINDOW - timedelta(seconds=len(scenario.agents) - s % 60))
        endings = {}
        for agent in scenario.agents:
            account = play.accounts[agent.agent_id]
            account.settle(scenario.markets, scenario.perps)
            endings[play.trajectories[agent.agent_id]] = dict(
                final_balance=round(account.cash, 2),
                final_pnl=round(account.pnl(scenario.markets, scenario.perps), 2),
                game_knowledge={"trueProbabilities": {m.market_id: m.true_probability for m in scenario.markets.values()},
                                "actualOutcomes": outcomes},
            )
        new_users = [users[a.agent_id] for a in scenario.agents if a.agent_id in users]
        recorder.end_trajectories(endings, users=new_users)
        for user in new_users:
            del users[user.id]
        summary.trajectories += len(endings)
    outcome_rows = [row for play in plays[:scenario_count]
                    for row in _outcome_rows(window_id, play.scenario, resolved_at=opened + WINDOW)]
    record_market_outcomes(engine, window_id, outcome_rows)
    summary.market_outcomes += len(outcome_rows)


@dataclass
class _Play:
    """One play of a scenario: its own world and accounts (the first play's accounts are the agents' own)."""

    rollout: int
    scenario: _Scenario
    accounts: dict[str, Account]
    trajectories: dict[str, str] = field(default_factory=dict)  # agent id -> trajectory id


def _accounts(scenario: _Scenario, accounts: Mapping[str, Account], *, copy: bool) -> dict[str, Account]:
    return {a.agent_id: deepcopy(accounts[a.agent_id]) if copy else accounts[a.agent_id] for a in scenario.agents}


@dataclass(frozen=True)
class _Turn:
    """One agent's turn in a tick: what it saw, taken before any agent of the tick acted."""

    scenario: _Scenario
    index: int  # the agent's place in its scenario
    agent: AgentProfile
    account: Account
    trajectory_id: str
    observation: Observation


def _agent_step(recorder, turn: _Turn, request: PolicyRequest, answer: PolicyResponse | PolicyError, tick: int,
                moment: datetime, summary: SimulationSummary) -> None:
    scenario, account, trajectory_id, observation = turn.scenario, turn.account, turn.trajectory_id, turn.observation
    markets, perps = scenario.markets, scenario.perps
    equity_before = account.equity(markets, perps)
    recorder.start_step(trajectory_id, {
        "agentBalance": observation.balance, "agentPnL": round(equity_before - 10_000.0, 2),
        "openPositions": len(observation.holdings) + len(observation.perp_positions), "activeMarkets": len(markets),
        "portfolioValue": round(equity_before, 2),
    })
    recorder.log_provider_access(trajectory_id, "feed", {"posts": len(observation.posts)}, "observe")
    if isinstance(answer, PolicyError):
        recorder.complete_step(trajectory_id, {"actionType": "HOLD", "success": False, "error": str(answer)}, -FAILED_ACTION_PENALTY)
        summary.steps += 1
        summary.failed_actions += 1
        return
    parsed = parse_response(answer.text)
    recorder.log_llm_call(
        trajectory_id, model=answer.model, system_prompt=request.system_prompt, user_prompt=request.user_prompt,
        response=answer.text, temperature=answer.temperature, max_tokens=answer.max_tokens, top_p=answer.top_p,
        prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens, latency_ms=answer.latency_ms,
        logprobs=list(answer.logprobs) if answer.logprobs is not None else None, model_version=answer.model_version,
        action_type=parsed.action_type, reasoning=parsed.reasoning,
    )
    if isinstance(parsed, ParseFailure):
        action = {"actionType": parsed.action_type, "parameters": parsed.parameters, "success": False, "error": parsed.reason}
    else:
        parsed = resolve_references(parsed, observation)
        applied = apply_action(parsed, account, markets, perps, scenario.feed, author=turn.agent.handle, tick=tick,
                               moment=moment)
        action = {"actionType": parsed.action_type, "parameters": parsed.parameters, "success": applied.success,
                  "error": applied.error, "result": applied.result, "reasoning": parsed.reasoning}
    reward = (account.equity(markets, perps) - equity_before) / REWARD_DOLLARS
    if not action["success"]:
        reward -= FAILED_ACTION_PENALTY
        summary.failed_actions += 1
    recorder.complete_step(trajectory_id, action, round(reward, 6))
    summary.steps += 1
    summary.llm_calls += 1


def _outcome_rows(window_id: str, scenario: _Scenario, resolved_at: datetime) -> list[dict]:
    """`createdAt` is the simulated resolution time, not the wall clock: the same seed writes the same rows."""
    rows = [
        {"id": f"{window_id}:{m.market_id}", "predictionMarketId": m.market_id, "question": m.question,
         "outcome": m.outcome, "finalProbability": round(m.price, 4), "volume": round(m.volume, 2),
         "createdAt": resolved_at}
        for m in scenario.markets.values()
    ]
    for p in scenario.perps.values():
        news = [post.content for post in scenario.feed.posts if post.claim and post.claim.subject == p.ticker][:3]
        rows.append({"id": f"{window_id}:{p.ticker}", "stockTicker": p.ticker, "startPrice": round(p.start_price, 4),
                     "endPrice": round(p.price, 4), "changePercent": round(p.change * 100, 4),
                     "sentiment": "BULLISH" if p.price >= p.start_price else "BEARISH", "newsEvents": news,
                     "volume": round(p.volume, 2), "createdAt": resolved_at})
    return rows
