"""`market_outcomes`: written per window as the app does, read by the reward stage and the late-outcome sensor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from babylon_pipeline.store import tables

M = tables.market_outcomes


def record_market_outcomes(engine: sa.Engine, window_id: str, rows: Sequence[dict[str, Any]]) -> None:
    """Add the rows to the window's outcomes in one transaction. Rows already there are kept as they are,
    never deleted or overwritten: a window holds the outcomes of every seed or writer that traded in it,
    and writing the same rows twice leaves one set."""
    if not rows:
        return
    columns = [c.name for c in M.columns if c.name != "createdAt"]  # stock and market rows name different columns
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    with engine.begin() as conn:
        conn.execute(insert(M).on_conflict_do_nothing(index_elements=["id"]),
                     [{**dict.fromkeys(columns), **row, "windowId": window_id} for row in rows])


def window_market_keys(engine: sa.Engine, window_id: str) -> tuple[set[str], set[str]]:
    """The prediction-market ids and tickers the window's outcome rows already name, trimmed and upper-cased
    as the reward stage compares them."""
    query = sa.select(M.c.predictionMarketId, M.c.stockTicker).where(M.c.windowId == window_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return ({str(m).strip().upper() for m, _ in rows if m is not None},
            {str(t).strip().upper() for _, t in rows if t is not None})


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
