"""The log-prob gap of a whole sample set under a model, without gradients: before/after a run, held-out checks."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from babylon_pipeline.training.collate import collate
from babylon_pipeline.training.device import Runtime
from babylon_pipeline.training.gap import GapTally
from babylon_pipeline.training.loss import completion_logps
from babylon_pipeline.training.samples import Sample


def measure_logprob_gap(model: torch.nn.Module, samples: Sequence[Sample], pad_id: int, runtime: Runtime,
                        batch_size: int) -> float | None:
    tally = GapTally()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(samples), batch_size):
                batch = collate(samples[start : start + batch_size], pad_id, runtime.device)
                with runtime.autocast():
                    logps = completion_logps(model, batch)
                tally.add(logps, batch.completion_mask, batch.advantages)
    finally:
        model.train(was_training)
    return tally.value
