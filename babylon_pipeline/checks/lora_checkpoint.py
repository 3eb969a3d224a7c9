"""Checks on the latest `lora_checkpoint`: its adapter loads, and its training loss is finite.

They read what the UI shows (the asset's latest materialization) and the stored adapter it names,
so they run after the asset in `training_job` and can be re-executed alone from the asset's page.
safetensors and peft are imported inside the check (the trainer's extra), never at load time.
(No `from __future__ import annotations` here: Dagster reads the context type off the signatures.)
"""

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import dagster as dg

from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.storage import model_key

ASSET = "lora_checkpoint"
WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def _latest_metadata(context: dg.AssetCheckExecutionContext) -> dict[str, Any]:
    event = context.instance.get_latest_materialization_event(dg.AssetKey(ASSET))
    if event is None or event.asset_materialization is None:
        return {}
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


@dg.asset_check(asset=ASSET, description="The adapter loads: safetensors readable, LoRA tensors finite, PEFT config valid.")
def adapter_loads(context: dg.AssetCheckExecutionContext, object_store: ObjectStoreResource) -> dg.AssetCheckResult:
    version = _latest_metadata(context).get("version")
    if not version:
        return dg.AssetCheckResult(passed=False, description="no materialization names an adapter version")
    try:
        tensors, config = _load_adapter(object_store, str(version))
    except Exception as error:  # what the operator needs is the reason, whatever the library raised
        return dg.AssetCheckResult(passed=False, metadata={"version": str(version)},
                                   description=f"{type(error).__name__}: {error}"[:500])
    return dg.AssetCheckResult(passed=True, metadata={
        "version": str(version), "tensors": tensors, "peft_type": config["peft_type"], "r": config["r"],
    })


def _load_adapter(object_store: ObjectStoreResource, version: str) -> tuple[int, dict[str, Any]]:
    """Every tensor read and finite, LoRA A/B pairs, and a LoRA config PEFT loads whose rank is the weights'."""
    import numpy as np
    from peft import LoraConfig
    from safetensors import safe_open

    store = object_store.open()
    with tempfile.TemporaryDirectory(prefix="babylon-adapter-check-") as scratch:
        folder = Path(scratch)
        store.get_file(model_key(version, WEIGHTS), folder / WEIGHTS)
        store.get_file(model_key(version, CONFIG), folder / CONFIG)
        with safe_open(str(folder / WEIGHTS), framework="numpy") as weights:
            names = list(weights.keys())
            ranks = set()
            for name in names:
                tensor = weights.get_tensor(name)
                if not np.isfinite(tensor).all():
                    raise ValueError(f"tensor {name} holds non-finite values")
                if "lora_A" in name:
                    ranks.add(tensor.shape[0])
        if not ranks or not any("lora_B" in n for n in names):
            raise ValueError(f"no LoRA A/B tensors among {len(names)} tensors")
        config = json.loads((folder / CONFIG).read_text())
        if config.get("peft_type") != "LORA":
            raise ValueError(f"adapter_config.json is a {config.get('peft_type')!r} config, not LORA")
        loaded = LoraConfig.from_pretrained(str(folder))
        if not loaded.target_modules or ranks != {loaded.r}:
            raise ValueError(f"adapter_config.json (r={loaded.r!r}, target_modules={loaded.target_modules!r}) "
                             f"does not match the weights (rank {sorted(ranks)})")
    return len(names), config


@dg.asset_check(asset=ASSET, description="The run's final and mean training loss are finite numbers.")
def training_loss_finite(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    metadata = _latest_metadata(context)
    losses = {name: metadata.get(name) for name in ("final_loss", "mean_loss")}
    finite = all(isinstance(v, int | float) and math.isfinite(v) for v in losses.values())
    return dg.AssetCheckResult(passed=finite, metadata={k: (v if isinstance(v, int | float) else str(v))
                                                        for k, v in losses.items()})


LORA_CHECKPOINT_CHECKS = [adapter_loads, training_loss_finite]
