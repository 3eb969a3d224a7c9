"""Objects as files under one folder: the embedded profile's object store.

Each write goes through `atomic_write` (temporary file beside the target, fsync, `os.replace`), or,
for a file the caller gives up, a durable rename of that file.
Keys are checked, then resolved and required to stay under the root, so neither `..` nor a
symbolic link planted inside the root can make a key read or write elsewhere.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from babylon_pipeline.storage.atomic import TEMP_PREFIX, atomic_write, durable_rename
from babylon_pipeline.storage.base import ObjectNotFound, ObjectStore
from babylon_pipeline.storage.keys import InvalidKey, check_key, check_prefix

_CHUNK = 1 << 20


class LocalObjectStore(ObjectStore):
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self.root)!r})"

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKey(f"key {key!r} resolves outside the store's root (a symbolic link?)")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        atomic_write(self._path(key), lambda handle: handle.write(data))

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get_bytes(key)
        return data, hashlib.sha256(data).hexdigest()

    def put_if_unchanged(self, key: str, data: bytes, version: str | None) -> bool:
        """Compare and replace under an exclusive lock on a hidden file beside the object, which
        every conditional writer of that key takes (a plain `put_bytes` does not)."""
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / f"{TEMP_PREFIX}{path.name}.lock", "ab") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current = hashlib.sha256(path.read_bytes()).hexdigest()
            except FileNotFoundError:
                current = None
            if current != version:
                return False
            atomic_write(path, lambda handle: handle.write(data))
            return True

    def put_file(self, key: str, path: Path) -> None:
        def copy(handle) -> None:
            with open(path, "rb") as source:
                shutil.copyfileobj(source, handle, _CHUNK)

        atomic_write(self._path(key), copy)

    def move_file(self, key: str, path: Path) -> None:
        """A rename when `path` is on the store's file system (no copy), else a copy."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            durable_rename(Path(path), target)
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
            super().move_file(key, path)

    @contextmanager
    def open_file(self, key: str) -> Iterator[IO[bytes]]:
        """In place: objects are replaced by rename, so an open handle keeps reading the version it opened."""
        try:
            handle = open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        with handle:
            yield handle

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def get_file(self, key: str, path: Path) -> None:
        try:
            source = open(self._path(key), "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None
        with source:
            atomic_write(Path(path), lambda handle: shutil.copyfileobj(source, handle, _CHUNK))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_keys(self, prefix: str) -> list[str]:
        folder = check_prefix(prefix)
        base = self._path(folder) if folder else self.root
        keys = []
        for parent, _dirs, files in os.walk(base):  # a missing folder walks as empty; links are not followed
            for name in files:
                if not name.startswith(TEMP_PREFIX):
                    keys.append((Path(parent) / name).relative_to(self.root).as_posix())
        return sorted(keys)

    def delete(self, key: str) -> None:
        """Empty folders are left behind: removing them could race a writer creating a file in them."""
        try:
            self._path(key).unlink(missing_ok=True)
        except IsADirectoryError:
            pass
