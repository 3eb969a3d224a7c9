"""The two kinds of market an agent trades: binary prediction markets and perpetual tickers.

A prediction market prices YES shares with Hanson's LMSR (liquidity `b`): a trade moves the price
by an amount that depends only on its size, and the market maker can always quote. The hidden
`true_probability` decides the resolution; between ticks, outside traders pull the price part of
the way towards it, so an agent who knows better gains in marked-to-market terms before the end.

A perpetual follows a random walk with a hidden drift per tick; agents' trades add a small
price impact. Both keep their randomness in streams of their own (see `determinism`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from babylon_pipeline.sim.determinism import snowflake

Side = Literal["YES", "NO"]
PerpSide = Literal["long", "short"]

PRICE_FLOOR, PRICE_CEILING = 0.02, 0.98


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass
class PredictionMarket:
    market_id: str
    question: str
    true_probability: float  # hidden from agents
    liquidity: float  # LMSR b, in dollars
    price: float  # current YES price = implied probability
    start_price: float
    volume: float = 0.0
    outcome: Side | None = None

    def side_price(self, side: Side) -> float:
        return self.price if side == "YES" else 1.0 - self.price

    def _set_side_price(self, side: Side, side_price: float) -> None:
        self.price = side_price if side == "YES" else 1.0 - side_price

    def buy(self, side: Side, amount: float) -> float:
        """Spend `amount` dollars on `side`; returns the shares bought and moves the price.

        LMSR with the other side's quantity fixed: shares = b·ln((e^(a/b) − (1 − p)) / p), and
        the side's new price is 1 − (1 − p)·e^(−a/b).
        """
        b, p = self.liquidity, self.side_price(side)
        growth = math.exp(amount / b)
        shares = b * math.log((growth - (1.0 - p)) / p)
        self._set_side_price(side, 1.0 - (1.0 - p) / growth)
        self.volume += amount
        return shares

    def sell(self, side: Side, shares: float) -> float:
        """Sell `shares` of `side` back to the market maker; returns the proceeds in dollars."""
        b, p = self.liquidity, self.side_price(side)
        shrink = math.exp(-shares / b)
        rest = p * shrink + (1.0 - p)
        proceeds = -b * math.log(rest)
        self._set_side_price(side, p * shrink / rest)
        self.volume += proceeds
        return proceeds

    def outside_flow(self, rng: random.Random, pull: float, noise: float) -> None:
        """Traders outside the scenario move the price `pull` of the way to the truth (in log-odds)."""
        current = _logit(min(max(self.price, PRICE_FLOOR), PRICE_CEILING))
        target = _logit(self.true_probability)
        moved = current + pull * (target - current) + rng.gauss(0.0, noise)
        self.price = min(max(_sigmoid(moved), PRICE_FLOOR), PRICE_CEILING)
        self.volume += rng.uniform(200.0, 1500.0)

    def resolve(self, rng: random.Random) -> Side:
        """YES with the hidden probability; drawn once, from the scenario's resolution stream."""
        if self.outcome is None:
            self.outcome = "YES" if rng.random() < self.true_probability else "NO"
        return self.outcome

    def payout(self, side: Side) -> float:
        """What one share of `side` is worth now: 1 or 0 once resolved, else the price."""
        if self.outcome is None:
            return self.side_price(side)
        return 1.0 if side == self.outcome else 0.0


@dataclass
class PerpMarket:
    ticker: str
    name: str
    drift: float  # hidden: mean log-return per tick
    volatility: float  # standard deviation of the log-return per tick
    price: float
    start_price: float
    depth: float  # dollars of net flow that move the price by e (×2.718)
    volume: float = 0.0

    def trade(self, side: PerpSide, size: float) -> None:
        """An agent's order moves the price a little in its direction."""
        direction = 1.0 if side == "long" else -1.0
        self.price *= math.exp(direction * size / self.depth)
        self.volume += size

    def step(self, rng: random.Random) -> None:
        self.price *= math.exp(self.drift + rng.gauss(0.0, self.volatility))
        self.volume += rng.uniform(5_000.0, 40_000.0)

    @property
    def change(self) -> float:
        return self.price / self.start_price - 1.0


_SUBJECTS = (
    "TeslAI", "OpenAGI", "Googol", "Amazin", "Metaverse Inc", "Nvidiot", "Microsloth", "Appletree",
    "ByteDunce", "SpaceZ", "Coinbased", "Palantear", "Snapcrap", "Rivulet Motors", "Stripey",
)
_EVENTS = (
    "announce a new flagship model",
    "post a quarterly revenue beat",
    "get a formal antitrust complaint",
    "confirm layoffs",
    "ship its delayed product",
    "be mentioned in a presidential speech",
    "trend at number one on the feed",
    "lose its CEO",
    "settle the pending lawsuit",
    "raise a new funding round",
    "suffer a major outage",
    "open-source its core engine",
)
_TICKER_NAMES = (
    "Orbital", "Quantum", "Helix", "Nova", "Volt", "Zeta", "Kryo", "Lumen", "Axon", "Pylon",
    "Cobalt", "Nimbus", "Vertex", "Argent", "Solace", "Tundra",
)
_TICKER_KINDS = ("Dynamics", "Labs", "Systems", "Holdings", "Robotics", "Energy", "Networks", "Bio")


def new_prediction_markets(
    rng: random.Random, id_rng: random.Random, moment: datetime, count: int, taken: set[str] | None = None
) -> list[PredictionMarket]:
    """`count` markets with distinct questions; the price starts biased towards 0.5 and noisy.

    Ids are not in `taken` (the window's markets so far, of any seed: a market id names one market);
    `taken` is updated."""
    taken = set() if taken is None else taken
    markets: list[PredictionMarket] = []
    questions: set[str] = set()
    while len(markets) < count:
        question = f"Will {rng.choice(_SUBJECTS)} {rng.choice(_EVENTS)} before the hour ends?"
        if question in questions:
            continue
        questions.add(question)
        truth = rng.uniform(0.06, 0.94)
        start = min(max(0.5 + 0.35 * (truth - 0.5) + rng.gauss(0.0, 0.1), 0.05), 0.95)
        market_id = snowflake(id_rng, moment)
        while market_id in taken:
            market_id = snowflake(id_rng, moment)
        taken.add(market_id)
        markets.append(
            PredictionMarket(
                market_id=market_id,
                question=question,
                true_probability=round(truth, 4),
                liquidity=round(rng.uniform(1500.0, 3000.0), 2),
                price=round(start, 4),
                start_price=round(start, 4),
            )
        )
    return markets


def new_perp_markets(rng: random.Random, count: int, taken: set[str]) -> list[PerpMarket]:
    """`count` tickers not in `taken` (a ticker has one move per window, whichever seed made it); `taken` is updated."""
    perps: list[PerpMarket] = []
    while len(perps) < count:
        ticker = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(rng.choice((3, 4, 4, 5))))
        if ticker in taken:
            continue
        taken.add(ticker)
        price = round(math.exp(rng.uniform(math.log(5.0), math.log(500.0))), 2)
        perps.append(
            PerpMarket(
                ticker=ticker,
                name=f"{rng.choice(_TICKER_NAMES)} {rng.choice(_TICKER_KINDS)}",
                drift=rng.choice((-1.0, 1.0)) * rng.uniform(0.002, 0.014),
                volatility=rng.uniform(0.006, 0.016),
                price=price,
                start_price=price,
                depth=rng.uniform(150_000.0, 400_000.0),
            )
        )
    return perps
