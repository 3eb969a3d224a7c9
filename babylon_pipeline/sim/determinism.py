"""Everything random in a simulation comes from its seed: random streams, ids and the clock.

Each concern draws from its own stream keyed by (seed, labels), so what agents do never shifts
the world's own randomness: the agents of one scenario face the same markets, posts and
resolutions whatever they trade, and the same seed writes the same bytes to the database.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime

from babylon_pipeline.windows import to_utc_naive

SNOWFLAKE_EPOCH = datetime(2024, 1, 1)
"""Market and post ids look like the app's decimal snowflakes: milliseconds since this, then 22 random bits."""


def stream(seed: int, *labels: object) -> random.Random:
    """An independent generator for one concern; string seeding hashes with SHA-512, so it is
    stable across processes and Python's hash randomisation."""
    return random.Random(":".join(["babylon-lite", str(seed), *(str(label) for label in labels)]))


def snowflake(rng: random.Random, moment: datetime) -> str:
    """A decimal snowflake id for `moment`, its low bits from `rng`."""
    millis = int((to_utc_naive(moment) - SNOWFLAKE_EPOCH).total_seconds() * 1000)
    return str((max(millis, 0) << 22) | rng.getrandbits(22))


class SeededIds:
    """The recorder's `ids` callable: 32 hex digits like `uuid4().hex`, from the seed and the first window
    (so a later simulation with the same seed, continuing after the first, does not repeat its ids)."""

    def __init__(self, seed: int, first_window: str) -> None:
        self._rng = stream(seed, "ids", first_window)

    def __call__(self) -> str:
        return f"{self._rng.getrandbits(128):032x}"


class SimClock:
    """The recorder's `clock` callable: simulated time, set by the runner before each recorded event."""

    def __init__(self, start: datetime) -> None:
        self._now = to_utc_naive(start)

    def set(self, moment: datetime) -> None:
        self._now = to_utc_naive(moment)

    def __call__(self) -> datetime:
        return self._now.replace(tzinfo=UTC)
