"""Object keys, built only from validated parts: nothing a row or a user typed can escape its folder."""

from __future__ import annotations

import re

from babylon_pipeline.windows import InvalidWindowId, window_start

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_VERSION = re.compile(r"^v\d+\.\d+\.\d+$")


class InvalidKey(ValueError):
    """A key part that is not what its place allows."""


def _part(value: str, what: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise InvalidKey(f"invalid {what}: {value!r} (letters, digits, '.', '_', '-'; at most 128)")
    return value


def _window(window_id: str) -> str:
    try:
        window_start(window_id)
    except InvalidWindowId as error:
        raise InvalidKey(str(error)) from None
    return window_id


def check_key(key: str) -> str:
    """A full key: relative, slash-separated, every segment a valid part (window ids allowed)."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"invalid key: {key!r}")
    for segment in key.split("/"):
        if _NAME.match(segment.replace(":", "_")) is None or ".." in segment:
            raise InvalidKey(f"invalid key segment {segment!r} in {key!r}")
    return key


def window_key(window_id: str, name: str) -> str:
    return f"training-data/{_window(window_id)}/{_part(name, 'file name')}"


def model_key(version: str, name: str) -> str:
    if version != "base" and not _VERSION.match(version or ""):
        raise InvalidKey(f"invalid model version: {version!r} (want vX.Y.Z or base)")
    return f"models/{version}/{_part(name, 'file name')}"


def checkpoint_key(batch_id: str, step: int, name: str) -> str:
    if not isinstance(step, int) or step < 0:
        raise InvalidKey(f"invalid checkpoint step: {step!r}")
    return f"checkpoints/{_part(batch_id, 'batch id')}/checkpoint-{step}/{_part(name, 'file name')}"
