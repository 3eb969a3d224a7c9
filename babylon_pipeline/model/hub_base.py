"""The production base policy (`BASE_MODEL`: a hub id or a local path), described without its weights.

Only the config and the tokenizer are read. The parameter count comes from an instance built on
the `meta` device (shapes, no memory, no download of weights); the revision is the commit the hub
resolved the config from (None for a local path); the chat template must be able to mark
assistant tokens, natively or through TRL's training twin, or the trainer could not train on it
(recorded as None, which fails the asset's `ready_to_train` check).
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from babylon_pipeline.model.base_record import BaseRecord
from babylon_pipeline.model.chat_template import has_generation_markers
from babylon_pipeline.model.tiny import parameter_count
from babylon_pipeline.training.base_model import use_training_template


def describe_hub_base(spec: str, context_tokens: int) -> BaseRecord:
    config = AutoConfig.from_pretrained(spec)
    with torch.device("meta"):
        parameters = parameter_count(AutoModelForCausalLM.from_config(config))
    tokenizer = AutoTokenizer.from_pretrained(spec)
    template = "native generation markers" if has_generation_markers(tokenizer.chat_template) else None
    try:
        use_training_template(tokenizer)
        template = template or "TRL training template"
    except ValueError:
        template = None
    limit = getattr(config, "max_position_embeddings", None) or context_tokens
    return BaseRecord(
        name=spec,
        spec=spec,
        source="hub",
        parameters=parameters,
        context_tokens=min(context_tokens, limit),
        details={
            "revision": getattr(config, "_commit_hash", None),
            "architecture": (config.architectures or [config.model_type])[0],
            "vocab_size": len(tokenizer),
            "chat_template": template,
            "max_position_embeddings": limit,
        },
    )
