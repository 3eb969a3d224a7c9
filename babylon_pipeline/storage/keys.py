"""Object keys, built only from validated parts: nothing a row, a tag or a user typed can leave its folder.

The layout:

    training-data/{window}/{name}            a window's files and its manifest
    models/{version}/{name}                  `base` or `vX.Y.Z`
    checkpoints/{batch}/checkpoint-{step}/{name}
    training-batches/{batch}/{name}          what a training run was handed
    cache/{namespace}/{id}
    benchmarks/{suite}/{name}                an evaluation suite's definition, stored once
    evaluations/{version}/{name}             a version's evaluation report

Every part is checked here and every full key again by the stores (`check_key`), so a key can never
be absolute, contain `..`, or name a hidden file (local temporary files start with a dot).
"""

from __future__ import annotations

import re

from babylon_pipeline.windows import InvalidWindowId, window_of, window_start

TRAINING_DATA = "training-data"
MODELS = "models"
CHECKPOINTS = "checkpoints"
CACHE = "cache"
TRAINING_BATCHES = "training-batches"
BENCHMARKS = "benchmarks"
EVALUATIONS = "evaluations"

# Names are ASCII, start with a letter, digit, '_' or '-', and have no '..': safe as file names everywhere.
_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
# A key segment may also be a window id, whose ':' is the only character names lack.
_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._:-]{0,127}")
_VERSION = re.compile(r"v(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})")
BASE_MODEL = "base"
MAX_KEY_LENGTH = 1024  # S3's limit, in bytes; keys are ASCII


class InvalidKey(ValueError):
    """A key, or one of its parts, that is not what its place allows."""


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or _NAME.fullmatch(value) is None or ".." in value:
        raise InvalidKey(
            f"invalid {what}: {value!r} (1-128 of letters, digits, '.', '_', '-'; not starting with '.', no '..')"
        )
    return value


def _window(window_id: object) -> str:
    try:
        start = window_start(window_id)  # type: ignore[arg-type]
    except InvalidWindowId as error:
        raise InvalidKey(f"invalid window id: {error}") from None
    if window_of(start) != window_id:  # only the canonical spelling, nothing trailing
        raise InvalidKey(f"invalid window id: {window_id!r} is not canonical (YYYY-MM-DDTHH:00)")
    return window_id


def _version(version: object) -> str:
    if version != BASE_MODEL and (not isinstance(version, str) or _VERSION.fullmatch(version) is None):
        raise InvalidKey(f"invalid model version: {version!r} (want vX.Y.Z or {BASE_MODEL!r})")
    return version  # type: ignore[return-value]


def check_key(key: object) -> str:
    """A full key: relative, '/'-separated, every segment a name or a window id. Raises `InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"invalid key: {key!r} (empty or not a string)")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"invalid key: longer than {MAX_KEY_LENGTH} characters ({key[:60]!r}...)")
    for segment in key.split("/"):
        if _SEGMENT.fullmatch(segment) is None or ".." in segment:
            raise InvalidKey(f"invalid key {key!r}: bad segment {segment!r} (absolute, empty, hidden or '..'?)")
    return key


def check_prefix(prefix: str) -> str:
    """A folder to list or bundle under: '' (everything) or a key, a trailing '/' allowed. Returned without it."""
    folder = prefix[:-1] if isinstance(prefix, str) and prefix.endswith("/") else prefix
    return "" if folder == "" else check_key(folder)


def check_name(name: object) -> str:
    """A file name inside a folder (one segment, no window-id ':')."""
    return _name(name, "file name")


def window_prefix(window_id: str) -> str:
    return f"{TRAINING_DATA}/{_window(window_id)}"


def window_key(window_id: str, name: str) -> str:
    return f"{window_prefix(window_id)}/{check_name(name)}"


def model_prefix(version: str) -> str:
    return f"{MODELS}/{_version(version)}"


def model_key(version: str, name: str) -> str:
    return f"{model_prefix(version)}/{check_name(name)}"


def checkpoint_prefix(batch_id: str, step: int) -> str:
    """The layout trainers (and HF's Trainer) use: `checkpoint-{step}`."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise InvalidKey(f"invalid checkpoint step: {step!r} (want an int >= 0)")
    return f"{CHECKPOINTS}/{_name(batch_id, 'batch id')}/checkpoint-{step}"


def checkpoint_key(batch_id: str, step: int, name: str) -> str:
    return f"{checkpoint_prefix(batch_id, step)}/{check_name(name)}"


def batch_key(batch_id: str, name: str) -> str:
    return f"{TRAINING_BATCHES}/{_name(batch_id, 'batch id')}/{check_name(name)}"


def cache_key(namespace: str, cache_id: str) -> str:
    return f"{CACHE}/{_name(namespace, 'cache namespace')}/{_name(cache_id, 'cache id')}"


def benchmark_key(suite: str, name: str) -> str:
    return f"{BENCHMARKS}/{_name(suite, 'benchmark suite')}/{check_name(name)}"


def evaluation_key(version: str, name: str) -> str:
    if version == BASE_MODEL:
        raise InvalidKey("the base is not evaluated: want a version vX.Y.Z")
    return f"{EVALUATIONS}/{_version(version)}/{check_name(name)}"
