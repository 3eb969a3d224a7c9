"""The object store: local files in the embedded profile, any S3-compatible server in production."""

from babylon_pipeline.storage.base import ObjectNotFound, ObjectStore
from babylon_pipeline.storage.factory import UnsupportedStorageUrl, open_object_store
from babylon_pipeline.storage.keys import (
    InvalidKey,
    batch_key,
    cache_key,
    checkpoint_key,
    checkpoint_prefix,
    model_key,
    model_prefix,
    window_key,
    window_prefix,
)
from babylon_pipeline.storage.local import LocalObjectStore
from babylon_pipeline.storage.s3 import S3ObjectStore

__all__ = [
    "InvalidKey",
    "LocalObjectStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3ObjectStore",
    "UnsupportedStorageUrl",
    "batch_key",
    "cache_key",
    "checkpoint_key",
    "checkpoint_prefix",
    "model_key",
    "model_prefix",
    "open_object_store",
    "window_key",
    "window_prefix",
]
