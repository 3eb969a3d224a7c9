"""A step's action read as a scoreable trade, whichever writer produced it.

- `BUY_SHARES` / `SELL_SHARES`: a prediction trade on `marketId` for `side` YES/NO; the stake is
  `amount` (or `shares`, `quantity`, `size`). Selling a side bets against it.
- `OPEN_PERP`: a perp trade on `ticker` for `side` long/short; the stake is `size` (or `amount`,
  `quantity`).
- `TRADING_DECISION` (production): `side` YES/NO with `marketId` is a prediction trade, `side`
  long/short with `ticker` a perp trade; `method: sell` bets against the side. Production rows
  carry no stake, so it is 1 unless one of the stake keys is given.

snake_case spellings (`market_id`), `outcome` for `side`, `symbol` for `ticker` and numbers
written as strings are accepted. A trade missing what it needs, or with a stake that is not a
positive number, is `Unscorable`; any other action (posts, `CLOSE_PERP`) is not a trade.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from babylon_pipeline.rewards.markets import key
from babylon_pipeline.rewards.numbers import finite_number
from babylon_pipeline.store.records import Action

_PREDICTION = {"BUY_SHARES": 1, "SELL_SHARES": -1}


@dataclass(frozen=True)
class PredictionTrade:
    market_id: str
    side: str  # YES or NO
    stake: float
    direction: int  # +1 backs `side`, -1 bets against it


@dataclass(frozen=True)
class PerpTrade:
    ticker: str
    direction: int  # +1 long, -1 short
    size: float


@dataclass(frozen=True)
class Unscorable:
    reason: str


Trade = PredictionTrade | PerpTrade | Unscorable


def read_trade(action: Action) -> Trade | None:
    """The action as a trade to score, `Unscorable`, or None when it is no trade."""
    params = action.parameters
    kind = action.action_type
    if kind in _PREDICTION:
        return _prediction(params, _PREDICTION[kind], _stake(params, ("amount", "shares", "quantity", "size")))
    if kind == "OPEN_PERP":
        return _perp(params, _stake(params, ("size", "amount", "quantity")))
    if kind == "TRADING_DECISION":
        stake = _stake(params, ("amount", "size", "shares", "quantity"), default=1.0)
        if key(_first(params, "side", "outcome")) in ("YES", "NO"):
            return _prediction(params, -1 if key(params.get("method")) == "SELL" else 1, stake)
        return _perp(params, stake)
    return None


def _prediction(params: Mapping[str, Any], direction: int, stake: float | Unscorable) -> Trade:
    market, side = key(_first(params, "marketId", "market_id")), key(_first(params, "side", "outcome"))
    if not market:
        return Unscorable("prediction trade without marketId")
    if side not in ("YES", "NO"):
        return Unscorable(f"prediction trade with side {side or 'missing'}")
    if isinstance(stake, Unscorable):
        return stake
    return PredictionTrade(market_id=market, side=side, stake=stake, direction=direction)


def _perp(params: Mapping[str, Any], size: float | Unscorable) -> Trade:
    ticker, side = key(_first(params, "ticker", "symbol")), key(_first(params, "side", "direction"))
    if not ticker:
        return Unscorable("perp trade without ticker")
    if side not in ("LONG", "SHORT"):
        return Unscorable(f"perp trade with side {side or 'missing'}")
    if isinstance(size, Unscorable):
        return size
    return PerpTrade(ticker=ticker, direction=1 if side == "LONG" else -1, size=size)


def _stake(params: Mapping[str, Any], names: tuple[str, ...], default: float | None = None) -> float | Unscorable:
    raw = _first(params, *names)
    if raw is None:
        return default if default is not None else Unscorable(f"no stake ({'/'.join(names)})")
    stake = finite_number(raw)
    return stake if stake is not None and stake > 0 else Unscorable(f"stake {raw!r} is not a positive number")


def _first(params: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if (value := params.get(name)) is not None:
            return value
    return None
