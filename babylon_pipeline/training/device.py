"""Where the trainer computes: the best device this process can see, chosen at run time.

CUDA (the production GPU pod) loads the base in bfloat16 when the GPU supports it and runs the
forward under bf16 autocast; PEFT keeps the LoRA weights (and so AdamW's state) in float32, and the
loss takes its log-softmax in float32. That path cannot be exercised on this project's CPU-only CI:
it is kept to these few lines on purpose. MPS and CPU train in float32.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype  # the base model's weights

    def autocast(self) -> AbstractContextManager:
        if self.dtype == torch.bfloat16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def pick_runtime() -> Runtime:
    if torch.cuda.is_available():
        return Runtime(torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32)
    if torch.backends.mps.is_available():
        return Runtime(torch.device("mps"), torch.float32)
    return Runtime(torch.device("cpu"), torch.float32)
