"""The log-prob gap: what GRPO is for, measured directly.

Mean per-token log-prob of the completions that did better than their group (advantage > 0)
minus that of those that did worse (advantage < 0). Training should widen it; with ratio ≡ 1 the
loss cannot show progress, this can. Token-weighted, accumulated over as many micro-batches as
needed; None when one side is empty.
"""

from __future__ import annotations

import torch


class GapTally:
    def __init__(self) -> None:
        self.sums = [0.0, 0.0]  # [above, below]
        self.counts = [0.0, 0.0]

    def add(self, logps: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> None:
        weights = mask.to(torch.float32)
        logps = logps.detach().to(torch.float32)
        for side, rows in enumerate((advantages > 0, advantages < 0)):
            self.sums[side] += float((logps[rows] * weights[rows]).sum())
            self.counts[side] += float(weights[rows].sum())

    @property
    def value(self) -> float | None:
        if not all(self.counts):
            return None
        return self.sums[0] / self.counts[0] - self.sums[1] / self.counts[1]


def logprob_gap(logps: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor) -> float | None:
    tally = GapTally()
    tally.add(logps, mask, advantages)
    return tally.value
