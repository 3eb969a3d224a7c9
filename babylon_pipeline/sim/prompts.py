"""The two prompts an agent gets each tick, in the style of Babylon's agent runtime.

The system prompt is the agent's persona plus the rules and the JSON action format; it is the same
for every tick of an agent, so a group's shared context is stable. The user prompt is the
observation as text. Both are compact: they are stored twice per step by the recorder.
"""

from __future__ import annotations

from babylon_pipeline.sim.observation import Observation
from babylon_pipeline.sim.personas import AgentProfile

ACTION_FORMAT = """\
{"action": "BUY_SHARES", "parameters": {"marketId": "<M#>", "side": "YES" or "NO", "amount": <dollars>}}
{"action": "SELL_SHARES", "parameters": {"marketId": "<M#>", "side": "YES" or "NO", "shares": <shares>}}
{"action": "OPEN_PERP", "parameters": {"ticker": "<TICKER>", "side": "long" or "short", "size": <dollars>}}
{"action": "CLOSE_PERP", "parameters": {"ticker": "<TICKER>"}}
{"action": "CREATE_POST", "parameters": {"content": "<at most 280 characters>"}}
{"action": "CREATE_COMMENT", "parameters": {"postId": "<P#>", "content": "<at most 280 characters>"}}
{"action": "HOLD", "parameters": {}}"""


def system_prompt(agent: AgentProfile) -> str:
    return (
        f"You are {agent.name} (@{agent.handle}), a {agent.archetype} playing Babylon, a social "
        f"prediction-market game. {agent.bio} Voice: {agent.style}. Risk appetite: {agent.risk_word}.\n\n"
        "Each tick you see your cash, positions, the open prediction markets (the YES price is the "
        "implied probability), the perpetual tickers and the latest posts. Posters differ in how often "
        "they are right. Prediction markets resolve YES or NO when the hour ends and pay $1 per winning "
        "share; perp positions are closed at the hour's last price.\n\n"
        "Reply with a short reasoning, then exactly one action as JSON, one of:\n"
        f"{ACTION_FORMAT}\n"
        "Rules: never spend more than your cash; name markets and posts by their [M#] and [P#] and "
        "tickers exactly as shown; an invalid "
        "action is rejected and costs you."
    )


def _money(value: float) -> str:
    return f"-${-value:,.2f}" if value < 0 else f"${value:,.2f}"


def observation_prompt(obs: Observation) -> str:
    """Newest and most decision-relevant last: a model with a short context keeps the end of its
    prompt (positions, cash, the markets it can trade and the question) and loses the older feed first."""
    lines = [
        f"Hour {obs.window_id} UTC, tick {obs.tick + 1} of {obs.ticks} "
        f"({obs.ticks_left - 1} more after this one).",
        "Feed, newest first:",
    ]
    if obs.posts:
        lines += [
            f"- [{p.handle}] @{p.author}{f' (reply to {p.reply_to})' if p.reply_to else ''}: {p.content}"
            for p in obs.posts
        ]
    else:
        lines.append("- (no posts yet)")
    lines.append("Perpetuals:")
    lines += [f"- {p.ticker} ({p.name}) {p.price:,.2f} ({p.change * 100:+.2f}% this hour)" for p in obs.perps]
    if obs.holdings or obs.perp_positions:
        lines.append("Your positions:")
        lines += [
            f"- {_market_handle(obs, h.market_id)} {h.side}: {h.shares:,.1f} shares, avg {h.avg_price:.3f}, "
            f"now {h.price:.3f}"
            for h in obs.holdings
        ]
        lines += [
            f"- {p.ticker} {p.side} {_money(p.size)} @ {p.entry:,.2f}, now {p.price:,.2f} ({_money(p.unrealized_pnl)})"
            for p in obs.perp_positions
        ]
    else:
        lines.append("Your positions: none")
    lines.append(f"Cash: {_money(obs.balance)} | lifetime P&L: {_money(obs.pnl)}")
    lines.append("Prediction markets:")
    lines += [f"- [{m.handle}] {m.question} YES {m.yes_price:.3f}, volume {_money(m.volume)}" for m in obs.markets]
    lines.append("What is your next action?")
    return "\n".join(lines)


def _market_handle(obs: Observation, market_id: str) -> str:
    market = obs.market(market_id)
    return market.handle if market is not None else market_id
