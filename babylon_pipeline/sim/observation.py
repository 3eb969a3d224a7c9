"""What one agent sees at one tick: public state only, the same for a scripted or an LLM policy.

Hidden facts (true probabilities, drifts, source reliabilities) are never here; a post's `claim`
is the structured reading of its own text, which scripted policies use instead of parsing prose.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from babylon_pipeline.sim.feed import Claim


@dataclass(frozen=True)
class MarketView:
    market_id: str
    question: str
    yes_price: float
    volume: float


@dataclass(frozen=True)
class PerpView:
    ticker: str
    name: str
    price: float
    change: float  # since the window opened, 0.05 = +5 %


@dataclass(frozen=True)
class HoldingView:
    market_id: str
    side: str
    shares: float
    avg_price: float
    price: float


@dataclass(frozen=True)
class PerpPositionView:
    ticker: str
    side: str
    size: float
    entry: float
    price: float
    unrealized_pnl: float


@dataclass(frozen=True)
class PostView:
    post_id: str
    author: str
    content: str
    claim: Claim | None = None
    reply_to: str | None = None


@dataclass(frozen=True)
class Observation:
    agent_id: str
    handle: str
    window_id: str
    scenario_id: str
    tick: int  # 0-based
    ticks: int  # ticks in the window
    balance: float
    pnl: float  # lifetime
    holdings: tuple[HoldingView, ...]
    perp_positions: tuple[PerpPositionView, ...]
    markets: tuple[MarketView, ...]
    perps: tuple[PerpView, ...]
    posts: tuple[PostView, ...]  # newest first
    insight: Mapping[str, float] = field(default_factory=dict)
    """A scripted agent's private information, never rendered into prompts: its estimate of each
    market's YES probability and of each ticker's drift. How good it is sets the agent's skill."""

    @property
    def ticks_left(self) -> int:
        return self.ticks - self.tick

    def market(self, market_id: str) -> MarketView | None:
        return next((m for m in self.markets if m.market_id == market_id), None)

    def perp(self, ticker: str) -> PerpView | None:
        return next((p for p in self.perps if p.ticker == ticker), None)
