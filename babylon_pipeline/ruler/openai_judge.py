"""RULER over any OpenAI-compatible chat-completions endpoint.

One call per group, at most `concurrency` groups at once. Transport faults (timeouts, 429, 5xx,
refused connections) are the `openai` client's to retry, with its exponential backoff and
`Retry-After` handling; what is still failing after `max_retries` marks the group `judge_failed`.
An answer that does not parse or does not match the group gets one retry with the error spelled
out to the judge; a second bad answer marks the group `judge_failed`. Scores are never guessed.

Every bound is in `JudgeLimits`: each answer has a wall-clock deadline (the client's `timeout` only
bounds each wait for bytes) and a body-size cap, each request `max_tokens`, each call of `_judge`
(one window) a deadline after which open groups fail; a group too large for the prompt budget is
trimmed or split (`ruler.fitting`). The body is read and parsed here, not by the client, so a
hostile body is an answer error like any other; the transport caps error bodies too (`http_cap`). Whatever goes wrong with one group fails that group
alone, and each judgment is handed to `on_judged` the moment it is final.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletionMessageParam
from openai.types.shared_params import ResponseFormatJSONSchema

from babylon_pipeline.ruler.fitting import fit_prompts
from babylon_pipeline.ruler.http_cap import capped_http_client
from babylon_pipeline.ruler.judge import Judge, OnJudged
from babylon_pipeline.ruler.limits import JudgeLimits
from babylon_pipeline.ruler.prompt import JudgePrompt, feedback_message
from babylon_pipeline.ruler.response import JudgeResponseError, clean_text, load_json, parse_scores, response_format
from babylon_pipeline.ruler.rubrics import Rubric
from babylon_pipeline.ruler.types import GroupJudgment, JudgeGroup, TrajectoryScore

ANSWERS_PER_GROUP = 2
"""The first answer and the one retry with feedback."""
ERROR_CHARS = 400
FEEDBACK_ERROR_CHARS = 1_000
"""What the judge is told of its bad answer (an error can quote many unknown ids)."""


@dataclass
class _Spend:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add_usage(self, completion: dict[str, Any]) -> None:
        """Tokens as the endpoint reports them (none when it reports no usable `usage`)."""
        usage = completion.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        self.prompt_tokens += _count(usage.get("prompt_tokens"))
        self.completion_tokens += _count(usage.get("completion_tokens"))


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _completion(body: bytes) -> dict[str, Any]:
    """The HTTP body as a chat completion object, read as untrusted JSON."""
    data = load_json(body.decode("utf-8", "replace"), "the response body")
    if not isinstance(data, dict):
        raise JudgeResponseError("not_json", "the response body is not a JSON object")
    return data


def _answer_text(completion: dict[str, Any]) -> str | None:
    """The first choice's text; anything without text is an unusable answer."""
    choices = completion.get("choices")
    first = choices[0] if isinstance(choices, list) and choices else None
    message = first.get("message") if isinstance(first, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


async def _read_capped(response: Any, cap: int) -> bytes:
    """The body, or a `too_large` answer error as soon as it passes `cap` bytes."""
    declared = response.http_response.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > cap):
        raise JudgeResponseError("too_large", f"the response declares {declared} bytes, over the {cap}-byte cap")
    chunks, size = [], 0
    async for chunk in response.iter_bytes():
        size += len(chunk)
        if size > cap:
            raise JudgeResponseError("too_large", f"the response is over the {cap}-byte cap; answer briefly")
        chunks.append(chunk)
    return b"".join(chunks)


