"""Where agents are answered, as a Dagster resource: an inference server with runtime LoRA loading, or embedded.

`BABYLON_INFERENCE_BASE_URL` (ending in `/v1`) and `BABYLON_INFERENCE_ADAPTER_ROOT` (where the
server reads adapters from; a version is `{root}/{version}`) set: the server; neither: the embedded
profile's local model, loading adapters from the object store. One without the other is refused,
naming variables only: a half-configured server must not fall back to the local model in silence.
`BABYLON_INFERENCE_API_KEY` is optional (vLLM started without `--api-key` wants none).
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import dagster as dg

from babylon_pipeline.evaluation.policies import PolicyServer
from babylon_pipeline.serving.inference import NO_KEY, Inference, ServerInference
from babylon_pipeline.serving.inference import SETTINGS as INFERENCE_SETTINGS
from babylon_pipeline.storage import ObjectStore

REQUIRED_TOGETHER = ("base_url", "adapter_root")


class InferenceResource(dg.ConfigurableResource):
    """The inference server when `base_url` is set, else the embedded local model."""

    base_url: str | None = None
    api_key: str | None = None
    adapter_root: str | None = None
    timeout_s: float = 60.0
    max_retries: int = 2
    health_max_tokens: int = 256
    embedded_health_samples: int = 4

    def _half_set(self) -> str | None:
        given = [field for field in REQUIRED_TOGETHER if getattr(self, field)]
        if not given or len(given) == len(REQUIRED_TOGETHER):
            return None
        missing = [INFERENCE_SETTINGS[f] for f in REQUIRED_TOGETHER if f not in given]
        return (f"the inference server is half configured: {INFERENCE_SETTINGS[given[0]]} set, {missing[0]} not; "
                "set both, or neither for the embedded local model")

    @property
    def embedded(self) -> bool:
        return not self.base_url

    def describe(self) -> str:
        """Fit for logs and metadata: the server's host, never its key."""
        if self.embedded:
            return "embedded local model"
        parts = urlsplit(self.base_url or "")
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
        return f"inference server at {host}"

    def inference(self, store: ObjectStore) -> Inference:
        """The backend; `store` is where the embedded model reads the base and adapters."""
        if (reason := self._half_set()) is not None:
            raise dg.Failure(description=reason, allow_retries=False)
        if self.embedded:
            from babylon_pipeline.serving.embedded import EmbeddedInference

            return EmbeddedInference(store, health_samples=self.embedded_health_samples)
        return ServerInference(self.base_url or "", self.adapter_root or "", self.api_key, timeout_s=self.timeout_s,
                               max_retries=self.max_retries, health_max_tokens=self.health_max_tokens)


    def policy_server(self) -> PolicyServer | None:
        """Where an evaluation's policies play: this server, or None for the embedded local model."""
        if (reason := self._half_set()) is not None:
            raise dg.Failure(description=reason, allow_retries=False)
        return None if self.embedded else PolicyServer(self.base_url or "", self.api_key or NO_KEY)


def inference_resource_from_env() -> InferenceResource:
    """Each inference variable that is set, through `EnvVar`; the embedded local model when none is."""
    return InferenceResource(**{f: dg.EnvVar(name) for f, name in INFERENCE_SETTINGS.items() if os.environ.get(name)})
