"""`groups.jsonl`: one ART group per line, byte-for-byte the same for the same groups.

Keys keep ART's field order (not sorted), separators are compact, text stays UTF-8, and NaN or
infinity is refused rather than written as JSON no other reader accepts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def to_jsonl(groups: Iterable[dict[str, Any]]) -> bytes:
    return b"".join(
        json.dumps(group, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"
        for group in groups
    )


def from_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]
