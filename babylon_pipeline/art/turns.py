"""One recorded LLM call as ART chat turns: the user prompt as a plain message, the response as a
Choice-shaped dict (a trainable assistant turn in ART's format).

The dicts have exactly the keys `openai.types.chat.chat_completion.Choice.model_dump(mode="json")`
produces, so an ART `Trajectory` rebuilt from them dumps back to the same JSON.

Recorded token logprobs become `logprobs.content`. A call without them, with none, or with a
non-finite one (JSON cannot hold it) gets `logprobs: null`: ART then trains on it only with
`allow_training_without_logprobs`. When every token of a call carries its id, the token is written
as `token_id:<id>`, the form vLLM's `return_tokens_as_token_ids` emits and ART's tokenizer reads
ids from; otherwise the token text is kept and ART maps it through the tokenizer. `bytes` is
always the UTF-8 of the recorded token text.
"""

from __future__ import annotations

import math
from typing import Any

from babylon_pipeline.store.records import LLMCall, TokenLogprob


def system_prompt(call: LLMCall) -> str:
    """The call's system prompt; logger rows may carry it only inside `messages`."""
    return call.system_prompt or _last_content(call, "system")


def user_message(call: LLMCall) -> dict[str, Any]:
    return {"role": "user", "content": call.user_prompt or _last_content(call, "user")}


def assistant_choice(call: LLMCall) -> dict[str, Any]:
    """The response as a Choice dict, keys in openai's field order."""
    tokens = call.logprobs if has_logprobs(call) else None
    return {
        "finish_reason": "stop",
        "index": 0,
        "logprobs": None if tokens is None else {"content": _token_logprobs(tokens), "refusal": None},
        "message": {
            "content": call.response,
            "refusal": None,
            "role": "assistant",
            "annotations": None,
            "audio": None,
            "function_call": None,
            "tool_calls": None,
        },
    }


def has_logprobs(call: LLMCall) -> bool:
    """Whether the call's recorded logprobs can be exported (present, non-empty, all finite)."""
    tokens = call.logprobs or []
    return bool(tokens) and all(math.isfinite(token.logprob) for token in tokens)


def is_choice(turn: dict[str, Any]) -> bool:
    """Choice dicts are told from chat messages the way ART's JSON allows: a message has a role."""
    return "role" not in turn and "message" in turn


def _token_logprobs(tokens: list[TokenLogprob]) -> list[dict[str, Any]]:
    as_ids = bool(tokens) and all(token.token_id is not None for token in tokens)
    return [
        {
            "token": f"token_id:{token.token_id}" if as_ids else token.token,
            "bytes": list(token.token.encode("utf-8")),
            "logprob": token.logprob,
            "top_logprobs": [],
        }
        for token in tokens
    ]


def _last_content(call: LLMCall, role: str) -> str:
    for message in reversed(call.messages or []):
        if message.get("role") == role and isinstance(message.get("content"), str):
            return message["content"]
    return ""
