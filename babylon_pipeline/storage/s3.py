"""Objects in any S3-compatible bucket (AWS, MinIO, R2, Ceph...): the production object store.

A PUT, and a multipart upload's completion, make an object visible whole or not at all, so no
temporary keys are needed. Every key lives under `prefix`, so several deployments can share a bucket.
The client comes from the caller (dagster-aws `S3Resource`), with credentials from boto3's chain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from babylon_pipeline.storage.atomic import atomic_write
from babylon_pipeline.storage.base import ObjectNotFound, ObjectStore
from babylon_pipeline.storage.keys import check_key, check_prefix

_MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
# a conditional PUT lost to another writer: 412 when the ETag moved, 409 when both PUTs overlapped
_CONFLICT = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


def _code(error: ClientError) -> str | None:
    return error.response.get("Error", {}).get("Code")


def _missing(error: ClientError) -> bool:
    return _code(error) in _MISSING


class S3ObjectStore(ObjectStore):
    def __init__(self, client: Any, bucket: str, prefix: str = "") -> None:
        self._client = client
        self.bucket = bucket
        self.prefix = check_prefix(prefix.strip("/"))

    def __repr__(self) -> str:  # never the client: it holds credentials
        return f"S3ObjectStore(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def _key(self, key: str) -> str:
        return self._under_prefix(check_key(key))

    def _under_prefix(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def put_bytes(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        """Multipart for large files; the object appears only when the upload completes."""
        self._client.upload_file(str(path), self.bucket, self._key(key))

    def get_bytes(self, key: str) -> bytes:
        return self.get_versioned(key)[0]

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """The version is the ETag, which a conditional PUT compares with `If-Match`."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _missing(error):
                raise ObjectNotFound(key) from None
            raise
        return response["Body"].read(), response["ETag"]

    def put_if_unchanged(self, key: str, data: bytes, version: str | None) -> bool:
        condition = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **condition)
        except ClientError as error:
            if _code(error) in _CONFLICT:
                return False
            raise
        return True

    def get_file(self, key: str, path: Path) -> None:
        full = self._key(key)
        try:
            atomic_write(Path(path), lambda handle: self._client.download_fileobj(self.bucket, full, handle))
        except ClientError as error:
            if _missing(error):
                raise ObjectNotFound(key) from None
            raise

    def exists(self, key: str) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if _missing(error):
                return False
            raise
        return True

    def list_keys(self, prefix: str) -> list[str]:
        folder = check_prefix(prefix)
        base = self._under_prefix(folder) if folder else self.prefix
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{base}/" if base else ""):
            keys.extend(item["Key"][strip:] for item in page.get("Contents", []))
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
