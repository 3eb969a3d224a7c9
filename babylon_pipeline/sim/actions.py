"""Reading an action out of a policy's text, leniently, and applying it to the world.

Models answer in many shapes: JSON in a ```json fence, JSON inside prose, lowercase or aliased
action names, snake_case keys, numbers as strings ("$1,000"). All of those are accepted and
normalised to the canonical camelCase action. What still cannot be read, or cannot be done
(unknown market, not enough cash), becomes a failed action whose `error` says why; nothing here
raises on bad model output.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from babylon_pipeline.sim.accounts import Account, Holding, PerpPosition
from babylon_pipeline.sim.feed import Feed
from babylon_pipeline.sim.markets import PerpMarket, PredictionMarket
from babylon_pipeline.sim.observation import Observation

ACTION_TYPES = ("BUY_SHARES", "SELL_SHARES", "OPEN_PERP", "CLOSE_PERP", "CREATE_POST", "CREATE_COMMENT", "HOLD")
INVALID_RESPONSE = "INVALID_RESPONSE"
"""The action type recorded when no action could be read from the response at all."""
POST_LIMIT = 280
MIN_TRADE = 1.0

_ALIASES = {
    "BUY": "BUY_SHARES", "BUY_SHARE": "BUY_SHARES", "BUY_PREDICTION_SHARES": "BUY_SHARES", "PLACE_BET": "BUY_SHARES",
    "BET": "BUY_SHARES", "SELL": "SELL_SHARES", "SELL_SHARE": "SELL_SHARES", "SELL_PREDICTION_SHARES": "SELL_SHARES",
    "OPEN_POSITION": "OPEN_PERP", "OPEN_PERP_POSITION": "OPEN_PERP", "PERP": "OPEN_PERP", "TRADE_PERP": "OPEN_PERP",
    "CLOSE_POSITION": "CLOSE_PERP", "CLOSE_PERP_POSITION": "CLOSE_PERP", "POST": "CREATE_POST", "TWEET": "CREATE_POST",
    "COMMENT": "CREATE_COMMENT", "REPLY": "CREATE_COMMENT", "WAIT": "HOLD", "PASS": "HOLD", "NOTHING": "HOLD",
    "NONE": "HOLD", "NO_ACTION": "HOLD", "DO_NOTHING": "HOLD", "SKIP": "HOLD",
}
_ACTION_KEYS = ("action", "actionType", "action_type", "type", "name")
_PARAM_KEYS = ("parameters", "params", "args", "arguments", "input")
_REASONING_KEYS = ("reasoning", "reason", "thought", "thoughts", "rationale")
_KEY_ALIASES = {
    "marketid": "marketId", "market": "marketId", "predictionmarketid": "marketId", "id": "marketId",
    "ticker": "ticker", "symbol": "ticker", "stock": "ticker", "stockticker": "ticker",
    "side": "side", "outcome": "side", "direction": "side", "position": "side",
    "amount": "amount", "dollars": "amount", "usd": "amount", "stake": "amount", "cost": "amount",
    "shares": "shares", "quantity": "shares", "qty": "shares",
    "size": "size", "notional": "size",
    "content": "content", "text": "content", "body": "content", "message": "content",
    "postid": "postId", "post": "postId", "replyto": "postId", "parentid": "postId",
}
_LONG = {"LONG", "BUY", "UP", "BULL", "BULLISH"}
_SHORT = {"SHORT", "SELL", "DOWN", "BEAR", "BEARISH"}
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")
_NUMBER = re.compile(r"^[+-]?\$?\s*[\d,]*\.?\d+(?:e[+-]?\d+)?\s*(?:usd|dollars?|shares?|\$)?$", re.IGNORECASE)


@dataclass(frozen=True)
class ParsedAction:
    action_type: str
    parameters: dict[str, Any]
    reasoning: str | None = None


@dataclass(frozen=True)
class ParseFailure:
    reason: str
    action_type: str = INVALID_RESPONSE
    parameters: dict[str, Any] = field(default_factory=dict)
    reasoning: str | None = None


# ---------------------------------------------------------------- parsing


def parse_response(text: str) -> ParsedAction | ParseFailure:
    """The one action in `text`, normalised; or why there is none."""
    if not isinstance(text, str) or not text.strip():
        return ParseFailure("empty response")
    found, json_error = _find_action_object(text)
    if found is None:
        reason = f"invalid JSON: {json_error}" if json_error else "no JSON action found in the response"
        return ParseFailure(reason, reasoning=_prose(text, None))
    obj, span = found
    reasoning = next((str(obj[k]) for k in _REASONING_KEYS if isinstance(obj.get(k), str) and obj[k].strip()), None)
    reasoning = reasoning or _prose(text, span)
    raw_type = next(obj[k] for k in _ACTION_KEYS if k in obj)
    action_type = _action_name(raw_type)
    raw_params = next((obj[k] for k in _PARAM_KEYS if isinstance(obj.get(k), Mapping)), None)
    if raw_params is None:
        skip = {*_ACTION_KEYS, *_PARAM_KEYS, *_REASONING_KEYS}
        raw_params = {k: v for k, v in obj.items() if k not in skip}
    params = {_KEY_ALIASES.get(re.sub(r"[_\-\s]", "", str(k)).lower(), str(k)): v for k, v in raw_params.items()}
    if action_type is None:
        return ParseFailure(f"unknown action {str(raw_type)[:40]!r}; expected one of {', '.join(ACTION_TYPES)}",
                            parameters=_jsonable(params), reasoning=reasoning)
    normalised = _normalise(action_type, params)
    if isinstance(normalised, str):
        return ParseFailure(normalised, action_type=action_type, parameters=_jsonable(params), reasoning=reasoning)
    return ParsedAction(action_type, normalised, reasoning)


def resolve_references(action: ParsedAction, observation: Observation) -> ParsedAction:
    """`action` with the handles it names (`M1`, `P7`) replaced by the ids the observation showed them for.

    A reference that names nothing shown is left as it is: the game rejects it and says which."""
    params = dict(action.parameters)
    if "marketId" in params and (market := observation.market_named(params["marketId"])) is not None:
        params["marketId"] = market.market_id
    if "postId" in params and (post := observation.post_named(params["postId"])) is not None:
        params["postId"] = post.post_id
    return action if params == action.parameters else ParsedAction(action.action_type, params, action.reasoning)


def _find_action_object(text: str) -> tuple[tuple[dict[str, Any], tuple[int, int]] | None, str | None]:
    """The first JSON object with an action key: fenced blocks first, then any object in the prose."""
    decoder = json.JSONDecoder()
    first_error: str | None = None
    regions = [(m.start(1), m.group(1)) for m in _FENCE.finditer(text)] + [(0, text)]
    for offset, region in regions:
        for start in [i for i, ch in enumerate(region) if ch == "{"]:
            for candidate in (region[start:], _repair(region[start:])):
                try:
                    obj, length = decoder.raw_decode(candidate)
                except json.JSONDecodeError as error:
                    first_error = first_error or error.msg
                    continue
                if isinstance(obj, dict) and any(k in obj for k in _ACTION_KEYS):
                    return (obj, (offset + start, offset + start + length)), None
                break
    return None, first_error


def _repair(fragment: str) -> str:
    """The two slips models make most: trailing commas and typographic quotes."""
    return _TRAILING_COMMA.sub(r"\1", fragment.replace("\u201c", '"').replace("\u201d", '"'))


def _prose(text: str, span: tuple[int, int] | None) -> str | None:
    """The text around the JSON, fences and an `Action:` label removed: the policy's reasoning."""
    if span is not None:
        text = text[: span[0]] + text[span[1]:]
    text = re.sub(r"```(?:json|JSON)?", "", text)
    text = re.sub(r"\b(?:action|json)\s*:\s*$", "", text.strip(), flags=re.IGNORECASE | re.MULTILINE)
    text = " ".join(text.split())
    return text[:1000] or None


