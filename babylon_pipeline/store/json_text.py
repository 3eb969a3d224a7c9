"""JSON text from the Babylon tables, read so that no value in it can stop a window.

Everything read here is stored again inside a larger JSON line (`trajectories.jsonl`,
`index.jsonl`) that later stages parse with pydantic-core, which refuses more than `PARSER_DEPTH`
levels of nesting. A value that the line holds `deeper` levels down may therefore nest at most
`PARSER_DEPTH - deeper` levels itself: the trajectory's columns sit one level down, a logged call's
`messagesJson` five (`steps[step{llmCalls[call{messages`). The fast path checks this with
pydantic-core's own limit, by parsing the text wrapped in `deeper` arrays (one copy: 0.4 µs of the
40 µs a row with a 10 KB stepsJson takes); text too short to nest that deep (each level takes two
characters) is parsed as it is.

What the fast parser refuses goes to `json.loads`, which reads what the app does write:
lone UTF-16 surrogate escapes (`"\\ud83d"`, JavaScript's `JSON.stringify` of a post cut inside an
emoji). No encoder of a later stage can write those, so each broken half becomes U+FFFD and the
rest of the text is kept. Everything else is refused with `JsonRefused`: invalid JSON, integers
of more than 4,300 digits (Python refuses to read them), nesting deeper than allowed.
"""

from __future__ import annotations

import json
import re
from typing import Any, Generic, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_core import from_json

T = TypeVar("T")

PARSER_DEPTH = 201  # pydantic-core's limit (jiter's recursion limit) on nesting
IN_LINE = 1  # a trajectory column's place in a stored line: one level down
_SURROGATE = re.compile("[\ud800-\udfff]")


class JsonRefused(ValueError):
    """JSON text the reader cannot use; `too_deep` tells nesting apart from the other faults."""

    def __init__(self, message: str, *, too_deep: bool = False) -> None:
        super().__init__(message)
        self.too_deep = too_deep


def max_depth(deeper: int = IN_LINE) -> int:
    """How deep a value may nest that is stored `deeper` levels down in a line."""
    return PARSER_DEPTH - deeper


def loads(text: str | bytes, *, deeper: int = IN_LINE) -> Any:
    """Any JSON value, nested at most `max_depth(deeper)` levels, with lone surrogates replaced."""
    if len(text) > 2 * (PARSER_DEPTH - deeper):  # max_depth(deeper), inlined: called for every column
        return _loads_padded(text, deeper)
    try:
        return from_json(text)  # too short to nest past the limit
    except ValueError as error:
        return _slow_loads(text, str(error), deeper)


def _loads_padded(text: str | bytes, deeper: int) -> Any:
    try:
        value = from_json(_padded(text, deeper))
    except ValueError as error:
        return _slow_loads(text, str(error), deeper)
    return _unpadded(value, deeper)


class JsonOf(Generic[T]):
    """Validates JSON text into `shape` within `loads`' limits, by pydantic-core's own validator."""

    def __init__(self, shape: Any, *, deeper: int = IN_LINE) -> None:
        self.adapter: TypeAdapter[T] = TypeAdapter(shape)
        self._deeper = deeper
        self._open, self._close = "[" * deeper, "]" * deeper
        padded = shape
        for _ in range(deeper):
            padded = list[padded]
        self._validate_padded = TypeAdapter(padded).validator.validate_json  # without its Python wrapper

    def validate_json(self, text: str | bytes) -> T:
        """A value of the wrong shape raises the `ValidationError` of `shape` itself, not of its padded form.

        Called for every row's stepsJson: text one level down is padded and unpadded inline (the two
        helper calls cost about as much as the copy itself)."""
        padded = f"{self._open}{text}{self._close}" if isinstance(text, str) else _padded(text, self._deeper)
        try:
            value = self._validate_padded(padded)
        except ValidationError as error:
            first = error.errors(include_url=False, include_input=False)[0]
            if first["type"] != "json_invalid":
                return self.adapter.validate_json(text)  # raises the same fault, located in `text` itself
            return self.adapter.validate_python(_slow_loads(text, first["msg"], self._deeper))
        return value[0] if self._deeper == 1 else _unpadded(value, self._deeper)


def _padded(text: str | bytes, deeper: int) -> str | bytes:
    """`text` inside `deeper` arrays, copied once: `"[" + text + "]"` copied a 10 KB stepsJson twice."""
    if isinstance(text, bytes):
        return b"".join((b"[" * deeper, text, b"]" * deeper))
    return "".join(("[" * deeper, text, "]" * deeper))


def _unpadded(value: Any, deeper: int) -> Any:
    for _ in range(deeper):
        value = value[0]
    return value


def _slow_loads(text: str | bytes, refused_because: str, deeper: int) -> Any:
    too_deep = JsonRefused(f"nested more than {max_depth(deeper)} levels deep", too_deep=True)
    if "recursion limit" in refused_because:
        raise too_deep
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep from None
    except ValueError as error:  # JSONDecodeError, an integer too long, bytes that are not UTF-8
        raise JsonRefused(getattr(error, "msg", None) or str(error).split(":")[0]) from None
    return _sanitised(value, max_depth(deeper), too_deep)


def _clean(text: str) -> str:
    """`json.loads` joins escaped surrogate pairs, so every surrogate left is a broken half."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _sanitised(value: Any, limit: int, too_deep: JsonRefused) -> Any:
    """`value` with lone surrogates replaced in every string and key; refused if nested too deep.

    Walked with a stack, not recursion: `json.loads` reads nesting deeper than Python recurses."""
    if isinstance(value, str):
        return _clean(value)
    stack = [(value, 1)] if isinstance(value, list | dict) else []
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise too_deep
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
