"""The one interface every decision-maker implements, scripted or a language model.

A policy gets the two prompts and the structured observation and returns text: the simulator
parses the action out of the text itself, exactly as it would from a model, so a scripted
policy's malformed answer and a model's take the same path. Policies that can answer many
requests at once (an HTTP endpoint with concurrency, a local model with batched generation)
also implement `act_batch`; the runner then hands them a whole tick at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from babylon_pipeline.sim.observation import Observation


@dataclass(frozen=True)
class PolicyResponse:
    """The policy's raw answer and the sampling facts the recorder keeps about it."""

    text: str
    model: str
    temperature: float
    max_tokens: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    logprobs: Sequence[Mapping[str, Any]] | None = None  # [{token, logprob, tokenId?}] of the sampled tokens
    latency_ms: float | None = None
    top_p: float | None = None
    model_version: str | None = None


@dataclass(frozen=True)
class PolicyRequest:
    system_prompt: str
    user_prompt: str
    observation: Observation


class PolicyError(RuntimeError):
    """The policy could not answer at all (e.g. the endpoint is down after retries). The step is
    recorded as a failed action without an LLM call: there is no response to record."""


@runtime_checkable
class Policy(Protocol):
    def act(self, system_prompt: str, user_prompt: str, observation: Observation) -> PolicyResponse: ...


@runtime_checkable
class BatchPolicy(Policy, Protocol):
    def act_batch(self, requests: Sequence[PolicyRequest]) -> list[PolicyResponse | PolicyError]:
        """One answer per request, in order; a request that failed is its `PolicyError`."""
        ...


def act_all(policies: Sequence[Policy], requests: Sequence[PolicyRequest]) -> list[PolicyResponse | PolicyError]:
    """Answer `requests[i]` with `policies[i]`: one `act_batch` per batch-capable policy object,
    `act` otherwise. Results come back in request order whatever order the policy answered in."""
    if len(policies) != len(requests):
        raise ValueError("one policy per request")
    results: list[PolicyResponse | PolicyError | None] = [None] * len(requests)
    batches: dict[int, list[int]] = {}
    for i, policy in enumerate(policies):
        if isinstance(policy, BatchPolicy):
            batches.setdefault(id(policy), []).append(i)
        else:
            try:
                results[i] = policy.act(requests[i].system_prompt, requests[i].user_prompt, requests[i].observation)
            except PolicyError as error:
                results[i] = error
    for indices in batches.values():
        policy = policies[indices[0]]
        answers = policy.act_batch([requests[i] for i in indices])  # type: ignore[attr-defined]
        if len(answers) != len(indices):
            raise RuntimeError(f"{type(policy).__name__}.act_batch answered {len(answers)} of {len(indices)} requests")
        for i, answer in zip(indices, answers, strict=True):
            results[i] = answer
    return results  # type: ignore[return-value]
