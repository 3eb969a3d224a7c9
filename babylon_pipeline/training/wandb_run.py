"""The run's W&B record: per-step stats and the settings, offline unless there is an API key.

Mode: the request's, else WANDB_MODE, else online when WANDB_API_KEY is set and offline otherwise
(an offline run lands under the work folder and can be `wandb sync`ed later). wandb reads the key
from the environment itself; it never passes through this code, the config or the logs. The URL
is the run's page online and None offline (there is none); `local_dir` says where the files are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babylon_pipeline.training.request import WandbOptions


@dataclass
class WandbRun:
    run: Any | None  # None when disabled
    mode: str

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def url(self) -> str | None:
        return self.run.url if self.run is not None and self.mode == "online" else None

    @property
    def local_dir(self) -> str | None:
        return self.run.settings.sync_dir if self.run is not None else None

    def log(self, values: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in values.items() if v is not None}, step=step)

    def finish(self, failed: bool) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1 if failed else 0)


def wandb_mode(options: WandbOptions) -> str:
    if options.mode:
        return options.mode
    if os.environ.get("WANDB_MODE") in ("online", "offline", "disabled"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") else "offline"


def start_wandb(options: WandbOptions, name: str, config: dict[str, Any], work_dir: Path) -> WandbRun:
    mode = wandb_mode(options)
    if mode == "disabled":
        return WandbRun(run=None, mode=mode)
    if mode == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ValueError("wandb mode is online but WANDB_API_KEY is not set in the trainer's environment")
    import wandb  # a disabled run does not pay for the import

    work_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        project=options.project,
        name=name,
        job_type="grpo",
        mode=mode,
        dir=str(work_dir),
        config=config,
        reinit="create_new",
        settings=wandb.Settings(console="off", silent=True, disable_git=True, save_code=False),
    )
    return WandbRun(run=run, mode=mode)
