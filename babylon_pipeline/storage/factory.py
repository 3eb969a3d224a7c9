"""An object store from its URL: `file:///abs/path` or `s3://bucket[/prefix]`."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.storage.local import LocalObjectStore
from babylon_pipeline.storage.s3 import S3ObjectStore


class UnsupportedStorageUrl(ValueError):
    pass


def open_object_store(url: str, s3_client: Any = None) -> ObjectStore:
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.path.startswith("/") and parsed.netloc in ("", "localhost"):
        return LocalObjectStore(Path(parsed.path))
    if parsed.scheme == "s3" and parsed.netloc:
        if s3_client is None:
            raise UnsupportedStorageUrl("an s3:// object store needs an S3 client")
        return S3ObjectStore(s3_client, parsed.netloc, parsed.path)
    raise UnsupportedStorageUrl(f"object store URL must be file:///absolute/path or s3://bucket[/prefix], got {url!r}")
