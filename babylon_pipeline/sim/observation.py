"""What one agent sees at one tick: public state only, the same for a scripted or an LLM policy.

Hidden facts (true probabilities, drifts, source reliabilities) are never here; a post's `claim`
is the structured reading of its own text, which scripted policies use instead of parsing prose.

Markets and posts are shown by short handles (`M1`, `P7`) rather than their 18-digit ids: copying
an id is a copy skill a small model lacks (one token per digit), and every digit it gets wrong
makes the game reject the trade. An action may name either; `resolve_references` maps a handle
back to the id before the game applies it, so what is recorded names the real market or post.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from babylon_pipeline.sim.feed import Claim


@dataclass(frozen=True)
class MarketView:
    market_id: str
    handle: str  # "M1": its place in the scenario's market list
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
    handle: str  # "P7": its place in the scenario's feed
    author: str
    content: str
    claim: Claim | None = None
    reply_to: str | None = None  # the handle of the post it answers


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

    def market_named(self, reference: str) -> MarketView | None:
        """The shown market `reference` names: its handle (any case, brackets allowed) or its id."""
        return _named(reference, self.markets, lambda m: (m.handle, m.market_id))

    def post_named(self, reference: str) -> PostView | None:
        return _named(reference, self.posts, lambda p: (p.handle, p.post_id))

    def perp(self, ticker: str) -> PerpView | None:
        return next((p for p in self.perps if p.ticker == ticker), None)


_View = TypeVar("_View")


def _named(reference: str, views: Iterable[_View], names: Callable[[_View], tuple[str, str]]) -> _View | None:
    wanted = reference.strip().strip("[]#").strip().upper()
    return next((v for v in views if wanted in (name.upper() for name in names(v))), None)
