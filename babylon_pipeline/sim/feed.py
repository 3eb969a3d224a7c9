"""The social feed: posts whose text carries noisy signals about the markets.

NPC accounts are fixed for a whole simulation (by seed), each with a hidden reliability: the
chance that a post of theirs tells the truth. Reliable ones exist, and so do confident liars, so a
policy that learns whom to believe across windows earns more. A post's `claim` is what its text
says in structured form (subject, direction, probability); it is never rendered, only the text is.
Agents' own posts and comments join the same feed and carry no claim.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from babylon_pipeline.sim.determinism import snowflake
from babylon_pipeline.sim.markets import PerpMarket, PredictionMarket


@dataclass(frozen=True)
class Source:
    """An NPC account; `reliability` is hidden from agents."""

    handle: str
    reliability: float


@dataclass(frozen=True)
class Claim:
    kind: Literal["market", "perp"]
    subject: str  # market id or ticker
    direction: int  # +1: YES / long, -1: NO / short
    probability: float | None = None  # a market claim's stated probability of YES


@dataclass(frozen=True)
class Post:
    post_id: str
    handle: str  # "P7": the feed's 7th post, what agents see and may answer with instead of the id
    author: str
    content: str
    tick: int
    claim: Claim | None = None
    reply_to: str | None = None


@dataclass
class Feed:
    """One scenario's posts, oldest first."""

    id_rng: random.Random
    posts: list[Post] = field(default_factory=list)

    def publish(self, author: str, content: str, tick: int, moment: datetime, *,
                claim: Claim | None = None, reply_to: str | None = None) -> Post:
        post = Post(snowflake(self.id_rng, moment), f"P{len(self.posts) + 1}", author, content, tick, claim, reply_to)
        self.posts.append(post)
        return post

    def get(self, post_id: str) -> Post | None:
        return next((post for post in self.posts if post.post_id == post_id), None)

    def recent(self, limit: int) -> list[Post]:
        """The newest `limit` posts, newest first."""
        return self.posts[::-1][:limit]


_HANDLES = (
    "ana_quant", "the_real_oracle", "moonboy_9000", "deep_value_dan", "leaks_daily", "grumpy_macro",
    "insider_ish", "polly_markets", "chartwizard", "cassandra_calls", "vol_surfer", "newsbot_prime",
    "hodl_hannah", "fade_the_crowd", "bayes_or_bust", "ticker_tina",
)


def npc_roster(rng: random.Random, count: int = 12) -> tuple[Source, ...]:
    """A third reliable (0.8–0.95), a third middling (0.55–0.7), a third misleading (0.2–0.45)."""
    handles = rng.sample(_HANDLES, count)
    tiers = ((0.8, 0.95), (0.55, 0.7), (0.2, 0.45))
    return tuple(
        Source(handle, round(rng.uniform(*tiers[i % 3]), 3)) for i, handle in enumerate(handles)
    )


_MARKET_TEMPLATES = (
    "{question} I'd put it at {pct}%. The market is {mood}.",
    "Hearing things. \"{question}\" is more like {pct}% than people think.",
    "Loaded up on {side} for \"{question}\" My number: {pct}%.",
    "Source close to the story says {verdict} on \"{question}\" Call it {pct}%.",
    "Thread: ran the numbers on \"{question}\" and got {pct}%. {side} is the trade.",
)
_PERP_TEMPLATES = (
    "${ticker} is going to {move} this hour. {sign}{pct}% easy.",
    "{position} ${ticker}. {reason}",
    "${ticker} looks {tone} — expect {sign}{pct}% by the close.",
    "Flows on ${ticker} are {flow}. I'm {position_lower}.",
)


def market_claim_text(rng: random.Random, market: PredictionMarket, probability: float) -> str:
    yes = probability >= 0.5
    mispriced = probability > market.price
    return rng.choice(_MARKET_TEMPLATES).format(
        question=market.question,
        pct=round(probability * 100),
        mood="asleep" if mispriced else "way too excited",
        side="YES" if yes else "NO",
        verdict="it's happening" if yes else "it's not happening",
    )


def perp_claim_text(rng: random.Random, perp: PerpMarket, direction: int, magnitude: float) -> str:
    up = direction > 0
    return rng.choice(_PERP_TEMPLATES).format(
        ticker=perp.ticker,
        move="rip" if up else "bleed",
        sign="+" if up else "-",
        pct=f"{magnitude * 100:.1f}",
        position="Going long" if up else "Shorting",
        position_lower="long" if up else "short",
        reason="Demand is real." if up else "The numbers don't add up.",
        tone="strong" if up else "heavy",
        flow="all bids" if up else "all offers",
    )


def npc_posts(
    rng: random.Random,
    roster: Sequence[Source],
    markets: Sequence[PredictionMarket],
    perps: Sequence[PerpMarket],
    feed: Feed,
    tick: int,
    moment: datetime,
) -> list[Post]:
    """This tick's NPC posts: each is truthful with its author's reliability, else inverted."""
    posts: list[Post] = []
    subjects: list[PredictionMarket | PerpMarket] = [*markets, *perps]
    for _ in range(rng.choice((2, 3, 3, 4))):
        source = rng.choice(roster)
        subject = rng.choice(subjects)
        truthful = rng.random() < source.reliability
        if isinstance(subject, PredictionMarket):
            believed = subject.true_probability if truthful else 1.0 - subject.true_probability
            probability = round(min(max(believed + rng.gauss(0.0, 0.06), 0.03), 0.97), 2)
            claim = Claim("market", subject.market_id, 1 if probability >= 0.5 else -1, probability)
            text = market_claim_text(rng, subject, probability)
        else:
            direction = (1 if subject.drift > 0 else -1) * (1 if truthful else -1)
            magnitude = abs(subject.drift) * 5 + abs(rng.gauss(0.0, 0.01))
            claim = Claim("perp", subject.ticker, direction)
            text = perp_claim_text(rng, subject, direction, magnitude)
        posts.append(feed.publish(source.handle, text, tick, moment, claim=claim))
    return posts
