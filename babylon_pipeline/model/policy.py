"""Simulated agents acting with the pipeline's own model: the base, or the base plus a trained LoRA version.

It answers like any policy (text carrying a JSON action) and records what the trainer needs to
use its samples on-policy: the sampled token ids with their log-probs (`tokenId`), the sampling
temperature, and the model id of the version (`babylon-agent-vX.Y.Z`) or the base's name. The
default temperature is 0.7, where the tiny base writes valid actions reliably; the trainer takes
recorded log-probs as behaviour log-probs only at temperature 1 (else the ratio is 1). A whole
tick of agents can be answered in one batched `generate` (`act_batch`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from peft import PeftModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from babylon_pipeline.model.prompt_room import ANSWER_TOKENS, prompt_room
from babylon_pipeline.model.sampling import prompt_ids, sample_completions
from babylon_pipeline.sim.observation import Observation
from babylon_pipeline.sim.policy import PolicyRequest, PolicyResponse
from babylon_pipeline.storage import ObjectStore
from babylon_pipeline.store.registry import model_id_of
from babylon_pipeline.training.adapter import download_adapter
from babylon_pipeline.training.base_model import load_base
from babylon_pipeline.training.device import pick_runtime
from babylon_pipeline.training.request import STORE_BASE


class LocalModelPolicy:
    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, *, model_name: str,
                 version: str | None = None, temperature: float = 0.7, max_new_tokens: int = ANSWER_TOKENS,
                 context_tokens: int = 1024, seed: int = 0) -> None:
        self.room = prompt_room(context_tokens, max_new_tokens)
        self.model, self.tokenizer = model.eval(), tokenizer
        self.model_name, self.version = model_name, version
        self.temperature, self.max_new_tokens, self.context_tokens = temperature, max_new_tokens, context_tokens
        torch.manual_seed(seed)

    @classmethod
    def from_store(cls, store: ObjectStore, *, base_name: str, version: str | None = None, base: str = STORE_BASE,
                   work_dir: Path | None = None, **options) -> LocalModelPolicy:
        """`base` as the trainer reads it (`store:base`, a hub id or a path); `version` a complete adapter."""
        folder = Path(work_dir or tempfile.mkdtemp(prefix="babylon-policy-"))
        model, tokenizer = load_base(base, store, folder / "base", pick_runtime())
        if version is not None:
            model = PeftModel.from_pretrained(model, str(download_adapter(store, version, folder / version)))
        name = model_id_of(version) if version else base_name
        return cls(model, tokenizer, model_name=name, version=version, **options)

    def __repr__(self) -> str:
        return f"LocalModelPolicy(model={self.model_name!r}, temperature={self.temperature})"

    def act(self, system_prompt: str, user_prompt: str, observation: Observation) -> PolicyResponse:
        return self.act_batch([PolicyRequest(system_prompt, user_prompt, observation)])[0]

    def act_batch(self, requests: Sequence[PolicyRequest]) -> list[PolicyResponse]:
        began = time.perf_counter()
        prompts = [prompt_ids(self.tokenizer, r.system_prompt, r.user_prompt, self.room) for r in requests]
        completions = sample_completions(self.model, self.tokenizer, prompts, temperature=self.temperature,
                                         max_new_tokens=self.max_new_tokens)
        latency_ms = (time.perf_counter() - began) * 1000 / len(requests)
        return [
            PolicyResponse(
                text=c.text, model=self.model_name, model_version=self.version, temperature=self.temperature,
                max_tokens=self.max_new_tokens, prompt_tokens=c.prompt_tokens, completion_tokens=len(c.token_ids),
                logprobs=[{"token": self.tokenizer.decode([i]), "logprob": lp, "tokenId": i}
                          for i, lp in zip(c.token_ids, c.logprobs, strict=True)],
                latency_ms=latency_ms,
            )
            for c in completions
        ]
