"""The benchmark suite: held-out simulator scenarios, defined once and stored under its name with its hash.

A scenario is one simulated hour of `agents` agents over `ticks` ticks, everything in it fixed by its
seed, taken from the range reserved for evaluation (`sim.seeds`), so no training window ever held
it. The sampling settings belong to the definition too: a version is only comparable with another
measured under the same conditions. The definition is written to `benchmarks/{suite}/definition.json`
the first time the suite is used; afterwards a definition that differs under the same name is refused
(name a new suite instead), so every version's score is measured on the very same scenarios.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from babylon_pipeline.sim.seeds import EVALUATION_SEEDS
from babylon_pipeline.storage import ObjectNotFound, ObjectStore
from babylon_pipeline.storage.keys import benchmark_key
from babylon_pipeline.windows import window_start

DEFINITION = "definition.json"
SCENARIO_WINDOW = "2025-01-01T00:00"  # every scenario plays this hour, each in its own throw-away store
MIN_SCENARIOS = 5  # fewer paired differences give a bootstrap interval too narrow to trust


class SuiteChanged(ValueError):
    """The suite's name is stored with another definition: measuring on it would break comparability."""


@dataclass(frozen=True)
class SuiteDefinition:
    name: str
    scenarios: int
    agents: int
    ticks: int
    first_seed: int = EVALUATION_SEEDS.start
    temperature: float = 0.7
    max_new_tokens: int = 96
    window: str = SCENARIO_WINDOW

    def __post_init__(self) -> None:
        if self.scenarios < MIN_SCENARIOS or self.agents < 1 or self.ticks < 1:
            raise ValueError(f"a suite needs at least {MIN_SCENARIOS} scenarios and a positive number of agents and "
                             f"ticks, got {self.scenarios} scenarios, {self.agents} agents, {self.ticks} ticks")
        last = self.first_seed + self.scenarios - 1
        if self.first_seed not in EVALUATION_SEEDS or last not in EVALUATION_SEEDS:
            raise ValueError(f"seeds {self.first_seed}..{last} leave the range reserved for evaluation "
                             f"({EVALUATION_SEEDS.start}..{EVALUATION_SEEDS.stop - 1})")
        if not self.temperature > 0 or self.max_new_tokens < 1:
            raise ValueError("temperature must be > 0 and max_new_tokens positive")
        window_start(self.window)  # raises on a malformed window id

    @property
    def seeds(self) -> list[int]:
        return [self.first_seed + k for k in range(self.scenarios)]

    @property
    def start(self) -> datetime:
        return window_start(self.window)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest(self) -> str:
        """sha256 of the canonical JSON of the definition: equal definitions, equal hashes."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode()).hexdigest()


def ensure_suite(store: ObjectStore, definition: SuiteDefinition) -> str:
    """The suite's hash, after storing its definition if this is its first use; `SuiteChanged` if another is stored.

    Created with `put_if_unchanged(..., None)`: two evaluations starting together cannot both write one."""
    key = benchmark_key(definition.name, DEFINITION)
    digest = definition.digest()
    document = {"definition": definition.as_dict(), "hash": digest, "seeds": definition.seeds}
    data = json.dumps(document, indent=1, sort_keys=True).encode()
    if not store.put_if_unchanged(key, data, None):
        stored = _stored(store, key)
        if stored.get("hash") != digest:
            changed = sorted(k for k, v in definition.as_dict().items() if stored.get("definition", {}).get(k) != v)
            raise SuiteChanged(f"benchmark suite {definition.name!r} is stored with another definition (hash "
                               f"{str(stored.get('hash'))[:12]}, this one {digest[:12]}; differs in "
                               f"{', '.join(changed) or 'nothing readable'}): every version must be measured on the "
                               "same scenarios, so name a new suite for a new definition")
    return digest


def read_suite(store: ObjectStore, name: str) -> SuiteDefinition:
    return SuiteDefinition(**_stored(store, benchmark_key(name, DEFINITION))["definition"])


def _stored(store: ObjectStore, key: str) -> dict[str, Any]:
    try:
        return json.loads(store.get_bytes(key))
    except ObjectNotFound:  # deleted between the refused create and this read
        return {}

