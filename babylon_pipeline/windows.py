"""Window ids: the UTC hour a trajectory belongs to, spelled `YYYY-MM-DDTHH:00`.

Every conversion between window ids, timestamps and partition keys lives here, so that no
other module formats an hour by hand (the app's own hour-boundary bugs came from doing that).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

WINDOW = timedelta(hours=1)
_WINDOW_ID = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):00")  # ASCII digits: `\d` takes any script's


class InvalidWindowId(ValueError):
    """A string that is not a canonical window id."""


def to_utc_naive(moment: datetime) -> datetime:
    """Naive datetimes are UTC already (the database's convention); aware ones are converted."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def window_start(window_id: str) -> datetime:
    """Start of the window as a naive UTC datetime; rejects anything not canonical."""
    match = _WINDOW_ID.fullmatch(window_id) if isinstance(window_id, str) else None
    if match is None:
        raise InvalidWindowId(f"not a window id (want YYYY-MM-DDTHH:00): {window_id!r}")
    try:
        return datetime(*(int(part) for part in match.groups()))
    except ValueError as error:
        raise InvalidWindowId(f"not a window id: {window_id!r} ({error})") from None


def is_window_id(value: object) -> bool:
    try:
        window_start(value)  # type: ignore[arg-type]
    except InvalidWindowId:
        return False
    return True


def window_of(moment: datetime) -> str:
    """The window a moment falls in, whatever the process's local time zone."""
    return to_utc_naive(moment).strftime("%Y-%m-%dT%H:00")


def window_of_epoch_ms(epoch_ms: float) -> str:
    return window_of(datetime.fromtimestamp(epoch_ms / 1000, tz=UTC))


def window_bounds(window_id: str) -> tuple[datetime, datetime]:
    start = window_start(window_id)
    return start, start + WINDOW


def windows_between(first: str, last: str) -> Iterator[str]:
    """Every window from `first` to `last`, both included."""
    moment, end = window_start(first), window_start(last)
    while moment <= end:
        yield window_of(moment)
        moment += WINDOW


def parse_moment(text: str) -> datetime:
    """A user-given instant (`2025-11-15T10:00`, optionally with offset); naive means UTC."""
    try:
        return to_utc_naive(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        raise InvalidWindowId(f"not a date and time: {text!r}") from None
