"""Which version an agent talks to: a pure function of its id and the deployment, the same everywhere.

An agent is on the canary iff `stable_unit(salt, agent_id) < canary_fraction`. The unit comes from
BLAKE2b of the canary's salt and the id (never Python's `hash`, which is salted per process), so every
process and machine routes an agent alike; raising the fraction keeps every agent already on the
canary there; a new canary (a new salt) draws a fresh, independent set of agents.

`DeploymentReader` is what a process that routes every agent tick holds: it reads the deployment from
the database at most once per refresh interval and routes from its cached copy in between.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from hashlib import blake2b

import sqlalchemy as sa

from babylon_pipeline.serving.state import Deployment, read_deployment

_SCALE = float(1 << 64)
REFRESH_SECONDS = 5.0


def stable_unit(salt: str, agent_id: str) -> float:
    """A number in [0, 1), uniform over ids, fixed for a (salt, agent id) pair."""
    digest = blake2b(agent_id.encode("utf-8"), digest_size=8, key=salt.encode("utf-8")[:64]).digest()
    return int.from_bytes(digest, "big") / _SCALE


def route(agent_id: str, deployment: Deployment) -> str | None:
    """The version serving this agent; None for the base."""
    if deployment.canary is not None and stable_unit(deployment.salt, agent_id) < deployment.canary_fraction:
        return deployment.canary
    return deployment.in_service


class DeploymentReader:
    """The deployment as of at most `refresh_seconds` ago: one database read per interval per process."""

    def __init__(self, engine: sa.Engine, refresh_seconds: float = REFRESH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._refresh = refresh_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._deployment: Deployment | None = None
        self._read_at = 0.0
        self.reads = 0  # database reads so far, for the benchmark and the tests

    def current(self) -> Deployment:
        with self._lock:
            now = self._clock()
            if self._deployment is None or now - self._read_at >= self._refresh:
                self._deployment = read_deployment(self._engine)
                self._read_at = now
                self.reads += 1
            return self._deployment

    def route(self, agent_id: str) -> str | None:
        return route(agent_id, self.current())
