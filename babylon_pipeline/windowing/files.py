"""A window's files in the object store, and its manifest: the one object readers trust.

`training-data/{window}/manifest.json` lists every file of the window that is completely stored,
with its size and sha256. Each stage uploads its files first and rewrites the manifest last, so a
reader following the manifest sees either the previous or the new version of a file, never a part.
The rewrite is conditional on the manifest being the one the stage read (S3 `If-Match`), so two
stages publishing to one window at once cannot drop each other's entries.
A file that is absent from the manifest, or whose hash differs, is treated as not there.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO, Any

from babylon_pipeline.storage.base import ObjectNotFound, ObjectStore
from babylon_pipeline.storage.keys import window_key

TRAJECTORIES = "trajectories.jsonl"
INDEX = "index.jsonl"
QUARANTINE = "quarantine.jsonl"
OUTCOME_REWARDS = "outcome_rewards.json"
ARMS = "arms.json"
GROUPS = "groups.jsonl"
RULER_SCORES = "ruler_scores.json"
MANIFEST = "manifest.json"
MANIFEST_ATTEMPTS = 50  # an attempt is lost only to another stage's successful write


class ManifestContended(RuntimeError):
    """Other writers kept changing the window's manifest; its files are stored, but not yet listed."""


class WindowFileMissing(FileNotFoundError):
    """A stage's input is not (completely) stored: its upstream asset has not run for this window."""


def _digest(handle: IO[bytes]) -> tuple[str, int]:
    sha, size = hashlib.sha256(), 0
    while chunk := handle.read(1 << 20):
        sha.update(chunk)
        size += len(chunk)
    return sha.hexdigest(), size


def read_manifest(store: ObjectStore, window_id: str) -> dict[str, Any]:
    return _versioned_manifest(store, window_id)[0]


def _versioned_manifest(store: ObjectStore, window_id: str) -> tuple[dict[str, Any], str | None]:
    try:
        text, version = store.get_versioned(window_key(window_id, MANIFEST))
    except ObjectNotFound:
        return {"window": window_id, "files": {}}, None
    return json.loads(text), version


def _record_in_manifest(store: ObjectStore, window_id: str, entries: dict[str, Any]) -> None:
    """Read, merge, write only if no other stage wrote the manifest meanwhile, else again: two stages
    publishing to one window at once both keep their entries."""
    for _ in range(MANIFEST_ATTEMPTS):
        manifest, version = _versioned_manifest(store, window_id)
        manifest["files"] = {**manifest["files"], **entries}
        text = json.dumps(manifest, indent=1, sort_keys=True).encode()
        if store.put_if_unchanged(window_key(window_id, MANIFEST), text, version):
            return
    raise ManifestContended(f"the manifest of window {window_id} changed under each of {MANIFEST_ATTEMPTS} attempts")


def publish_window_files(store: ObjectStore, window_id: str, files: Mapping[str, Path | bytes], writer: str) -> None:
    """Store the files, then record them in the manifest (the last write).

    Paths are the caller's finished temporary files: they are moved into the store, which for a
    local store is a rename, not a copy. A file is hashed in a thread while it uploads: both run
    outside the GIL, so a large window waits for the longer of the two, not for both."""
    entries = {}
    with tempfile.TemporaryDirectory(prefix="babylon-publish-") as tmp, ThreadPoolExecutor(max_workers=1) as hasher:
        for name, content in files.items():
            path = content if isinstance(content, Path) else Path(tmp) / name
            if not isinstance(content, Path):
                path.write_bytes(content)
            with path.open("rb") as handle:
                digest = hasher.submit(_digest, handle)
                store.move_file(window_key(window_id, name), path)
                sha256, size = digest.result()
            entries[name] = {"sha256": sha256, "bytes": size, "writer": writer}
    _record_in_manifest(store, window_id, entries)


@contextmanager
def open_window_file(store: ObjectStore, window_id: str, name: str) -> Iterator[IO[bytes]]:
    """A published file, checked against the manifest, open for reading."""
    with open_window_files(store, window_id, name) as (handle,):
        yield handle


@contextmanager
def open_window_files(store: ObjectStore, window_id: str, *names: str) -> Iterator[list[IO[bytes]]]:
    """Published files checked against one reading of the manifest, so they are of one publish:
    a file rewritten meanwhile no longer matches and is refused."""
    with open_listed_files(store, window_id, read_manifest(store, window_id)["files"], *names) as handles:
        yield handles


@contextmanager
def open_listed_files(
    store: ObjectStore, window_id: str, listed: Mapping[str, Any], *names: str
) -> Iterator[list[IO[bytes]]]:
    """`open_window_files` against manifest entries the caller has read, to decide which files to open."""
    with ExitStack() as opened:
        handles = []
        for name in names:
            entry = listed.get(name)
            if entry is None:
                raise WindowFileMissing(f"{name} of window {window_id} is not published yet")
            handle = opened.enter_context(store.open_file(window_key(window_id, name)))
            if _digest(handle)[0] != entry["sha256"]:
                raise WindowFileMissing(f"{name} of window {window_id} does not match its manifest (being rewritten?)")
            handle.seek(0)
            handles.append(handle)
        yield handles


def read_window_json(store: ObjectStore, window_id: str, name: str) -> Any:
    with open_window_file(store, window_id, name) as handle:
        return json.load(handle)


def write_window_json(store: ObjectStore, window_id: str, name: str, value: Any, writer: str) -> None:
    write_window_jsons(store, window_id, {name: value}, writer)


def write_window_jsons(store: ObjectStore, window_id: str, documents: Mapping[str, Any], writer: str) -> None:
    """Published together. Compact, keys sorted: `indent` would switch `json` to its pure-Python
    encoder, 10x slower."""
    files = {name: json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
             for name, value in documents.items()}
    publish_window_files(store, window_id, files, writer)
