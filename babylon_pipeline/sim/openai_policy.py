"""A policy that asks any OpenAI-compatible chat endpoint, configured from the environment.

`BABYLON_SIM_BASE_URL`, `BABYLON_SIM_MODEL`, `BABYLON_SIM_API_KEY`. The key is never logged or
recorded. With `model_version` (a pipeline version served as the adapter named `model`), every
answer carries it, so the recorder writes `modelVersion` on the LLM call and windows can be split
by version. A request that still fails after the client's retries is a `PolicyError` (the step is
recorded as a failed action, nothing is invented).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import openai

from babylon_pipeline.sim.observation import Observation
from babylon_pipeline.sim.policy import PolicyError, PolicyResponse


class OpenAIChatPolicy:
    def __init__(self, base_url: str, model: str, api_key: str, *, temperature: float = 1.0, max_tokens: int = 256,
                 timeout_s: float = 60.0, max_retries: int = 3, model_version: str | None = None) -> None:
        self.model, self.model_version = model, model_version
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **options) -> OpenAIChatPolicy:
        missing = [n for n in ("BABYLON_SIM_BASE_URL", "BABYLON_SIM_MODEL", "BABYLON_SIM_API_KEY") if not env.get(n)]
        if missing:
            raise ValueError(f"the chat policy needs {', '.join(missing)}")
        return cls(env["BABYLON_SIM_BASE_URL"], env["BABYLON_SIM_MODEL"], env["BABYLON_SIM_API_KEY"], **options)

    def __repr__(self) -> str:
        return f"OpenAIChatPolicy(model={self.model!r})"

    def act(self, system_prompt: str, user_prompt: str, observation: Observation) -> PolicyResponse:
        began = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": system_prompt}, {"role": "user", "content": user_prompt}],
                temperature=self.temperature,
                max_tokens=self.max_tokens,
            )
        except openai.OpenAIError as error:
            raise PolicyError(f"{type(error).__name__}: the chat endpoint did not answer") from None
        content = completion.choices[0].message.content if completion.choices else None
        if not isinstance(content, str):
            raise PolicyError("the chat endpoint answered without text")
        usage = completion.usage
        return PolicyResponse(
            text=content, model=completion.model or self.model, temperature=self.temperature, max_tokens=self.max_tokens,
            prompt_tokens=getattr(usage, "prompt_tokens", None), completion_tokens=getattr(usage, "completion_tokens", None),
            latency_ms=(time.perf_counter() - began) * 1000, model_version=self.model_version,
        )
