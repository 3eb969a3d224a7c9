"""The object store as a Dagster resource, chosen by `BABYLON_STORAGE_URL`.

`s3://` URLs go through dagster-aws's `S3Resource`, so any S3-compatible server works with
`AWS_ENDPOINT_URL`; credentials come from boto3's usual environment chain and never from config.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource

from babylon_pipeline.profile import babylon_home
from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.storage.factory import open_object_store


class ObjectStoreResource(dg.ConfigurableResource):
    url: str
    s3: S3Resource | None = None

    def open(self) -> ObjectStore:
        client = self.s3.get_client() if self.url.startswith("s3://") and self.s3 is not None else None
        return open_object_store(self.url, s3_client=client)


def embedded_storage_url() -> str:
    return (babylon_home() / "objects").as_uri()


def object_store_resource_from_env() -> ObjectStoreResource:
    url = os.environ.get("BABYLON_STORAGE_URL")
    if not url:
        return ObjectStoreResource(url=embedded_storage_url())
    s3 = None
    if url.startswith("s3://"):
        s3 = S3Resource(
            endpoint_url=dg.EnvVar("AWS_ENDPOINT_URL") if os.environ.get("AWS_ENDPOINT_URL") else None,
            region_name=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        )
    return ObjectStoreResource(url=dg.EnvVar("BABYLON_STORAGE_URL"), s3=s3)
