"""Seeds reserved for the evaluation benchmark, so no model is measured on scenarios it was trained on.

Everything a simulation does follows from its seed, so a window simulated with seed S holds the
very markets, feed and resolutions the benchmark's scenario with seed S would play. Training data,
the demo and `babylon simulate` come from `simulate`, which refuses these seeds; only the
evaluation asks for them (`simulate(..., evaluation=True)`). The range sits far above the small
seeds people type (7, 42, 2025) and above the embedded base's held-out offset (seed + 1,000).
"""

from __future__ import annotations

EVALUATION_SEEDS = range(900_000_000, 1_000_000_000)


class ReservedSeed(ValueError):
    """A simulation that writes windows asked for a seed of the evaluation benchmark."""


def refuse_reserved_seed(seed: int) -> None:
    if seed in EVALUATION_SEEDS:
        raise ReservedSeed(f"seed {seed} is reserved for the evaluation benchmark (seeds {EVALUATION_SEEDS.start:,} to "
                           f"{EVALUATION_SEEDS.stop - 1:,} are never used for training data): pick another --seed")
