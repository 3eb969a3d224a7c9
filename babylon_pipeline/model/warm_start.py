"""The supervised warm start: TRL's `SFTTrainer` teaches a fresh base the game's answer format.

Loss on the assistant tokens only (`assistant_only_loss`, read off the chat template's
`{% generation %}` markers); prompts longer than `max_length` keep their end, where the
observation is, as the sampler and the GRPO trainer do (TRL 1.16's `truncation_mode="keep_end"`,
deprecated for TRL 2: then truncate the prompts here before handing them over). Nothing is saved by the trainer itself
(`save_strategy="no"`): the caller saves the weights once, as safetensors.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase, PrinterCallback, TrainerCallback
from transformers.utils import logging as transformers_logging

from babylon_pipeline.model.transcripts import Turn
from babylon_pipeline.training.device import pick_runtime

Progress = Callable[[int, int, float], None]  # step, total steps, loss


@dataclass(frozen=True)
class WarmStartSettings:
    steps: int = 150
    batch_size: int = 8
    learning_rate: float = 2e-3  # a from-scratch model of a few million parameters takes a large one
    max_length: int = 1024
    seed: int = 0


@dataclass(frozen=True)
class WarmStartResult:
    steps: int
    first_loss: float
    final_loss: float  # mean of the last logged interval


class _ReportLoss(TrainerCallback):
    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.losses: list[float] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
            if self.progress is not None:
                self.progress(state.global_step, state.max_steps, float(logs["loss"]))


def warm_start(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, turns: Sequence[Turn],
               settings: WarmStartSettings, progress: Progress | None = None) -> WarmStartResult:
    from datasets import Dataset  # TRL's own dependency; imported here so the orchestrator never pays for it
    from datasets.utils.logging import disable_progress_bar as disable_dataset_progress_bars
    from trl import SFTConfig, SFTTrainer

    transformers_logging.disable_progress_bar()
    disable_dataset_progress_bars()  # bars would flood the run's log
    report = _ReportLoss(progress)
    runtime = pick_runtime()
    with tempfile.TemporaryDirectory(prefix="babylon-sft-") as scratch:
        config = SFTConfig(
            output_dir=scratch,
            max_steps=settings.steps,
            per_device_train_batch_size=settings.batch_size,
            learning_rate=settings.learning_rate,
            lr_scheduler_type="cosine",
            warmup_steps=max(1, settings.steps // 20),
            weight_decay=0.0,
            assistant_only_loss=True,
            max_length=settings.max_length,
            truncation_mode="keep_end",
            logging_steps=max(1, settings.steps // 15),
            save_strategy="no",
            report_to="none",
            seed=settings.seed,
            disable_tqdm=True,
            dataloader_num_workers=0,
            use_cpu=runtime.device.type == "cpu",
            bf16=runtime.dtype == torch.bfloat16,  # TRL defaults to True: on a CPU without bf16 units, 20x slower
            gradient_checkpointing=False,  # TRL defaults to True: recomputing the forward saves memory a small base does not need
        )
        trainer = SFTTrainer(
            model=model,
            args=config,
            train_dataset=Dataset.from_list([{"messages": turn.messages()} for turn in turns]),
            processing_class=tokenizer,
            callbacks=[report],
        )
        trainer.remove_callback(PrinterCallback)  # it prints every log dict to stdout; `progress` reports instead
        trainer.train()
    if not report.losses or not all(math.isfinite(loss) for loss in report.losses):
        raise RuntimeError(f"the warm start's loss is not finite: {report.losses}")
    return WarmStartResult(steps=settings.steps, first_loss=report.losses[0], final_loss=report.losses[-1])

