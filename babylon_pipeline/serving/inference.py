"""Where agents are answered: an OpenAI-compatible server that hot-loads LoRA adapters, vLLM's way.

Each version is its own adapter, named `babylon-agent-vX.Y.Z` (`model_id_of`): reloading weights
under a name already served gives stale answers in current vLLM, so a name is never reused for
other weights. The admin endpoints (`POST /v1/load_lora_adapter`, `/v1/unload_lora_adapter`,
enabled on the server by `VLLM_ALLOW_RUNTIME_LORA_UPDATING`) are spoken with `httpx2`, the chat
completions with the `openai` client, both against the same base URL (ending in `/v1`). The server
reads an adapter from `{adapter_root}/{version}`: a directory it can see, or any location its LoRA
resolver understands.

Loading and unloading are idempotent (what `GET /v1/models` already lists is not loaded again), so
a retried deploy is safe. Every fault (server down, an error status, a health check answered with
no game action) is one `InferenceError` whose message names the server's host and the adapter,
never the API key, and nothing is routed to a version whose load or check failed.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import httpx2
import openai
from openai.types.chat import ChatCompletion

from babylon_pipeline.serving.health import HealthCheck, health_prompts, read_action
from babylon_pipeline.sim.openai_policy import OpenAIChatPolicy
from babylon_pipeline.sim.policy import Policy
from babylon_pipeline.store.registry import model_id_of, parse_version, short_error

SETTINGS = {
    "base_url": "BABYLON_INFERENCE_BASE_URL",
    "api_key": "BABYLON_INFERENCE_API_KEY",
    "adapter_root": "BABYLON_INFERENCE_ADAPTER_ROOT",
}
"""The settings and the environment variables they come from."""
DETAIL_CHARS = 300
"""What of a server's error body a message quotes."""
NO_KEY = "EMPTY"
"""What the `openai` client sends when the server wants no key (vLLM started without `--api-key`)."""


class InferenceError(RuntimeError):
    """An adapter could not be loaded, unloaded or checked: nothing may be routed to it."""


@runtime_checkable
class Inference(Protocol):
    """What deploying needs of the place agents are answered, server or embedded."""

    def describe(self) -> str: ...

    def load(self, version: str) -> bool:
        """Make `version` answerable; False when it already was."""
        ...

    def unload(self, version: str) -> bool:
        """Stop serving `version`; False when it was not loaded."""
        ...

    def health_check(self, version: str) -> HealthCheck: ...

    def policy(self, version: str | None) -> Policy:
        """A simulator policy answered by `version` (None: the bare base)."""
        ...


