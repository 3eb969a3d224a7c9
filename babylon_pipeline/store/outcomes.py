"""`market_outcomes`: written per window as the app does, read by the reward stage and the late-outcome sensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.store import tables

M = tables.market_outcomes


def record_market_outcomes(engine: sa.Engine, window_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Replace the window's outcome rows in one transaction: writing a window twice leaves one set."""
    with engine.begin() as conn:
        conn.execute(sa.delete(M).where(M.c.windowId == window_id))
        if rows:  # stock rows and market rows name different columns: give every row all of them
            columns = [c.name for c in M.columns if c.name != "createdAt"]
            conn.execute(sa.insert(M), [{**dict.fromkeys(columns), **row, "windowId": window_id} for row in rows])


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