class OpenAIJudge(Judge):
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str,
        *,
        concurrency: int = 8,
        timeout_s: float = 60.0,
        max_retries: int = 3,
        price_per_1k_prompt: float | None = None,
        price_per_1k_completion: float | None = None,
        limits: JudgeLimits | None = None,
    ) -> None:
        """`api_key` is required by the client: endpoints without auth accept any placeholder.
        `timeout_s` bounds each phase of one HTTP attempt (connect, read, write); `max_retries` is the
        client's retry budget for transport faults. Cost is reported only when both prices are given
        (USD per 1,000 tokens). `limits` bound time, prompt and answer sizes (defaults: `JudgeLimits()`)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not api_key:
            raise ValueError("api_key is required (any placeholder for an endpoint without auth)")
        self.base_url = base_url
        self._model = model
        self._api_key = api_key
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.price_per_1k_prompt = price_per_1k_prompt
        self.price_per_1k_completion = price_per_1k_completion
        self.limits = limits or JudgeLimits()

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, **options: Any) -> OpenAIJudge:
        """From `BABYLON_JUDGE_BASE_URL`, `BABYLON_JUDGE_MODEL` and `BABYLON_JUDGE_API_KEY`, all required."""
        names = ("BABYLON_JUDGE_BASE_URL", "BABYLON_JUDGE_MODEL", "BABYLON_JUDGE_API_KEY")
        if missing := [name for name in names if not env.get(name)]:
            raise ValueError(f"the OpenAI-compatible judge needs {', '.join(missing)}")
        return cls(env[names[0]], env[names[1]], env[names[2]], **options)

    @property
    def model(self) -> str:
        return self._model

    def __repr__(self) -> str:
        return f"OpenAIJudge(base_url={self.base_url!r}, model={self._model!r}, concurrency={self.concurrency})"

    async def _judge(self, groups: list[JudgeGroup], rubric: Rubric, on_judged: OnJudged) -> list[GroupJudgment]:
        if not groups:
            return []
        semaphore = asyncio.Semaphore(self.concurrency)
        spends = [_Spend() for _ in groups]

        async def one(i: int) -> GroupJudgment:
            judgment = await self._judge_group(client, semaphore, groups[i], rubric, spends[i])
            await on_judged(i, judgment)
            return judgment

        async with openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=self.max_retries,
            http_client=capped_http_client(self.limits.max_response_bytes),
        ) as client:
            tasks = [asyncio.create_task(one(i)) for i in range(len(groups))]
            done, pending = await asyncio.wait(tasks, timeout=self.limits.window_deadline_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        late = f"window deadline: not judged within {self.limits.window_deadline_s:g} s"
        judgments = []
        for i, task in enumerate(tasks):
            if task in done:
                judgments.append(task.result())  # raises only what `on_judged` raised (the cache's store)
            else:
                judgments.append(failed := self._failed(groups[i], rubric, spends[i], late))
                await on_judged(i, failed)
        return judgments

    async def _judge_group(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, group: JudgeGroup, rubric: Rubric, spend: _Spend
    ) -> GroupJudgment:
        """The group's scores over its prompts (one, or its sub-groups'); the first failure fails it."""
        async with semaphore:
            try:
                prompts = fit_prompts(group, rubric, self.limits.max_prompt_chars, self.limits.min_trajectory_chars)
                scores: dict[str, TrajectoryScore] = {}
                for prompt in prompts:
                    outcome = await self._scores(client, prompt, spend)
                    if isinstance(outcome, str):
                        return self._failed(group, rubric, spend, outcome)
                    scores |= outcome
            except Exception as e:  # a fault no check foresaw still fails only its own group
                return self._failed(group, rubric, spend, f"internal: {type(e).__name__}")
        return self._judgment(group, rubric, spend, status="scored", scores=scores)

    async def _scores(
        self, client: openai.AsyncOpenAI, prompt: JudgePrompt, spend: _Spend
    ) -> dict[str, TrajectoryScore] | str:
        """One prompt's scores, or why it failed: up to `ANSWERS_PER_GROUP` answers, each within the deadline."""
        messages = cast(list[ChatCompletionMessageParam], list(prompt.messages))
        schema = cast(ResponseFormatJSONSchema, response_format(prompt.block_ids))
        for _ in range(ANSWERS_PER_GROUP):
            spend.calls += 1
            content: str | None = None
            try:
                async with asyncio.timeout(self.limits.call_deadline_s):
                    async with client.chat.completions.with_streaming_response.create(
                        model=self._model, messages=messages, response_format=schema,
                        max_tokens=self.limits.max_answer_tokens,
                    ) as response:
                        body = await _read_capped(response, self.limits.max_response_bytes)
                completion = _completion(body)
                spend.add_usage(completion)
                content = _answer_text(completion)
                return parse_scores(content, prompt.block_ids, self.limits.max_explanation_chars)
            except openai.OpenAIError as e:
                return f"transport: {type(e).__name__}: {e}"
            except TimeoutError:
                return f"deadline: no answer within {self.limits.call_deadline_s:g} s"
            except JudgeResponseError as e:
                error = e
                messages += [
                    {"role": "assistant", "content": clean_text(content or "", self.limits.max_explanation_chars)},
                    {"role": "user", "content": feedback_message(str(e)[:FEEDBACK_ERROR_CHARS], prompt.block_ids)},
                ]
        return f"answer: {error} (after {ANSWERS_PER_GROUP} answers)"

    def _failed(self, group: JudgeGroup, rubric: Rubric, spend: _Spend, error: str) -> GroupJudgment:
        """A failure whose message is safe to store: the API key redacted, the length bounded."""
        safe = error.replace(self._api_key, "[redacted]")
        return self._judgment(group, rubric, spend, status="judge_failed", error=safe[:ERROR_CHARS])

    def _judgment(self, group: JudgeGroup, rubric: Rubric, spend: _Spend, **outcome: Any) -> GroupJudgment:
        cost = None
        if self.price_per_1k_prompt is not None and self.price_per_1k_completion is not None:
            prompt_usd = spend.prompt_tokens * self.price_per_1k_prompt
            cost = (prompt_usd + spend.completion_tokens * self.price_per_1k_completion) / 1000
        return GroupJudgment(
            group_id=group.group_id,
            judge_model=self._model,
            rubric=rubric.name,
            prompt_tokens=spend.prompt_tokens,
            completion_tokens=spend.completion_tokens,
            cost_usd=cost,
            calls=spend.calls,
            **outcome,
        )
