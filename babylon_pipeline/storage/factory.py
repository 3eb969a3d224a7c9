"""An object store from its URL: `file:///absolute/path` or `s3://bucket[/prefix]`.

Error messages never repeat an s3 URL's user-info part: credentials belong in boto3's chain
(environment, profile, instance role), not in `BABYLON_STORAGE_URL`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3

from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.storage.keys import InvalidKey, check_prefix
from babylon_pipeline.storage.local import LocalObjectStore
from babylon_pipeline.storage.s3 import S3ObjectStore

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_WANT = "want file:///absolute/path or s3://bucket[/prefix]"


class UnsupportedStorageUrl(ValueError):
    """`BABYLON_STORAGE_URL` (or a test's URL) is not one this pipeline can open."""


def open_object_store(url: str, s3_client: Any = None, *, endpoint_url: str | None = None) -> ObjectStore:
    """The store for `url`. For s3, `s3_client` if given (the resource's), else a boto3 client for `endpoint_url`."""
    parts = urlsplit(url) if isinstance(url, str) else None
    scheme = parts.scheme if parts else None
    if parts is None or scheme not in ("file", "s3"):
        raise UnsupportedStorageUrl(f"unsupported object store URL scheme {scheme!r}: {_WANT}")
    if parts.query or parts.fragment:
        raise UnsupportedStorageUrl(f"an object store URL takes no query or fragment: {_WANT}")
    if scheme == "file":
        return _local(parts.netloc, unquote(parts.path))
    if s3_client is not None and endpoint_url is not None:
        raise ValueError("give open_object_store an s3_client or an endpoint_url, not both")
    bucket, prefix = _bucket_and_prefix(parts.netloc, parts.path)
    return S3ObjectStore(s3_client or boto3.client("s3", endpoint_url=endpoint_url), bucket, prefix)


def _local(host: str, path: str) -> LocalObjectStore:
    if host not in ("", "localhost") or not path.startswith("/"):
        raise UnsupportedStorageUrl(
            f"a file:// object store needs an absolute local path, got host {host!r}, path {path!r}: {_WANT}"
        )
    return LocalObjectStore(Path(path))


def _bucket_and_prefix(netloc: str, path: str) -> tuple[str, str]:
    if "@" in netloc:
        raise UnsupportedStorageUrl(
            "an s3:// URL must not carry credentials; set them in the environment (boto3's chain)"
        )
    if _BUCKET.fullmatch(netloc) is None or ".." in netloc:
        raise UnsupportedStorageUrl(f"invalid S3 bucket name {netloc!r}: {_WANT}")
    try:
        prefix = check_prefix(path.strip("/"))
    except InvalidKey as error:
        raise UnsupportedStorageUrl(f"invalid prefix in s3://{netloc}/...: {error}; {_WANT}") from None
    return netloc, prefix
