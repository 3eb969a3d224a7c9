"""Group-relative advantages: GRPO's only value estimate is how a trajectory did against its siblings.

TRL's `scale_rewards="group"`: (r - group mean) / (group std + 1e-4), the std with Bessel's
correction; a lone trajectory has no siblings and gets 0. Groups may have any size.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

STD_EPSILON = 1e-4


def group_advantages(rewards: Sequence[float]) -> list[float]:
    if len(rewards) < 2:
        return [0.0] * len(rewards)
    mean = statistics.fmean(rewards)
    std = statistics.stdev(rewards)
    return [(reward - mean) / (std + STD_EPSILON) for reward in rewards]
