"""What every object store offers: whole objects, put atomically, addressed by checked keys.

Pipeline code talks to this interface only, so the embedded profile (local files) and production
(any S3-compatible server) run the same assets. A reader sees an object whole or not at all; keys
are checked by `keys.check_key` on every call, whatever built them.
"""

from __future__ import annotations

import json
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


class ObjectNotFound(KeyError):
    """No object at this key (a `KeyError`, so `except KeyError` callers keep working)."""

    def __str__(self) -> str:
        return f"no object at {self.args[0]!r}"


class ObjectStore(ABC):
    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Create or replace the object atomically."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole object; `ObjectNotFound` when there is none."""

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The whole object and its version, for `put_if_unchanged`; `ObjectNotFound` when there is none."""

    @abstractmethod
    def put_if_unchanged(self, key: str, data: bytes, version: str | None) -> bool:
        """Replace the object only if it is still at `version` (`None`: only if there is none).

        False, with nothing written, when another writer changed it since it was read: the caller
        reads again and redoes its change, instead of overwriting the other writer's."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None:
        """Upload a local file without loading it whole (model weights, large windows), atomically."""

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None:
        """Download to `path`, streamed; `path` is replaced only once the download is complete."""

    def move_file(self, key: str, path: Path) -> None:
        """`put_file` for a file the caller gives up: it is gone afterwards. A local store renames it
        into place instead of copying it (large window files are written once, not twice)."""
        self.put_file(key, path)
        Path(path).unlink()

    @contextmanager
    def open_file(self, key: str) -> Iterator[IO[bytes]]:
        """The object open for reading, as it was when opened: a later replace does not change what
        is read. A local store opens it in place; others download it to a temporary file first."""
        with tempfile.TemporaryDirectory(prefix="babylon-read-") as tmp:
            path = Path(tmp) / "object"
            self.get_file(key, path)
            with path.open("rb") as handle:
                yield handle

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every key under the folder `prefix` ('' for all; a trailing '/' is optional), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; deleting an absent key is not an error (S3's behaviour)."""

    def put_json(self, key: str, value: Any) -> None:
        """Canonical JSON (sorted keys, UTF-8, no NaN): equal values give equal bytes, hence equal hashes."""
        text = json.dumps(value, indent=1, sort_keys=True, ensure_ascii=False, allow_nan=False)
        self.put_bytes(key, text.encode("utf-8"))

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key).decode("utf-8"))
