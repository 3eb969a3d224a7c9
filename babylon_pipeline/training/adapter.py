"""The LoRA adapter: fresh, or continued from the version in service; saved and uploaded as safetensors.

Continual training loads the parent's adapter trainable (`PeftModel.from_pretrained(...,
is_trainable=True)`), so its LoRA configuration (r, alpha, targets) is the parent's and the
settings' LoRA fields apply to fresh adapters only. Only `adapter_model.safetensors` and
`adapter_config.json` are ever read or written: PEFT would fall back to a pickled `.bin` if the
safetensors file were missing, so the download fails first.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from babylon_pipeline.storage import ObjectNotFound, ObjectStore, model_key
from babylon_pipeline.training.request import GRPOSettings

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
ADAPTER_FILES = (WEIGHTS, CONFIG)
METADATA = "metadata.json"  # written last: its presence marks a complete version


def fresh_lora(model: PreTrainedModel, settings: GRPOSettings) -> PeftModel:
    targets = settings.target_modules
    config = LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets if isinstance(targets, str) else list(targets),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def continued_lora(model: PreTrainedModel, adapter_dir: Path) -> PeftModel:
    return PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=True)


def download_adapter(store: ObjectStore, version: str, dest: Path) -> Path:
    if not store.exists(model_key(version, METADATA)):
        raise FileNotFoundError(f"version {version} is not a complete adapter (no {METADATA} in the store)")
    for name in ADAPTER_FILES:
        try:
            store.get_file(model_key(version, name), dest / name)
        except ObjectNotFound:
            raise FileNotFoundError(f"version {version} has no {name} in the object store") from None
    return dest


def save_adapter(model: PeftModel, dest: Path) -> dict[str, Path]:
    model.save_pretrained(str(dest), safe_serialization=True)
    files = {name: dest / name for name in ADAPTER_FILES}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise RuntimeError(f"PEFT did not write {missing} to {dest}")
    return files


def trainable_parameters(model: PeftModel) -> list:
    return [p for p in model.parameters() if p.requires_grad]
