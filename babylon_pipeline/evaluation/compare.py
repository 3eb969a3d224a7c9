"""The verdict: a paired bootstrap interval of the mean reward difference, candidate − champion, plus guardrails.

Why a bootstrap of the mean rather than Wilcoxon's signed-rank test: the quantity people act on is
the mean outcome reward (what `benchmarkScore` holds and training maximises), and the bootstrap gives
an interval for exactly that, in reward units; Wilcoxon speaks about a pseudo-median, and drops the
many exact zero differences a benchmark of identical scenarios produces (two versions that play a
scenario alike). The resampling unit is the scenario (its per-agent rewards averaged), so the pairing
is kept: a resample takes candidate and champion of the same scenarios together. A fixed seed makes
the interval the same every time for the same differences. Percentile interval: `better` when it lies
above 0, `worse` when below, `no_difference` when it holds 0.

Guardrails guard what the mean can hide: the candidate's valid-action share may not fall, and its
failed-action share may not rise, by more than their margins relative to the champion's, whatever the
reward says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

BETTER, NO_DIFFERENCE, WORSE = "better", "no_difference", "worse"
STATISTIC = "paired bootstrap of the mean difference (percentile interval)"


@dataclass(frozen=True)
class BootstrapSettings:
    resamples: int = 10_000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self) -> None:
        if self.resamples < 1000 or not 0.5 <= self.confidence < 1:
            raise ValueError("want at least 1,000 resamples and a confidence in [0.5, 1)")


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    confidence: float
    pairs: int

    @property
    def verdict(self) -> str:
        return BETTER if self.low > 0 else WORSE if self.high < 0 else NO_DIFFERENCE


def paired_bootstrap(differences: Sequence[float], settings: BootstrapSettings = BootstrapSettings()) -> Interval:
    """The percentile interval of the mean of `differences` (one per scenario), resampled with replacement."""
    values = np.asarray(differences, dtype=np.float64)
    if values.size < 2 or not np.isfinite(values).all():
        raise ValueError(f"want at least two finite paired differences, got {values.tolist()[:5]}")
    rng = np.random.default_rng(settings.seed)
    means = values[rng.integers(0, values.size, size=(settings.resamples, values.size))].mean(axis=1)
    tail = (1 - settings.confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(mean=float(values.mean()), low=float(low), high=float(high), confidence=settings.confidence,
                    pairs=int(values.size))


@dataclass(frozen=True)
class GuardrailMargins:
    max_valid_share_drop: float = 0.05
    max_failed_share_rise: float = 0.05

    def __post_init__(self) -> None:
        if not (0 <= self.max_valid_share_drop <= 1 and 0 <= self.max_failed_share_rise <= 1):
            raise ValueError("guardrail margins are shares in [0, 1]")


@dataclass(frozen=True)
class Guardrail:
    name: str
    candidate: float
    champion: float
    margin: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def guardrails(candidate_valid: float, champion_valid: float, candidate_failed: float, champion_failed: float,
               margins: GuardrailMargins = GuardrailMargins()) -> list[Guardrail]:
    """Each share compared with the champion's; a tolerance of 1e-12 keeps equal shares equal."""
    return [
        Guardrail("valid_action_share", candidate_valid, champion_valid, margins.max_valid_share_drop,
                  candidate_valid >= champion_valid - margins.max_valid_share_drop - 1e-12),
        Guardrail("failed_action_share", candidate_failed, champion_failed, margins.max_failed_share_rise,
                  candidate_failed <= champion_failed + margins.max_failed_share_rise + 1e-12),
    ]
