"""What the markets did, from `market_outcomes` rows: resolutions by market, moves by window and ticker.

A row is a prediction-market row (`predictionMarketId`, `outcome`) or a stock row (`stockTicker`,
`changePercent`, else `startPrice`/`endPrice`). A market without a resolved row is unresolved, a
ticker without a row for a window has no known move there: trades on either stay pending. When
rows disagree the latest window wins (window ids sort in time order), so the result does not
depend on the rows' order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from babylon_pipeline.rewards.numbers import finite_number


@dataclass(frozen=True)
class MarketOutcomes:
    resolutions: Mapping[str, str]
    moves: Mapping[tuple[str, str], float]

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]]) -> MarketOutcomes:
        resolved: list[tuple[str, str, str]] = []
        moved: list[tuple[str, float, str]] = []
        for row in rows:
            window = str(row.get("windowId") or "")
            market, outcome = key(row.get("predictionMarketId")), key(row.get("outcome"))
            if market and outcome in ("YES", "NO"):
                resolved.append((window, outcome, market))
            ticker, move = key(row.get("stockTicker")), _move(row)
            if ticker and move is not None:
                moved.append((window, move, ticker))
        return cls(
            resolutions={market: outcome for _, outcome, market in sorted(resolved)},
            moves={(window, ticker): move for window, move, ticker in sorted(moved)},
        )

    def resolution(self, market_id: str) -> str | None:
        """`YES`/`NO` once the market has resolved, else None."""
        return self.resolutions.get(market_id)

    def move(self, window_id: str, ticker: str) -> float | None:
        """The ticker's relative price change over the window (0.05 for +5 %), if known."""
        return self.moves.get((window_id, ticker))


def key(value: Any) -> str:
    """Ids, tickers and sides compared as trimmed upper-case text (`"yes"`, `" btc"`, 123 alike)."""
    return "" if value is None else str(value).strip().upper()


def _move(row: Mapping[str, Any]) -> float | None:
    change = finite_number(row.get("changePercent"))
    if change is not None:
        return change / 100.0
    start, end = finite_number(row.get("startPrice")), finite_number(row.get("endPrice"))
    if start is None or end is None or start <= 0:
        return None
    return (end - start) / start
