"""What the reward stage asks of `market_outcomes`: outcomes known for a window, and late arrivals."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.store import tables

M = tables.market_outcomes


def read_outcomes_since(engine: sa.Engine, window_id: str) -> list[dict[str, Any]]:
    """Outcome rows of this window and every later one: markets traded here may resolve later."""
    query = sa.select(M).where(M.c.windowId >= window_id).order_by(M.c.windowId, M.c.id)
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(query)]


def resolved_outcome_ids(engine: sa.Engine, window_id: str, markets: Sequence[str], tickers: Sequence[str]) -> list[str]:
    """Ids of outcome rows that settle any of a window's pending markets (any later window) or tickers (its own)."""
    conditions = []
    if markets:
        conditions.append(sa.and_(sa.func.upper(M.c.predictionMarketId).in_(list(markets)),
                                  M.c.outcome.in_(["YES", "NO"]), M.c.windowId >= window_id))
    if tickers:
        conditions.append(sa.and_(sa.func.upper(M.c.stockTicker).in_(list(tickers)), M.c.windowId == window_id))
    if not conditions:
        return []
    with engine.connect() as conn:
        return sorted(conn.scalars(sa.select(M.c.id).where(sa.or_(*conditions))))
