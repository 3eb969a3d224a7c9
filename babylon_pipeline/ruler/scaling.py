"""Min-max scaling within a group: the shared way outcomes are put on [0, 1]."""

from __future__ import annotations

import math
from collections.abc import Mapping


def scale_within_group(values: Mapping[str, float]) -> dict[str, float]:
    """The best value becomes 1 and the worst 0, linearly between; all equal gives 0.5 each.

    Scale-free by design (dollars of P&L and 0/1 correctness scale alike), so even tiny differences
    span the whole range: that matches GRPO, which standardises rewards within a group anyway."""
    if not values:
        return {}
    if not all(math.isfinite(v) for v in values.values()):
        raise ValueError(f"non-finite values cannot be scaled: {dict(values)}")
    low, high = min(values.values()), max(values.values())
    if high == low:
        return {key: 0.5 for key in values}
    return {key: (value - low) / (high - low) for key, value in values.items()}
