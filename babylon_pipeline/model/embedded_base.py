"""The embedded profile's base policy, built here because nothing can come from the hub.

Simulate scripted agents → train a byte-level BPE tokenizer on their text → a fresh tiny Qwen2 →
TRL's SFT warm start on their applied actions → save, load back as the policy and the trainer
will, and sample on held-out observations (another seed, other agents and markets) counting the
answers the game can read. The same settings give the same base: every random draw is seeded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

from babylon_pipeline.model.base_record import BaseRecord, EmbeddedBaseSettings
from babylon_pipeline.model.prompt_room import prompt_room
from babylon_pipeline.model.tiny import build_tiny_model, parameter_count
from babylon_pipeline.model.tokenizer import train_tokenizer
from babylon_pipeline.model.transcripts import scripted_turns
from babylon_pipeline.model.valid_actions import check_actions
from babylon_pipeline.model.warm_start import WarmStartSettings, warm_start
from babylon_pipeline.training.base_model import load_pretrained
from babylon_pipeline.training.device import pick_runtime
from babylon_pipeline.training.request import STORE_BASE

SIM_START = datetime(2025, 1, 1, 0, 0)
HELD_OUT_SEED_OFFSET = 1_000


def build_embedded_base(settings: EmbeddedBaseSettings, folder: Path,
                        log: Callable[[str], None] = lambda message: None) -> BaseRecord:
    """Build into `folder` (weights, config, tokenizer); the record says what was built and how it did."""
    turns = scripted_turns(settings.seed, settings.sim_hours, settings.sim_agents, SIM_START)
    held_out = scripted_turns(settings.seed + HELD_OUT_SEED_OFFSET, 1, settings.sim_agents, SIM_START)
    held_out = held_out[:: max(1, len(held_out) // settings.held_out)][: settings.held_out]
    log(f"{len(turns)} scripted turns to learn from, {len(held_out)} held out")
    tokenizer = train_tokenizer((text for t in turns for text in (t.system, t.user, t.response)), settings.vocab_size)
    model = build_tiny_model(tokenizer, size=settings.size, seed=settings.seed)
    sft = WarmStartSettings(steps=settings.sft_steps, batch_size=settings.sft_batch_size,
                            learning_rate=settings.sft_learning_rate, max_length=settings.context_tokens,
                            seed=settings.seed)
    result = warm_start(model, tokenizer, turns, sft,
                        progress=lambda step, total, loss: log(f"warm start step {step}/{total} loss={loss:.4f}"))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    stored, stored_tokenizer = load_pretrained(str(folder), pick_runtime(), embedded=True)  # what policy and trainer load
    room = prompt_room(settings.context_tokens, settings.max_new_tokens)
    check, at_one = (check_actions(stored, stored_tokenizer, held_out, max_prompt_tokens=room,
                                   max_new_tokens=settings.max_new_tokens, temperature=temperature, seed=settings.seed)
                     for temperature in (settings.sample_temperature, 1.0))
    log(f"{check.valid}/{check.sampled} answers sampled at temperature {settings.sample_temperature} are valid actions "
        f"({check.valid_share:.0%}; {at_one.valid_share:.0%} at temperature 1), {check.grounded} name markets, "
        f"tickers or posts, all of them shown")
    return BaseRecord(
        name=f"babylon-{settings.size}-{_weights_hash(folder)[:12]}",
        spec=STORE_BASE,
        source="embedded",
        parameters=parameter_count(model),
        context_tokens=settings.context_tokens,
        details={
            "vocab_size": len(tokenizer),
            "sft_steps": result.steps,
            "sft_first_loss": result.first_loss,
            "sft_loss": result.final_loss,
            "sft_turns": len(turns),
            "held_out": check.sampled,
            "valid_actions": check.valid,
            "valid_action_share": check.valid_share,
            "valid_action_share_at_t1": at_one.valid_share,
            "grounded_action_share": check.grounded_share,
            "sample_temperature": settings.sample_temperature,
            "valid_by_action": check.by_action,
            "example_answer": check.example,
            "settings": asdict(settings),
        },
    )


def _weights_hash(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
