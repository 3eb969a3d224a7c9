"""`groups.jsonl`: one ART group per line, byte-for-byte the same for the same groups.

Keys keep ART's field order (not sorted), separators are compact, text stays UTF-8, and NaN or
infinity is refused rather than written as JSON no other reader accepts. The encoder is
pydantic-core's (3x faster than `json.dumps` on large groups); it writes small floats without an
exponent (`-0.0000712`), which every JSON reader parses to the same number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from pydantic_core import to_json


def to_jsonl(groups: Iterable[dict[str, Any]]) -> bytes:
    lines = []
    for group in groups:
        _refuse_non_finite(group)
        lines.append(to_json(group) + b"\n")
    return b"".join(lines)


def from_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def _refuse_non_finite(group: dict[str, Any]) -> None:
    """The ART schema's numbers live in metrics, metadata, rewards and token logprobs; the encoder
    would quietly write NaN as null. Choices carry logprobs only when all are finite
    (`turns.has_logprobs`), so the rest are checked here."""
    numbers = [*group.get("metrics", {}).values()]
    for trajectory in group["trajectories"]:
        numbers += [trajectory["reward"], *trajectory["metrics"].values(), *trajectory["metadata"].values()]
    bad = next((n for n in numbers if isinstance(n, float) and not math.isfinite(n)), None)
    if bad is not None:
        raise ValueError(f"group {group.get('metadata', {}).get('group_id')!r} holds {bad}: JSON cannot")