def _action_name(raw: Any) -> str | None:
    if not isinstance(raw, str):
        return None
    name = re.sub(r"[\s\-]+", "_", raw.strip()).upper()
    name = _ALIASES.get(name, name)
    return name if name in ACTION_TYPES else None


def number(value: Any) -> float | None:
    """A finite number from 100, "100", "$1,000.50", "250 USD"; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        cleaned = re.sub(r"[^\d.eE+-]", "", value.strip().lower().replace("usd", "").replace("dollars", "").replace("dollar", "").replace("shares", "").replace("share", ""))
        try:
            parsed = float(cleaned)
        except ValueError:
            return None
        return parsed if math.isfinite(parsed) else None
    return None


def _text(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _normalise(action_type: str, params: Mapping[str, Any]) -> dict[str, Any] | str:
    """Canonical parameters for `action_type`, or the reason they are unusable."""
    if action_type in ("BUY_SHARES", "SELL_SHARES"):
        market_id, side = _text(params.get("marketId")), _text(params.get("side"))
        if market_id is None:
            return f"{action_type} needs a marketId"
        if side is None or side.upper() not in ("YES", "NO"):
            return f"{action_type} needs side YES or NO, got {side!r}"
        out: dict[str, Any] = {"marketId": market_id, "side": side.upper()}
        if action_type == "BUY_SHARES":
            amount = number(params.get("amount", params.get("size", params.get("shares"))))
            if amount is None or amount <= 0:
                return f"BUY_SHARES needs a positive amount in dollars, got {params.get('amount')!r}"
            out["amount"] = amount
        else:
            raw = params.get("shares", params.get("amount"))
            if raw is not None and not (isinstance(raw, str) and raw.strip().lower() == "all"):
                shares = number(raw)
                if shares is None or shares <= 0:
                    return f"SELL_SHARES needs a positive number of shares (or none for all), got {raw!r}"
                out["shares"] = shares
        return out
    if action_type == "OPEN_PERP":
        ticker, side = _text(params.get("ticker")), _text(params.get("side"))
        if ticker is None:
            return "OPEN_PERP needs a ticker"
        direction = None if side is None else side.upper()
        if direction not in _LONG | _SHORT:
            return f"OPEN_PERP needs side long or short, got {side!r}"
        size = number(params.get("size", params.get("amount")))
        if size is None or size <= 0:
            return f"OPEN_PERP needs a positive size in dollars, got {params.get('size')!r}"
        return {"ticker": ticker.lstrip("$").upper(), "side": "long" if direction in _LONG else "short", "size": size}
    if action_type == "CLOSE_PERP":
        ticker = _text(params.get("ticker"))
        return {"ticker": ticker.lstrip("$").upper()} if ticker else "CLOSE_PERP needs a ticker"
    if action_type in ("CREATE_POST", "CREATE_COMMENT"):
        content = _text(params.get("content"))
        if content is None:
            return f"{action_type} needs non-empty content"
        if action_type == "CREATE_POST":
            return {"content": content}
        post_id = _text(params.get("postId"))
        return {"postId": post_id, "content": content} if post_id else "CREATE_COMMENT needs a postId"
    return {}


def _jsonable(params: Mapping[str, Any]) -> dict[str, Any]:
    """Parameters as recorded for a failed parse: JSON-safe, long strings cut."""
    def cut(value: Any) -> Any:
        if isinstance(value, str):
            return value[:200]
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        return str(value)[:200]
    return {str(k)[:50]: cut(v) for k, v in list(params.items())[:10]}


# ---------------------------------------------------------------- applying


@dataclass(frozen=True)
class Applied:
    success: bool
    error: str | None = None
    result: dict[str, Any] | None = None


def _find_market(markets: Mapping[str, PredictionMarket], market_id: str) -> PredictionMarket | None:
    return markets.get(market_id) or next(
        (m for key, m in markets.items() if key.strip().lower() == market_id.strip().lower()), None
    )


def apply_action(
    action: ParsedAction,
    account: Account,
    markets: Mapping[str, PredictionMarket],
    perps: Mapping[str, PerpMarket],
    feed: Feed,
    *,
    author: str,
    tick: int,
    moment: datetime,
) -> Applied:
    """Do `action` for `account` at the current prices; on failure nothing changes."""
    p = action.parameters
    kind = action.action_type
    if kind == "HOLD":
        return Applied(True)
    if kind in ("BUY_SHARES", "SELL_SHARES"):
        market = _find_market(markets, p["marketId"])
        if market is None:
            return Applied(False, f"unknown marketId {p['marketId']!r}")
        if market.outcome is not None:
            return Applied(False, f"market {market.market_id} is already resolved")
        side = p["side"]
        key = (market.market_id, side)
        if kind == "BUY_SHARES":
            amount = p["amount"]
            if amount < MIN_TRADE:
                return Applied(False, f"amount ${amount:.2f} is below the ${MIN_TRADE:.0f} minimum")
            if amount > account.cash + 1e-9:
                return Applied(False, f"insufficient cash: amount ${amount:,.2f} > cash ${account.cash:,.2f}")
            before = market.side_price(side)
            shares = market.buy(side, amount)
            account.cash -= amount
            holding = account.holdings.setdefault(key, Holding(market.market_id, side, 0.0, 0.0))
            holding.shares += shares
            holding.cost += amount
            return Applied(True, result={"shares": round(shares, 4), "avgPrice": round(amount / shares, 4),
                                         "priceBefore": round(before, 4), "priceAfter": round(market.side_price(side), 4)})
        holding = account.holdings.get(key)
        if holding is None or holding.shares <= 0:
            return Applied(False, f"no {side} shares of {market.market_id} to sell")
        shares = p.get("shares", holding.shares)
        if shares > holding.shares * (1 + 1e-9):
            return Applied(False, f"only {holding.shares:,.4f} {side} shares held, cannot sell {shares:,.4f}")
        shares = min(shares, holding.shares)
        proceeds = market.sell(side, shares)
        account.cash += proceeds
        holding.cost *= 1 - shares / holding.shares
        holding.shares -= shares
        if holding.shares <= 1e-9:
            del account.holdings[key]
        return Applied(True, result={"shares": round(shares, 4), "proceeds": round(proceeds, 2),
                                     "priceAfter": round(market.side_price(side), 4)})
    if kind == "OPEN_PERP":
        perp = perps.get(p["ticker"])
        if perp is None:
            return Applied(False, f"unknown ticker {p['ticker']!r}")
        size = p["size"]
        if size < MIN_TRADE:
            return Applied(False, f"size ${size:.2f} is below the ${MIN_TRADE:.0f} minimum")
        if size > account.cash + 1e-9:
            return Applied(False, f"insufficient cash: size ${size:,.2f} > cash ${account.cash:,.2f}")
        perp.trade(p["side"], size)
        quantity = size / perp.price * (1 if p["side"] == "long" else -1)
        account.cash -= size
        account.perps.append(PerpPosition(perp.ticker, p["side"], size, quantity, perp.price))
        return Applied(True, result={"entryPrice": round(perp.price, 4), "quantity": round(quantity, 6)})
    if kind == "CLOSE_PERP":
        perp = perps.get(p["ticker"])
        positions = [pos for pos in account.perps if pos.ticker == p["ticker"]]
        if perp is None or not positions:
            return Applied(False, f"no open position on {p['ticker']!r}")
        value = sum(pos.value(perp.price) for pos in positions)
        size = sum(pos.size for pos in positions)
        account.perps = [pos for pos in account.perps if pos.ticker != p["ticker"]]
        account.cash += value
        for pos in positions:  # closing trades against the book too
            perp.trade("short" if pos.side == "long" else "long", pos.size)
        return Applied(True, result={"exitPrice": round(perp.price, 4), "realizedPnL": round(value - size, 2)})
    if kind == "CREATE_POST":
        content = p["content"]
        post = feed.publish(author, content[:POST_LIMIT], tick, moment)
        return Applied(True, result={"postId": post.post_id, **({"truncated": True} if len(content) > POST_LIMIT else {})})
    if kind == "CREATE_COMMENT":
        parent = feed.get(p["postId"])
        if parent is None:
            return Applied(False, f"unknown postId {p['postId']!r}")
        comment = feed.publish(author, p["content"][:POST_LIMIT], tick, moment, reply_to=parent.post_id)
        return Applied(True, result={"commentId": comment.post_id})
    return Applied(False, f"unsupported action {kind}")
