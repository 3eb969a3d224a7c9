"""The base policy and its tokenizer: the one saved in the object store, or a hub id / local path.

`store:base` is the embedded profile's tiny base, written under models/base/ by `save_pretrained`
(safetensors) with its tokenizer; it is downloaded to the run's work folder and loaded from
there, its tokenizer exactly as its `tokenizer.json` says (`AutoTokenizer` would map the qwen2
config to `Qwen2Tokenizer`, whose own pre-tokenizer splits digits: not the tokenization the base
was trained with). Anything else goes to `from_pretrained` unchanged (production: a hub id).
Weights are loaded from safetensors only (`use_safetensors=True`): nothing is ever unpickled.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as transformers_logging

from babylon_pipeline.model.chat_template import has_generation_markers
from babylon_pipeline.storage import ObjectStore, model_prefix
from babylon_pipeline.training.device import Runtime
from babylon_pipeline.training.request import STORE_BASE


def load_base(spec: str, store: ObjectStore, cache_dir: Path, runtime: Runtime
              ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    embedded = spec == STORE_BASE
    source = str(download_store_base(store, cache_dir)) if embedded else spec
    return load_pretrained(source, runtime, embedded=embedded)


def load_pretrained(source: str, runtime: Runtime, *, embedded: bool
                    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A folder or hub id; `embedded`: an embedded base's folder, its tokenizer read as its tokenizer.json says."""
    transformers_logging.disable_progress_bar()  # bars would flood the run's log through Pipes' stderr
    tokenizer = (PreTrainedTokenizerFast if embedded else AutoTokenizer).from_pretrained(source)
    use_training_template(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=runtime.dtype, use_safetensors=True)
    return model.to(runtime.device), tokenizer


def download_store_base(store: ObjectStore, cache_dir: Path) -> Path:
    prefix = model_prefix("base")
    keys = store.list_keys(prefix)
    if not keys:
        raise FileNotFoundError(f"no base model under {prefix}/ in the object store: materialize base_model first")
    for key in keys:
        store.get_file(key, cache_dir / key[len(prefix) + 1 :])
    return cache_dir


def use_training_template(tokenizer: PreTrainedTokenizerBase) -> None:
    """Assistant masks need `{% generation %}` markers; hub templates lack them, TRL ships marked twins."""
    if has_generation_markers(tokenizer.chat_template):
        return
    from trl.chat_template_utils import get_training_chat_template  # only for hub bases: importing trl costs ~5 s

    template = get_training_chat_template(tokenizer)
    if template is None or not has_generation_markers(template):
        raise ValueError("the base model's chat template has no {% generation %} markers and TRL has no training twin")
    tokenizer.chat_template = template