class ServerInference:
    """An OpenAI-compatible inference server with runtime LoRA loading (vLLM's endpoints)."""

    def __init__(self, base_url: str, adapter_root: str, api_key: str | None = None, *, timeout_s: float = 60.0,
                 max_retries: int = 2, health_max_tokens: int = 256) -> None:
        self.base_url = base_url.rstrip("/")
        self.adapter_root = adapter_root.rstrip("/")
        self._api_key = api_key or None
        self.timeout_s, self.max_retries, self.health_max_tokens = timeout_s, max_retries, health_max_tokens
        parts = urlsplit(self.base_url)
        self.host = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **options) -> ServerInference:
        """For processes outside Dagster (the CLI); the adapter root is needed only to load adapters."""
        if not env.get(SETTINGS["base_url"]):
            raise ValueError(f"the inference server needs {SETTINGS['base_url']}")
        return cls(env[SETTINGS["base_url"]], env.get(SETTINGS["adapter_root"], ""), env.get(SETTINGS["api_key"]),
                   **options)

    def describe(self) -> str:
        return f"inference server at {self.host} (adapters from {self.adapter_root or 'nowhere'})"

    def __repr__(self) -> str:
        return f"ServerInference(host={self.host!r}, adapter_root={self.adapter_root!r})"

    def adapter_path(self, version: str) -> str:
        if not self.adapter_root:
            raise InferenceError(f"the {self.describe()} cannot load adapters: set {SETTINGS['adapter_root']}")
        return f"{self.adapter_root}/{_checked(version)}"

    def served_models(self) -> dict[str, str | None]:
        """`GET /v1/models`: every model id the server answers to, with its parent (None for the base)."""
        body = self._admin("GET", "models", None, "list its models")
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise InferenceError(f"the {self.describe()} listed its models in an unreadable shape")
        return {m["id"]: m.get("parent") if isinstance(m.get("parent"), str) else None for m in data}

    def base_model(self) -> str:
        """The id of the model the server serves without an adapter."""
        bases = [name for name, parent in self.served_models().items() if parent is None]
        if not bases:
            raise InferenceError(f"the {self.describe()} lists no base model")
        return bases[0]

    def load(self, version: str) -> bool:
        name, path = model_id_of(_checked(version)), self.adapter_path(version)
        if name in self.served_models():
            return False
        self._admin("POST", "load_lora_adapter", {"lora_name": name, "lora_path": path}, f"load {name} from {path}")
        if name not in self.served_models():
            raise InferenceError(f"the {self.describe()} accepted {name} but does not list it among its models")
        return True

    def unload(self, version: str) -> bool:
        name = model_id_of(_checked(version))
        if name not in self.served_models():
            return False
        self._admin("POST", "unload_lora_adapter", {"lora_name": name}, f"unload {name}")
        return True

    def health_check(self, version: str) -> HealthCheck:
        """One greedy chat completion of the health-check tick, asked of the adapter by name."""
        name = model_id_of(_checked(version))
        system, user, _ = health_prompts()
        client = openai.OpenAI(base_url=self.base_url, api_key=self._api_key or NO_KEY, timeout=self.timeout_s,
                               max_retries=self.max_retries)
        began = time.perf_counter()
        try:
            completion = client.chat.completions.create(
                model=name, messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                temperature=0.0, max_tokens=self.health_max_tokens,
            )
        except openai.APIStatusError as error:
            raise InferenceError(f"the {self.describe()} refused the health check of {name}: HTTP "
                                 f"{error.status_code}: {self._scrub(_error_detail(error))}") from None
        except openai.OpenAIError as error:
            raise InferenceError(f"the {self.describe()} did not answer the health check of {name} "
                                 f"({type(error).__name__})") from None
        finally:
            client.close()
        latency_ms = (time.perf_counter() - began) * 1000
        if not isinstance(completion, ChatCompletion) or not completion.choices:
            raise InferenceError(f"the {self.describe()} answered the health check of {name} with no chat completion")
        if completion.model and completion.model != name:
            raise InferenceError(f"the {self.describe()} answered the health check of {name} as {completion.model!r}: "
                                 "the adapter is not what answers its name")
        text = completion.choices[0].message.content or ""
        action = read_action(text)
        if isinstance(action, str):
            raise InferenceError(f"{name} failed its health check on the {self.describe()}: no game action in its "
                                 f"answer ({self._scrub(action)})")
        usage = completion.usage
        return HealthCheck(version, name, action.action_type, latency_ms, getattr(usage, "completion_tokens", None))

    def policy(self, version: str | None, *, temperature: float = 0.7, max_tokens: int = 256) -> Policy:
        model = self.base_model() if version is None else model_id_of(_checked(version))
        return OpenAIChatPolicy(self.base_url, model, self._api_key or NO_KEY, temperature=temperature,
                                max_tokens=max_tokens, timeout_s=self.timeout_s, max_retries=self.max_retries,
                                model_version=version)

    def _admin(self, method: str, path: str, payload: dict[str, Any] | None, doing: str) -> Any:
        """One admin request; its JSON answer (None for vLLM's plain-text success), or an `InferenceError`."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        transport = httpx2.HTTPTransport(retries=self.max_retries)
        try:
            with httpx2.Client(base_url=self.base_url + "/", headers=headers, timeout=self.timeout_s,
                               transport=transport) as client:
                response = client.request(method, path, json=payload)
        except httpx2.HTTPError as error:
            raise InferenceError(f"the {self.describe()} is unreachable: could not {doing} "
                                 f"({type(error).__name__})") from None
        if response.status_code >= 400:
            raise InferenceError(f"the {self.describe()} refused to {doing}: HTTP {response.status_code}: "
                                 f"{self._scrub(_message_of(response.text))}")
        if "json" not in response.headers.get("content-type", ""):
            return None
        try:
            return response.json()
        except ValueError:
            raise InferenceError(f"the {self.describe()} answered a request to {doing} with unreadable JSON") from None

    def _scrub(self, text: str) -> str:
        """Server text fit for a message: the key masked wherever it is echoed, credentials masked, cut short."""
        if self._api_key:
            text = text.replace(self._api_key, "***")
        text = " ".join(short_error(text).split())
        return text if len(text) <= DETAIL_CHARS else text[: DETAIL_CHARS - 1] + "…"


def _checked(version: str) -> str:
    if parse_version(version) is None:
        raise InferenceError(f"not a model version (want vX.Y.Z): {version!r}")
    return version


def _error_detail(error: openai.APIStatusError) -> str:
    return _message_in(error.body) or error.message


def _message_of(text: str) -> str:
    """The message of an OpenAI-style JSON error body (`{"error": {"message": ...}}`), else the text itself."""
    try:
        return _message_in(json.loads(text)) or text
    except ValueError:
        return text


def _message_in(body: object) -> str | None:
    inner = body.get("error", body) if isinstance(body, dict) else None
    message = inner.get("message") if isinstance(inner, dict) else None
    return message if isinstance(message, str) else None
