"""Deliver an alert once per incident, to every channel, within a bounded time, never raising.

Each channel is tried with exponential backoff (`RetryPolicy`) while the whole send stays inside
`deadline_s`: a webhook that hangs or refuses costs the caller at most that long, once. A channel
that failed every attempt is then skipped by this process for `breaker_s` (a breaker, logged when it
opens and when the channel works again), so a tick raising several alerts against a dead webhook
does not wait for it several times. The ledger makes the alert one per incident across processes;
when the ledger itself is unreachable the alert is sent anyway (a duplicate beats a lost alert).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from babylon_pipeline.alerts.alert import Alert
from babylon_pipeline.alerts.channels import Channel, DeliveryFailed, Log
from babylon_pipeline.alerts.ledger import AlertLedger, Claim


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    """Tries per channel and send."""
    first_backoff_s: float = 0.5
    """Wait after the first failure; doubled after each next one, up to `max_backoff_s`."""
    max_backoff_s: float = 4.0
    attempt_timeout_s: float = 5.0
    deadline_s: float = 15.0
    """The most one `send` takes, whatever the channels do."""
    breaker_s: float = 300.0
    """How long this process skips a channel that failed a whole send."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or min(self.first_backoff_s, self.max_backoff_s, self.breaker_s) < 0 \
                or min(self.attempt_timeout_s, self.deadline_s) <= 0:
            raise ValueError(f"invalid retry policy: {self}")


class Breaker:
    """Per process: channel → when to try it again. Thread-safe (sensors and runs share a process)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._open_until: dict[str, float] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def is_open(self, channel: Channel) -> bool:
        with self._lock:
            return self._clock() < self._open_until.get(_identity(channel), float("-inf"))

    def trip(self, channel: Channel, seconds: float) -> bool:
        """Open it; True when it was closed (the failure is news and worth a log line)."""
        with self._lock:
            news = _identity(channel) not in self._open_until
            self._open_until[_identity(channel)] = self._clock() + seconds
            return news

    def reset(self, channel: Channel) -> bool:
        """Close it; True when it had been open (worth saying the channel is back)."""
        with self._lock:
            return self._open_until.pop(_identity(channel), None) is not None


PROCESS_BREAKER = Breaker()


def _identity(channel: Channel) -> str:
    """The channel's full settings (secrets included, which `repr` leaves out), hashed: two webhooks on one
    host are two channels."""
    return hashlib.sha256(f"{type(channel).__name__}{vars(channel)!r}".encode()).hexdigest()


class Notifier:
    def __init__(
        self,
        channels: Sequence[Channel],
        log: Log,
        ledger: AlertLedger | None = None,
        policy: RetryPolicy = RetryPolicy(),
        breaker: Breaker = PROCESS_BREAKER,
    ) -> None:
        self.channels = tuple(channels)
        self.log = log
        self.ledger = ledger
        self.policy = policy
        self.breaker = breaker

    def send(self, alert: Alert) -> bool:
        """True when every channel has the alert: now, from an earlier send of its key, or from another
        process delivering it right now. Never raises."""
        try:
            return self._send(alert)
        except Exception as error:  # an alert must never fail what raised it
            self.log.warning(f"alert {alert.key}: not sent ({type(error).__name__}: {error})")
            return False

    def _send(self, alert: Alert) -> bool:
        claim, ledgered = self._claim(alert)
        if claim is None:
            self.log.debug(f"alert {alert.key}: already sent (or being sent)")
            return True
        channels = [c for c in self.channels if c.name in claim.missing]
        results = _run(self._deliver_all(alert, channels))
        delivered = [c.name for c, failure in zip(channels, results, strict=True) if failure is None]
        if self.ledger is not None and ledgered:
            try:
                self.ledger.settle(alert, claim, delivered, _now())
            except Exception as error:
                self.log.warning(f"alert {alert.key}: delivered, but not recorded ({type(error).__name__}: {error})")
        return len(delivered) == len(channels)

    def _claim(self, alert: Alert) -> tuple[Claim | None, bool]:
        """The ledger's claim, and whether there is one to settle (not without a ledger, or when it failed)."""
        names = tuple(c.name for c in self.channels)
        if self.ledger is None:
            return Claim(missing=names, version=None, done=()), False
        try:
            return self.ledger.claim(alert, names, _now()), True
        except Exception as error:
            self.log.warning(f"alert {alert.key}: the ledger cannot be read ({type(error).__name__}: {error}); "
                             f"sending without deduplication")
            return Claim(missing=names, version=None, done=()), False

    async def _deliver_all(self, alert: Alert, channels: Sequence[Channel]) -> list[str | None]:
        deadline = time.monotonic() + self.policy.deadline_s
        return list(await asyncio.gather(*(self._deliver(alert, c, deadline) for c in channels)))

    async def _deliver(self, alert: Alert, channel: Channel, deadline: float) -> str | None:
        """None when delivered; else why not (logged here, once, when the channel's breaker opens)."""
        if self.breaker.is_open(channel):
            return f"{channel.describe()} skipped: it failed recently"
        try:
            failure = await asyncio.wait_for(self._attempts(alert, channel, deadline), deadline - time.monotonic())
        except TimeoutError:
            failure = f"{channel.describe()}: no delivery within {self.policy.deadline_s:g} s"
        if failure is None:
            if self.breaker.reset(channel):
                self.log.info(f"{channel.describe()} delivers alerts again")
            return None
        if self.breaker.trip(channel, self.policy.breaker_s):
            self.log.warning(f"alert {alert.key} not delivered: {failure}; this process skips "
                             f"{channel.describe()} for {self.policy.breaker_s:g} s (logged once)")
        return failure

    async def _attempts(self, alert: Alert, channel: Channel, deadline: float) -> str | None:
        backoff, failure = self.policy.first_backoff_s, "no attempt made"
        for attempt in range(1, self.policy.attempts + 1):
            timeout = min(self.policy.attempt_timeout_s, deadline - time.monotonic())
            try:
                await asyncio.wait_for(channel.deliver(alert, timeout), timeout)
                return None
            except TimeoutError:
                failure, retry = f"{channel.describe()}: no answer within {timeout:.1f} s", True
            except DeliveryFailed as error:
                failure, retry = str(error), error.retry
            except Exception as error:  # a channel's bug: not retried, and named without its text (a URL?)
                failure, retry = f"{channel.describe()}: {type(error).__name__}", False
            failure = f"{failure} (attempt {attempt} of {self.policy.attempts})"
            if not retry or attempt == self.policy.attempts:
                break
            await asyncio.sleep(min(backoff, max(0.0, deadline - time.monotonic())))
            backoff = min(backoff * 2, self.policy.max_backoff_s)
        return failure


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _run(coroutine):  # type: ignore[no-untyped-def]
    """Run to completion on a loop of its own; from a thread of its own when the caller's thread has
    a loop running. The loop is closed without waiting for stray executor threads (a hung DNS lookup)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coroutine)
        finally:
            loop.close()
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_run, coroutine).result()
