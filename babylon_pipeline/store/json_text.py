"""JSON text from the Babylon tables, read so that no value in it can stop a window.

Everything read here is stored again inside a larger JSON line (`trajectories.jsonl`,
`index.jsonl`) that later stages parse with pydantic-core, which refuses more than 201 levels of
nesting. So a column is accepted only up to `MAX_DEPTH` levels: the fast path parses the text
wrapped in `_PAD` arrays, which makes pydantic-core's own limit the check. That costs a copy and
7 % more time on a 10 KB stepsJson, so text that cannot nest that deep (each level takes an opening
bracket: short text, or text with few brackets, counted in C) is parsed as it is.

What the fast parser refuses goes to `json.loads`, which reads what the app does write:
lone UTF-16 surrogate escapes (`"\\ud83d"`, JavaScript's `JSON.stringify` of a post cut inside an
emoji). No encoder of a later stage can write those, so each broken half becomes U+FFFD and the
rest of the text is kept. Everything else is refused with `JsonRefused`: invalid JSON, integers
of more than 4,300 digits (Python refuses to read them), nesting deeper than `MAX_DEPTH`.
"""

from __future__ import annotations

import json
import re
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

T = TypeVar("T")

PARSER_DEPTH = 201  # pydantic-core's limit (jiter's recursion limit) on nesting
MAX_DEPTH = 192
"""Levels of nesting a column may use: stored lines nest a column one level deeper, 8 spare."""
_PAD = PARSER_DEPTH - MAX_DEPTH
_SHALLOW = 2 * MAX_DEPTH  # characters: no text this short nests deeper than MAX_DEPTH
_OPEN, _CLOSE, _OPEN_BYTES, _CLOSE_BYTES = "[" * _PAD, "]" * _PAD, b"[" * _PAD, b"]" * _PAD
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonRefused(ValueError):
    """JSON text the reader cannot use; `too_deep` tells nesting apart from the other faults."""

    def __init__(self, message: str, *, too_deep: bool = False) -> None:
        super().__init__(message)
        self.too_deep = too_deep


def loads(text: str | bytes) -> Any:
    """Any JSON value, nested at most `MAX_DEPTH` levels, with lone surrogates replaced."""
    if _shallow(text):
        try:
            return from_json(text)
        except ValueError as error:
            return _slow_loads(text, str(error))
    try:
        value = from_json(_padded(text))
    except ValueError as error:
        return _slow_loads(text, str(error))
    for _ in range(_PAD):
        value = value[0]
    return value


class JsonOf(Generic[T]):
    """Validates JSON text into `shape` within `loads`' limits, by pydantic-core's own validator."""

    def __init__(self, shape: Any) -> None:
        self.adapter: TypeAdapter[T] = TypeAdapter(shape)
        self._validate = self.adapter.validator.validate_json
        padded = shape
        for _ in range(_PAD):
            padded = list[padded]
        self._validate_padded = TypeAdapter(padded).validator.validate_json  # without its Python wrapper

    def validate_json(self, text: str | bytes) -> T:
        """A value of the wrong shape raises the `ValidationError` of `shape` itself, not of its padded form."""
        shallow = _shallow(text)
        try:
            value = self._validate(text) if shallow else self._validate_padded(_padded(text))
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            if first["type"] != "json_invalid":
                return self.adapter.validate_json(text)  # raises the same fault, located in `text` itself
            return self.adapter.validate_python(_slow_loads(text, first["msg"]))
        if not shallow:
            for _ in range(_PAD):
                value = value[0]
        return value


def _shallow(text: str | bytes) -> bool:
    """Whether `text` surely nests at most `MAX_DEPTH` levels: too short, or too few opening brackets."""
    if len(text) <= _SHALLOW:
        return True
    if isinstance(text, str):
        return text.count("[") + text.count("{") <= MAX_DEPTH
    return text.count(b"[") + text.count(b"{") <= MAX_DEPTH


def _padded(text: str | bytes) -> str | bytes:
    if isinstance(text, bytes):
        return _OPEN_BYTES + text + _CLOSE_BYTES
    return _OPEN + text + _CLOSE


def _slow_loads(text: str | bytes, refused_because: str) -> Any:
    if "recursion limit" in refused_because:
        raise JsonRefused(f"nested more than {MAX_DEPTH} levels deep", too_deep=True)
    try:
        value = json.loads(text)
    except RecursionError:
        raise JsonRefused(f"nested more than {MAX_DEPTH} levels deep", too_deep=True) from None
    except ValueError as error:  # JSONDecodeError, an integer too long, bytes that are not UTF-8
        raise JsonRefused(getattr(error, "msg", None) or str(error).split(":")[0]) from None
    return _sanitised(value)


def _clean(text: str) -> str:
    """`json.loads` joins escaped surrogate pairs, so every surrogate left is a broken half."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _sanitised(value: Any) -> Any:
    """`value` with lone surrogates replaced in every string and key; refused if nested too deep.

    Walked with a stack, not recursion: `json.loads` reads nesting deeper than Python recurses."""
    if isinstance(value, str):
        return _clean(value)
    stack = [(value, 1)] if isinstance(value, list | dict) else []
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise JsonRefused(f"nested more than {MAX_DEPTH} levels deep", too_deep=True)
        if isinstance(node, dict):
            if not all(key.isascii() for key in node):
                cleaned = {_clean(key): item for key, item in node.items()}
                node.clear()
                node.update(cleaned)
            items = node.items()
        else:
            items = enumerate(node)
        for key, item in list(items):
            if isinstance(item, str):
                node[key] = _clean(item)
            elif isinstance(item, list | dict):
                stack.append((item, depth + 1))
    return value
