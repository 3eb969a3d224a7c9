"""`models/base/metadata.json`: which base policy the pipeline trains, written by the `base_model` asset,
and the recipe of the embedded one.

Torch-free, so the orchestrator reads it. `spec` is what the trainer loads (`store:base` for the
embedded base stored beside this file, else a hub id or a local path); `name` identifies the
weights (the embedded base's name carries a hash of them), and is what `trained_models.baseModel`
holds: an adapter is continued only on the base it was trained on. Written last, after any weight
files, so its presence means the base is complete.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from babylon_pipeline.model.prompt_room import ANSWER_TOKENS, prompt_room
from babylon_pipeline.storage import ObjectNotFound, ObjectStore, model_key
from babylon_pipeline.storage.keys import BASE_MODEL

RECORD = "metadata.json"


class BaseModelMissing(FileNotFoundError):
    """No complete base in the object store: materialize `base_model` first."""


@dataclass(frozen=True)
class BaseRecord:
    name: str
    spec: str
    source: str  # "embedded" (built here, stored under models/base/) or "hub" (a hub id or local path)
    parameters: int
    context_tokens: int  # prompt + completion the policy and trainer should stay within
    details: dict[str, Any] = field(default_factory=dict)  # figures of how it was built or checked

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def trained_prompt_room(self) -> int | None:
        """The prompt tokens the trainer keeps (their end). An embedded base's samples come from the local
        policy, which fed its model the room `prompt_room` gives; a hub base's from an inference server,
        which cuts no prompt (None: `max_seq_len` alone bounds them)."""
        return prompt_room(self.context_tokens) if self.source == "embedded" else None


@dataclass(frozen=True)
class EmbeddedBaseSettings:
    size: str = "tiny"
    vocab_size: int = 2048
    context_tokens: int = 256  # prompt + answer; longer prompts keep their end (markets, positions, cash)
    max_new_tokens: int = ANSWER_TOKENS
    sample_temperature: float = 0.7  # the local policy's default; the held-out check samples with it
    sim_hours: int = 12
    sim_agents: int = 40
    sft_steps: int = 450
    sft_batch_size: int = 8
    sft_learning_rate: float = 3e-3
    held_out: int = 128
    seed: int = 0


def base_record_key() -> str:
    return model_key(BASE_MODEL, RECORD)


def write_base_record(store: ObjectStore, record: BaseRecord) -> None:
    store.put_json(base_record_key(), record.as_dict())


def read_base_record(store: ObjectStore) -> BaseRecord:
    try:
        values = store.get_json(base_record_key())
    except ObjectNotFound:
        raise BaseModelMissing(f"no {base_record_key()} in the object store: materialize base_model first") from None
    return BaseRecord(**values)
