"""Which version an agent talks to: a pure function of its id and the deployment, the same everywhere.

An agent is on the canary iff `stable_unit(salt, agent_id) < canary_fraction`. The unit is the first 8
bytes of SHA-256 over `salt + "\x1f" + agent id` (UTF-8; the salt is hex, so the pair is unambiguous),
read as a big-endian integer / 2^64 — never Python's `hash`, which is salted per process — so every
process and machine routes an agent alike; raising the fraction keeps every agent already on the
canary there; a new canary (a new salt) draws a fresh, independent set of agents. SHA-256 rather than
BLAKE2b: the app's TypeScript runtime has it (`crypto.createHash("sha256")`, no 8-byte BLAKE2b), and with
the CPU's SHA instructions it is the faster of the two here (see `benchmarks/bench_route.py`).

`DeploymentReader` is what a process that routes every agent tick holds: it reads the deployment from
the database at most once per refresh interval and routes from its cached copy in between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from hashlib import sha256

import sqlalchemy as sa

from babylon_pipeline.serving.state import Deployment, read_deployment

_SCALE = float(1 << 64)
REFRESH_SECONDS = 5.0


def stable_unit(salt: str, agent_id: str) -> float:
    """A number in [0, 1), uniform over ids, fixed for a (salt, agent id) pair."""
    digest = sha256(f"{salt}\x1f{agent_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def route(agent_id: str, deployment: Deployment) -> str | None:
    """The version serving this agent; None for the base."""
    if deployment.canary is not None and stable_unit(deployment.salt, agent_id) < deployment.canary_fraction:
        return deployment.canary
    return deployment.in_service


class DeploymentReader:
    """The deployment as of at most `refresh_seconds` ago: one database read per interval per process.

    A read that fails once a state is cached keeps routing on that state (an agent tick must not fail on a
    database blip) and is retried an interval later; the first read's failure is raised."""

    def __init__(self, engine: sa.Engine, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._deployment: Deployment | None = None
        self._read_at = 0.0
        self.reads = 0  # database reads so far, for the benchmark and the tests
        self.last_error: sa.exc.DBAPIError | None = None  # the last failed read, while the cached state is used

    def current(self) -> Deployment:
        deployment, read_at = self._deployment, self._read_at
        if deployment is not None and self._clock() - read_at < self._refresh:
            return deployment  # the hot path takes no lock
        with self._lock:  # one thread reads; the others waiting here then find it fresh
            now = self._clock()
            if self._deployment is None or now - self._read_at >= self._refresh:
                self.reads += 1
                try:
                    self._deployment = read_deployment(self._engine)
                except sa.exc.DBAPIError as error:
                    if self._deployment is None:
                        raise
                    self.last_error = error  # routing goes on with the last state read; retried next interval
                self._read_at = now
            return self._deployment

    def route(self, agent_id: str) -> str | None:
        return route(agent_id, self.current())
