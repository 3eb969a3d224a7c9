"""One interface for the policies an evaluation plays: a model version (None: the base) → a simulator policy.

Embedded profile: the pipeline's own model in this process (`LocalModelPolicy`: the base from the
object store, plus the version's LoRA adapter). Production: an OpenAI-compatible inference server
that serves the base and hot-loaded adapters, the adapter picked by the request's `model` field
(`babylon-agent-vX.Y.Z`, `store.registry.model_id_of`), the base by its own name. `reseed` before
each policy plays the suite makes a local model draw the same random numbers for each policy (common random
numbers: the paired differences are then the models', not the dice's); a server samples as it does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from babylon_pipeline.model.base_record import BaseRecord
from babylon_pipeline.sim.policy import Policy
from babylon_pipeline.storage import ObjectStore
from babylon_pipeline.store.registry import model_id_of


@dataclass(frozen=True)
class PolicyServer:
    """Where production policies play: the `inference` resource's server (`InferenceResource.policy_server`)."""

    base_url: str
    api_key: str = field(repr=False)  # a secret: never in a repr, a log or metadata


class PolicySource(Protocol):
    def policy(self, version: str | None) -> Policy: ...

    def reseed(self, seed: int) -> None: ...


class LocalPolicies:
    """The base and its adapters in this process; torch is imported only when a policy is made."""

    def __init__(self, store: ObjectStore, base: BaseRecord, work_dir: Path, *, temperature: float,
                 max_new_tokens: int) -> None:
        self.store, self.base, self.work_dir = store, base, Path(work_dir)
        self.temperature, self.max_new_tokens = temperature, max_new_tokens

    def policy(self, version: str | None) -> Policy:
        from babylon_pipeline.model.policy import LocalModelPolicy

        return LocalModelPolicy.from_store(
            self.store, base_name=self.base.name, version=version, base=self.base.spec,
            work_dir=self.work_dir / (version or "base"), temperature=self.temperature,
            max_new_tokens=self.max_new_tokens, context_tokens=self.base.context_tokens)

    def reseed(self, seed: int) -> None:
        import torch

        torch.manual_seed(seed)


class ServerPolicies:
    """An OpenAI-compatible server (vLLM with runtime LoRA loading) holding the base and the versions' adapters."""

    def __init__(self, base_url: str, api_key: str, base_model: str, *, temperature: float,
                 max_new_tokens: int) -> None:
        self.base_url, self.api_key, self.base_model = base_url, api_key, base_model
        self.temperature, self.max_new_tokens = temperature, max_new_tokens

    def __repr__(self) -> str:  # never the key
        return f"ServerPolicies(base_url={self.base_url!r}, base_model={self.base_model!r})"

    def policy(self, version: str | None) -> Policy:
        from babylon_pipeline.sim.openai_policy import OpenAIChatPolicy

        model = model_id_of(version) if version else self.base_model
        return OpenAIChatPolicy(self.base_url, model, self.api_key, temperature=self.temperature,
                                max_tokens=self.max_new_tokens)

    def reseed(self, seed: int) -> None:
        """Nothing to do: the server's sampling is its own."""


def policy_source(store: ObjectStore, base: BaseRecord, work_dir: Path, *, temperature: float, max_new_tokens: int,
                  server: PolicyServer | None = None) -> PolicySource:
    """The inference server when one is given, else the local model."""
    if server is not None:
        return ServerPolicies(server.base_url, server.api_key, base.name, temperature=temperature,
                              max_new_tokens=max_new_tokens)
    return LocalPolicies(store, base, work_dir, temperature=temperature, max_new_tokens=max_new_tokens)
