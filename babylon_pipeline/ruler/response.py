"""The judge's answer: the JSON schema requested from the endpoint, and a strict parser.

Endpoints that honour `response_format` constrain the answer to the schema (ids included); the
parser checks everything again because many OpenAI-compatible servers ignore it. A parse error
names exactly what was wrong, so the judge can be told in its one retry.

Both the HTTP body and the answer inside it are read with `load_json`, which refuses what would
make `json.loads` raise something other than a decode error or take unbounded work: nesting deeper
than `MAX_DEPTH` (a 1,200-deep answer is a `RecursionError` otherwise) and integers longer than
`MAX_INT_DIGITS` (over 4,300 digits is a `ValueError` otherwise). Every answer fault is thus a
`JudgeResponseError`, which costs the group a retry and then a `judge_failed`, never the window.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from babylon_pipeline.ruler.types import TrajectoryScore

ErrorKind = Literal["not_json", "too_large", "bad_shape", "wrong_count", "unknown_ids", "duplicate_ids", "bad_score"]
_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```$", re.DOTALL)
_BRACKETS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
"""A JSON string (skipped whole, brackets inside it included) or one bracket."""
MAX_DEPTH = 32
"""An answer needs 3 levels and a chat completion fewer than 10."""
MAX_INT_DIGITS = 30


class JudgeResponseError(ValueError):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def response_format(block_ids: Sequence[str]) -> dict[str, Any]:
    """`response_format` for the chat-completions call: the answer schema, ids restricted to the group's."""
    score_item = {
        "type": "object",
        "properties": {
            "trajectory_id": {"type": "string", "enum": list(block_ids)},
            "explanation": {"type": "string"},
            "score": {"type": "number", "description": "from 0 to 1"},
        },
        "required": ["trajectory_id", "explanation", "score"],
        "additionalProperties": False,
    }
    schema = {
        "type": "object",
        "properties": {"scores": {"type": "array", "items": score_item}},
        "required": ["scores"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "ruler_scores", "strict": True, "schema": schema}}


def _nesting(text: str) -> int:
    """How deep `text`'s brackets nest (outside strings), counting no further than `MAX_DEPTH + 1`."""
    depth = 0
    for match in _BRACKETS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return depth
        elif token in "]}":
            depth -= 1
    return 0


def _int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise JudgeResponseError("not_json", f"an integer has {len(digits.lstrip('-'))} digits")
    return int(digits)


def load_json(text: str, what: str = "the answer") -> Any:
    """`json.loads` for untrusted text: every refusal is a `JudgeResponseError("not_json", ...)`."""
    if _nesting(text) > MAX_DEPTH:
        raise JudgeResponseError("not_json", f"{what} nests deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_int=_int)
    except JudgeResponseError:
        raise
    except json.JSONDecodeError as e:
        raise JudgeResponseError("not_json", f"{what} is not JSON ({e.msg} at position {e.pos})") from None
    except (RecursionError, ValueError) as e:
        raise JudgeResponseError("not_json", f"{what} is not usable JSON ({type(e).__name__})") from None


def clean_text(text: str, limit: int) -> str:
    """Text safe to store in any database: lone surrogates and NULs replaced, cut to `limit` characters."""
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").replace("\x00", "\ufffd")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _entry(item: Any, index: int, explanation_chars: int) -> tuple[str, TrajectoryScore]:
    if not isinstance(item, dict):
        raise JudgeResponseError("bad_shape", f"scores[{index}] is not an object")
    missing = [key for key in ("trajectory_id", "explanation", "score") if key not in item]
    if missing:
        raise JudgeResponseError("bad_shape", f"scores[{index}] lacks {', '.join(missing)}")
    tid, explanation, score = item["trajectory_id"], item["explanation"], item["score"]
    if not isinstance(tid, str):
        raise JudgeResponseError("bad_shape", f"scores[{index}].trajectory_id is not a string: {_short(tid)}")
    if not isinstance(explanation, str):
        raise JudgeResponseError("bad_shape", f"scores[{index}].explanation is not a string")
    if isinstance(score, bool) or not isinstance(score, int | float):
        raise JudgeResponseError("bad_score", f"score of {tid!r} is not a number: {_short(score)}")
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise JudgeResponseError("bad_score", f"score of {tid!r} is {score}, outside [0, 1]")
    return tid, TrajectoryScore(score=float(score), explanation=clean_text(explanation, explanation_chars))


def parse_scores(
    content: str | None, expected_ids: Sequence[str], explanation_chars: int = 2_000
) -> dict[str, TrajectoryScore]:
    """Scores keyed by trajectory id, exactly one per expected id (no id that was not sent, none
    twice), or a `JudgeResponseError`. Explanations are stored cleaned and cut to `explanation_chars`."""
    text = (content or "").strip()
    if not text:
        raise JudgeResponseError("not_json", "the answer has no text")
    if fenced := _FENCE.match(text):
        text = fenced.group(1)
    data = load_json(text)
    if not isinstance(data, dict) or "scores" not in data:
        raise JudgeResponseError("bad_shape", 'the answer is not an object with a "scores" key')
    if not isinstance(data["scores"], list):
        raise JudgeResponseError("bad_shape", '"scores" is not a list')
    entries = [_entry(item, i, explanation_chars) for i, item in enumerate(data["scores"])]
    answered = [tid for tid, _ in entries]
    expected = set(expected_ids)
    if unknown := [tid for tid in answered if tid not in expected]:
        raise JudgeResponseError("unknown_ids", f"unknown trajectory_id values {unknown}; expected ids are {list(expected_ids)}")
    if duplicates := sorted(tid for tid, n in Counter(answered).items() if n > 1):
        raise JudgeResponseError("duplicate_ids", f"trajectory_id values scored more than once: {duplicates}")
    if len(entries) != len(expected_ids):
        raise JudgeResponseError("wrong_count", f"expected {len(expected_ids)} scores, got {len(entries)}; "
                                 f"missing {[tid for tid in expected_ids if tid not in answered]}")
    return dict(entries)
