"""What the embedded base learns from: the scripted agents' turns, recorded and read back as the pipeline does.

The simulator writes into a scratch SQLite store through the recorder SDK and the window reader
reads it back, so the tokenizer, the warm start and the held-out check see exactly the prompts and
responses a real window carries. Only steps whose action was read and applied are kept as
examples: the base should learn to act, not to repeat the scripted agents' deliberate slips.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from babylon_pipeline.sim import simulate
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.reader import read_window
from babylon_pipeline.store.records import Trajectory


@dataclass(frozen=True)
class Turn:
    system: str
    user: str
    response: str

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "system", "content": self.system}, {"role": "user", "content": self.user},
                {"role": "assistant", "content": self.response}]


def scripted_turns(seed: int, hours: int, agents: int, start: datetime) -> list[Turn]:
    """The applied actions of `hours` simulated windows of `agents` scripted agents, in recorded order."""
    with tempfile.TemporaryDirectory(prefix="babylon-transcripts-") as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'sim.db'}")
        try:
            upgrade(engine)
            windows = simulate(engine, hours=hours, agents=agents, seed=seed, start=start).windows
            turns = []
            for window_id in windows:
                for trajectory in read_window(engine, window_id):
                    if isinstance(trajectory, Trajectory):
                        turns += _applied_turns(trajectory)
            return turns
        finally:
            engine.dispose()


def _applied_turns(trajectory: Trajectory) -> list[Turn]:
    return [
        Turn(call.system_prompt, call.user_prompt, call.response)
        for step in trajectory.steps
        if step.action is not None and step.action.success
        for call in step.llm_calls[:1]
    ]
