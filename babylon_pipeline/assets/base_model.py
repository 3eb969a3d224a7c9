"""`base_model`: the policy every LoRA version is trained on top of.

Production (`BASE_MODEL` set: a hub id or a local path) records the base from its config and
tokenizer, loading no weights. The embedded profile builds its own tiny base (simulator text →
tokenizer → tiny Qwen2 → SFT warm start) and stores it under `models/base/`; the same settings
are not rebuilt (a rebuilt base would orphan every adapter trained on the old one) unless
`rebuild` is set. The `ready_to_train` check blocks training on a base that cannot act or be
trained: too few valid actions on held-out observations, or no assistant-mask chat template.
(No `from __future__ import annotations` here: Dagster reads the config class off the signature.)
"""

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import dagster as dg

from babylon_pipeline.model.base_record import (
    BaseModelMissing,
    BaseRecord,
    EmbeddedBaseSettings,
    read_base_record,
    write_base_record,
)
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.storage import ObjectStore, model_key
from babylon_pipeline.storage.keys import BASE_MODEL

BASE_MODEL_ENV = "BASE_MODEL"
S = EmbeddedBaseSettings  # the defaults live in the recipe, once


class BaseModelConfig(dg.Config):
    """The embedded base's recipe (ignored when BASE_MODEL names a production base, but for `context_tokens`)."""

    size: str = S.size
    vocab_size: int = S.vocab_size
    context_tokens: int = S.context_tokens
    """Prompt + answer tokens the policy and the trainer work within (a production base: `production_context_tokens`)."""
    max_new_tokens: int = S.max_new_tokens
    sample_temperature: float = S.sample_temperature
    """The local policy's default temperature; the held-out check samples with it (and reports temperature 1 too)."""
    sim_hours: int = S.sim_hours
    sim_agents: int = S.sim_agents
    sft_steps: int = S.sft_steps
    sft_batch_size: int = S.sft_batch_size
    sft_learning_rate: float = S.sft_learning_rate
    held_out: int = S.held_out
    seed: int = S.seed
    min_valid_share: float = 0.9
    """`ready_to_train` fails below this share of valid actions sampled on held-out observations."""
    rebuild: bool = False
    """Build the embedded base again even when one with these settings is stored."""
    production_context_tokens: int = 2048


@dg.asset(
    group_name="training",
    kinds={"pytorch", "huggingface"},
    check_specs=[dg.AssetCheckSpec("ready_to_train", asset="base_model", blocking=True,
                                   description="the base writes valid actions (embedded) / can mask assistant tokens")],
)
def base_model(context: dg.AssetExecutionContext, config: BaseModelConfig,
               object_store: ObjectStoreResource) -> dg.MaterializeResult:
    """The base policy: a hub model recorded as it is, or the embedded tiny base built and warm-started here."""
    store = object_store.open()
    spec = os.environ.get(BASE_MODEL_ENV)
    if spec:
        from babylon_pipeline.model.hub_base import describe_hub_base  # torch and transformers: inside the run only

        record = describe_hub_base(spec, config.production_context_tokens)
        write_base_record(store, record)
        check = dg.AssetCheckResult(check_name="ready_to_train", passed=record.details["chat_template"] is not None,
                                    metadata={"chat_template": str(record.details["chat_template"])})
    else:
        record = _embedded_base(context, config, store)
        share = record.details["valid_action_share"]
        check = dg.AssetCheckResult(
            check_name="ready_to_train", passed=share >= config.min_valid_share, severity=dg.AssetCheckSeverity.ERROR,
            metadata={"valid_action_share": share, "threshold": config.min_valid_share},
        )
    return dg.MaterializeResult(metadata=_metadata(record), check_results=[check], data_version=dg.DataVersion(record.name))


def _embedded_base(context: dg.AssetExecutionContext, config: BaseModelConfig, store: ObjectStore) -> BaseRecord:
    from babylon_pipeline.model.embedded_base import build_embedded_base

    fields = EmbeddedBaseSettings.__dataclass_fields__
    settings = EmbeddedBaseSettings(**{k: v for k, v in config.model_dump().items() if k in fields})
    if not config.rebuild and (stored := _stored_record(store)) and stored.details.get("settings") == asdict(settings):
        context.log.info(f"{stored.name} is stored with these settings: kept (set rebuild to build it again)")
        return stored
    with tempfile.TemporaryDirectory(prefix="babylon-base-") as scratch:
        record = build_embedded_base(settings, Path(scratch), log=context.log.info)
        for path in sorted(Path(scratch).iterdir()):
            store.put_file(model_key(BASE_MODEL, path.name), path)
    write_base_record(store, record)  # last: its presence marks the base complete
    context.log.info(f"{record.name}: {record.parameters:,} parameters stored under models/base/")
    return record


def _stored_record(store: ObjectStore) -> BaseRecord | None:
    try:
        return read_base_record(store)
    except BaseModelMissing:
        return None


def _metadata(record: BaseRecord) -> dict[str, Any]:
    details = record.details
    metadata: dict[str, Any] = {
        "name": record.name,
        "source": record.source,
        "parameters": record.parameters,
        "context_tokens": record.context_tokens,
        "vocab_size": details.get("vocab_size"),
    }
    if record.source == "embedded":
        metadata |= {
            "sft_loss": details["sft_loss"],
            "sft_steps": details["sft_steps"],
            "valid_action_share": details["valid_action_share"],
            "valid_action_share_at_t1": details.get("valid_action_share_at_t1"),  # absent from older records
            "grounded_action_share": details.get("grounded_action_share"),
            "held_out": details["held_out"],
            "valid_by_action": dg.MetadataValue.json(details["valid_by_action"]),
            "example_answer": dg.MetadataValue.md(f"```\n{details['example_answer']}\n```"),
        }
    else:
        metadata |= {"revision": str(details["revision"]), "chat_template": str(details["chat_template"]),
                     "architecture": details["architecture"]}
    return {k: v for k, v in metadata.items() if v is not None}
