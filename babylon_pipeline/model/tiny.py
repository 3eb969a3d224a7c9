"""Qwen2-architecture causal LMs small enough to train on a CPU: the embedded profile's base.

Same architecture as the production Qwen2.5 bases, so the trainer, LoRA targets and chat handling
are the code paths production runs; only the size differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM


@dataclass(frozen=True)
class TinySize:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int


SIZES = {
    "tiny": TinySize(hidden=256, layers=4, heads=4, kv_heads=2, intermediate=688),  # ~3M parameters
    "small": TinySize(hidden=448, layers=8, heads=7, kv_heads=1, intermediate=1216),  # ~15M parameters
}


def tiny_config(tokenizer: PreTrainedTokenizerBase, size: str = "tiny", max_positions: int = 2048) -> Qwen2Config:
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; one of {sorted(SIZES)}")
    dims = SIZES[size]
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=dims.hidden,
        intermediate_size=dims.intermediate,
        num_hidden_layers=dims.layers,
        num_attention_heads=dims.heads,
        num_key_value_heads=dims.kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_model(tokenizer: PreTrainedTokenizerBase, size: str = "tiny", seed: int = 0) -> Qwen2ForCausalLM:
    """Freshly initialised weights, the same for the same seed."""
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(tiny_config(tokenizer, size))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
