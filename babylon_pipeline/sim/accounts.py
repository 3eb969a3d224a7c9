"""An agent's money: cash, prediction-market shares and perp positions, marked to market.

Accounts live for the whole simulation; positions are settled into cash when their scenario ends,
so lifetime P&L is equity minus the starting capital and carries across windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from babylon_pipeline.sim.markets import PerpMarket, PerpSide, PredictionMarket, Side

STARTING_CAPITAL = 10_000.0


@dataclass
class Holding:
    market_id: str
    side: Side
    shares: float
    cost: float  # dollars paid, for the average price shown to the agent


@dataclass
class PerpPosition:
    ticker: str
    side: PerpSide
    size: float  # margin posted, in dollars (1× leverage)
    quantity: float  # signed units: positive long, negative short
    entry: float

    def value(self, price: float) -> float:
        """Margin plus unrealised P&L, never below zero (a wiped-out position is liquidated)."""
        return max(0.0, self.size + self.quantity * (price - self.entry))


@dataclass
class Account:
    cash: float = STARTING_CAPITAL
    holdings: dict[tuple[str, Side], Holding] = field(default_factory=dict)
    perps: list[PerpPosition] = field(default_factory=list)

    def equity(self, markets: Mapping[str, PredictionMarket], perps: Mapping[str, PerpMarket]) -> float:
        value = self.cash
        for holding in self.holdings.values():
            value += holding.shares * markets[holding.market_id].payout(holding.side)
        for position in self.perps:
            value += position.value(perps[position.ticker].price)
        return value

    def pnl(self, markets: Mapping[str, PredictionMarket], perps: Mapping[str, PerpMarket]) -> float:
        """Lifetime P&L: equity over the starting capital."""
        return self.equity(markets, perps) - STARTING_CAPITAL

    def settle(self, markets: Mapping[str, PredictionMarket], perps: Mapping[str, PerpMarket]) -> None:
        """Close everything at the scenario's final marks (markets resolved, perps at their last price)."""
        self.cash = self.equity(markets, perps)
        self.holdings.clear()
        self.perps.clear()

    def open_positions(self, markets: Mapping[str, PredictionMarket], perps: Mapping[str, PerpMarket]) -> list[dict[str, Any]]:
        """Positions as the app's `openPositions`: camelCase, rounded."""
        rows: list[dict[str, Any]] = []
        for holding in self.holdings.values():
            rows.append({
                "marketType": "prediction",
                "marketId": holding.market_id,
                "side": holding.side,
                "shares": round(holding.shares, 4),
                "avgPrice": round(holding.cost / holding.shares, 4) if holding.shares else 0.0,
                "currentPrice": round(markets[holding.market_id].side_price(holding.side), 4),
            })
        for position in self.perps:
            price = perps[position.ticker].price
            rows.append({
                "marketType": "perp",
                "ticker": position.ticker,
                "side": position.side,
                "size": round(position.size, 2),
                "entryPrice": round(position.entry, 4),
                "currentPrice": round(price, 4),
                "unrealizedPnL": round(position.value(price) - position.size, 2),
            })
        return rows
