"""RULER over any OpenAI-compatible chat-completions endpoint.

One call per group, at most `concurrency` groups at once. Transport faults (timeouts, 429, 5xx,
refused connections) are the `openai` client's to retry, with its exponential backoff and
`Retry-After` handling; what is still failing after `max_retries` marks the group `judge_failed`.
An answer that does not parse or does not match the group gets one retry with the error spelled
out to the judge; a second bad answer marks the group `judge_failed`. Scores are never guessed.
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

from babylon_pipeline.ruler.judge import Judge
from babylon_pipeline.ruler.prompt import build_prompt, feedback_message
from babylon_pipeline.ruler.response import JudgeResponseError, parse_scores, response_format
from babylon_pipeline.ruler.rubrics import Rubric
from babylon_pipeline.ruler.types import GroupJudgment, JudgeGroup

ANSWERS_PER_GROUP = 2
"""The first answer and the one retry with feedback."""
ERROR_CHARS = 400


@dataclass
class _Spend:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add_usage(self, completion: object) -> None:
        """Tokens as the endpoint reports them (none when it reports no `usage`)."""
        usage = getattr(completion, "usage", None)
        self.prompt_tokens += getattr(usage, "prompt_tokens", None) or 0
        self.completion_tokens += getattr(usage, "completion_tokens", None) or 0


def _answer_text(completion: object) -> str | None:
    """The first choice's text. Endpoints answer in odd shapes (the client returns a non-JSON body
    as a plain string, missing fields as None); anything without text is an unusable answer."""
    choices = getattr(completion, "choices", None)
    content = getattr(getattr(choices[0], "message", None), "content", None) if choices else None
    return content if isinstance(content, str) else None


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
    ) -> None:
        """`api_key` is required by the client: endpoints without auth accept any placeholder.
        `timeout_s` bounds each phase of one HTTP attempt (connect, read, write); `max_retries` is the
        client's retry budget for transport faults. Cost is reported only when both prices are given
        (USD per 1,000 tokens)."""
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

    async def _judge(self, groups: list[JudgeGroup], rubric: Rubric) -> list[GroupJudgment]:
        if not groups:
            return []
        semaphore = asyncio.Semaphore(self.concurrency)
        async with openai.AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key, timeout=self.timeout_s, max_retries=self.max_retries
        ) as client:
            return list(await asyncio.gather(*(self._judge_group(client, semaphore, g, rubric) for g in groups)))

    async def _judge_group(
        self, client: openai.AsyncOpenAI, semaphore: asyncio.Semaphore, group: JudgeGroup, rubric: Rubric
    ) -> GroupJudgment:
        prompt = build_prompt(group, rubric)
        messages = cast(list[ChatCompletionMessageParam], list(prompt.messages))
        schema = cast(ResponseFormatJSONSchema, response_format(prompt.block_ids))
        spend = _Spend()
        async with semaphore:
            for _ in range(ANSWERS_PER_GROUP):
                spend.calls += 1
                try:
                    completion = await client.chat.completions.create(
                        model=self._model, messages=messages, response_format=schema
                    )
                except openai.OpenAIError as e:
                    return self._failed(group, rubric, spend, f"transport: {type(e).__name__}: {e}")
                spend.add_usage(completion)
                content = _answer_text(completion)
                try:
                    scores = parse_scores(content, prompt.block_ids)
                except JudgeResponseError as e:
                    error = e
                    messages += [
                        {"role": "assistant", "content": content or ""},
                        {"role": "user", "content": feedback_message(str(e), prompt.block_ids)},
                    ]
                    continue
                return self._judgment(group, rubric, spend, status="scored", scores=scores)
        return self._failed(group, rubric, spend, f"answer: {error} (after {ANSWERS_PER_GROUP} answers)")

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
