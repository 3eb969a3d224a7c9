"""A base and versions for evaluation tests, built in seconds from the shared tiny base.

`base/`: the tiny base after a few full fine-tuning steps towards the HOLD action, not
yet writing one the game reads (every step fails). `hold/`: a LoRA adapter trained on top of
it until every answer is a HOLD action (valid, never rejected): on the benchmark it earns more than
the base. `break_adapter` scales a trained adapter's LoRA B weights until it writes garbage again.
Trained on prompts of scripted simulations (seeds the benchmark never uses), cut to the tests' short
context, so the models see what the policy feeds them.
"""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file

from babylon_pipeline.model.sampling import prompt_ids
from babylon_pipeline.sim import simulate
from babylon_pipeline.storage import ObjectStore, model_key
from babylon_pipeline.store import tables
from babylon_pipeline.store.reader import read_window
from babylon_pipeline.training.base_model import load_pretrained
from babylon_pipeline.training.device import pick_runtime
from tests.training_data import HOLD, shared_build, shared_tiny_base

PROMPT_TOKENS = 32  # the policy's room for the prompt: the tests' context of 64 tokens minus 32 new ones
CONTEXT_TOKENS = 64
ADAPTER_FILES = ("adapter_model.safetensors", "adapter_config.json")


def shared_evaluation_models(tmp_path_factory) -> Path:
    """A folder with `base/` (weights and tokenizer, as `base_model` stores them) and `hold/` (the adapter)."""
    tiny = shared_tiny_base(tmp_path_factory)
    return shared_build(tmp_path_factory, "evaluation-models", lambda folder: build_models(tiny, folder))


def build_models(tiny: Path, folder: Path) -> None:
    model, tokenizer = load_pretrained(str(tiny), pick_runtime(), embedded=True)
    ids, mask, labels = _hold_batch(tokenizer)
    _fit(model, ids, mask, labels, steps=18)
    model.save_pretrained(folder / "base", safe_serialization=True)
    tokenizer.save_pretrained(folder / "base")
    adapter = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    _fit(adapter, ids, mask, labels, steps=30)
    adapter.save_pretrained(str(folder / "hold"), safe_serialization=True)


def scripted_prompts(seed: int = 11) -> list[tuple[str, str]]:
    """(system, user) prompts of a scripted simulation: what agents see."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = sa.create_engine(f"sqlite:///{scratch}/sim.db")
        tables.metadata.create_all(engine)
        simulate(engine, hours=1, agents=5, seed=seed, start=datetime(2025, 3, 1, 9), steps_per_window=3)
        calls = [c for t in read_window(engine, "2025-03-01T09:00") for s in t.steps for c in s.llm_calls]
        engine.dispose()
    return [(c.system_prompt, c.user_prompt) for c in calls]


def _hold_batch(tokenizer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    answer = tokenizer(HOLD, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    rows = [prompt_ids(tokenizer, system, user, PROMPT_TOKENS) + answer for system, user in scripted_prompts()]
    width = max(map(len, rows))
    ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    labels = torch.full_like(ids, -100)
    labels[:, -len(answer):] = ids[:, -len(answer):]
    return ids, mask, labels


def _fit(model, ids, mask, labels, steps: int) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    model.train()
    for _ in range(steps):
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()


def break_adapter(adapter: Path, folder: Path, scale: float = 30.0) -> Path:
    """A copy of the adapter whose LoRA B weights are `scale` times larger: its answers turn to garbage."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(adapter / ADAPTER_FILES[0]))
    save_file({k: v * scale if "lora_B" in k else v for k, v in tensors.items()}, str(folder / ADAPTER_FILES[0]))
    (folder / ADAPTER_FILES[1]).write_bytes((adapter / ADAPTER_FILES[1]).read_bytes())
    return folder


def store_version(store: ObjectStore, version: str, adapter: Path) -> None:
    """The adapter stored as the trainer stores a version: its files, then metadata.json marking it complete."""
    for name in ADAPTER_FILES:
        store.put_file(model_key(version, name), adapter / name)
    store.put_json(model_key(version, "metadata.json"), {"version": version})
