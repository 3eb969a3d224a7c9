"""The object store as a Dagster resource, chosen by `BABYLON_STORAGE_URL`.

`s3://` URLs go through dagster-aws's `S3Resource`, so any S3-compatible server works with
`AWS_ENDPOINT_URL`. Credentials are never configured here: boto3 finds them in its usual chain
(environment, profile, instance role), so they cannot reach run config, metadata or logs.
"""

from __future__ import annotations

import os

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field

from babylon_pipeline.profile import babylon_home
from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.storage.factory import open_object_store

DEFAULT_REGION = "us-east-1"


class ObjectStoreResource(dg.ConfigurableResource):
    url: str = Field(description="file:///absolute/path or s3://bucket[/prefix]")
    s3: S3Resource | None = Field(default=None, description="S3 client settings for s3:// URLs (endpoint, region)")

    def open(self) -> ObjectStore:
        if isinstance(self.url, dg.EnvVar):  # not resolved: outside a run, the field holds the variable's name
            raise RuntimeError(
                f"ObjectStoreResource.url is EnvVar({self.url.env_var_name!r}), not yet read: open the store inside a run "
                "or from `process_config_and_initialize_cm()`"
            )
        client = self.s3.get_client() if self.s3 is not None and self.url.startswith("s3://") else None
        return open_object_store(self.url, client)


def embedded_storage_url() -> str:
    return (babylon_home() / "objects").as_uri()


def _env(*names: str) -> dg.EnvVar | None:
    """The first of `names` that is set, as an `EnvVar`: the UI shows its name, the run reads its value."""
    return next((dg.EnvVar(name) for name in names if os.environ.get(name)), None)


def object_store_resource_from_env() -> ObjectStoreResource:
    """`BABYLON_STORAGE_URL` when set, else files under `$BABYLON_HOME/objects` (the embedded profile)."""
    url = os.environ.get("BABYLON_STORAGE_URL")
    if not url:
        return ObjectStoreResource(url=embedded_storage_url())
    s3 = None
    if url.startswith("s3://"):
        s3 = S3Resource(
            endpoint_url=_env("AWS_ENDPOINT_URL"),
            region_name=_env("AWS_REGION", "AWS_DEFAULT_REGION") or DEFAULT_REGION,
        )
    return ObjectStoreResource(url=dg.EnvVar("BABYLON_STORAGE_URL"), s3=s3)
