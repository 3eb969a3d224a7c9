"""The object store: local files and an S3 server on loopback, keys that cannot escape, atomic writes."""

from __future__ import annotations

from pathlib import Path

import boto3
import pytest

from babylon_pipeline.resources.object_store import ObjectStoreResource, object_store_resource_from_env
from babylon_pipeline.storage.base import ObjectNotFound, ObjectStore
from babylon_pipeline.storage.factory import UnsupportedStorageUrl, open_object_store
from babylon_pipeline.storage.keys import InvalidKey, checkpoint_key, model_key, window_key
from babylon_pipeline.storage.local import LocalObjectStore
from tests.s3_server import s3_bucket, s3_endpoint  # noqa: F401 - fixtures


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return open_object_store((tmp_path / "objects").as_uri())
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return open_object_store(f"s3://{bucket}/prefix", boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"))


def test_objects_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    key = window_key("2025-11-15T10:00", "groups.jsonl")
    assert not store.exists(key)
    with pytest.raises(ObjectNotFound):
        store.get_bytes(key)
    store.put_bytes(key, b"one\n")
    store.put_bytes(key, b"two\n")
    assert store.get_bytes(key) == b"two\n" and store.exists(key)
    big = tmp_path / "weights.bin"
    big.write_bytes(bytes(range(256)) * 4096)
    store.put_file(model_key("v1.2.3", "adapter_model.safetensors"), big)
    store.get_file(model_key("v1.2.3", "adapter_model.safetensors"), tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    store.put_json(checkpoint_key("batch-1", 3, "state.json"), {"b": 1, "a": [1, 2]})
    assert store.get_json("checkpoints/batch-1/checkpoint-3/state.json") == {"a": [1, 2], "b": 1}
    assert store.list_keys("training-data/") == ["training-data/2025-11-15T10:00/groups.jsonl"]
    assert len(store.list_keys("")) == 3
    store.delete(key)
    assert not store.exists(key)


@pytest.mark.parametrize(
    "build",
    [
        lambda: window_key("2025-11-15T10:30", "groups.jsonl"),
        lambda: window_key("../etc", "passwd"),
        lambda: window_key("2025-11-15T10:00", "../../escape"),
        lambda: window_key("2025-11-15T10:00", "/abs"),
        lambda: window_key("2025-11-15T10:00", ""),
        lambda: model_key("v1", "adapter.safetensors"),
        lambda: model_key("latest/../v1.0.0", "x"),
        lambda: checkpoint_key("batch/1", 1, "x"),
        lambda: checkpoint_key("b", -1, "x"),
    ],
)
def test_keys_are_built_only_from_valid_parts(build) -> None:
    with pytest.raises(InvalidKey):
        build()


def test_a_raw_key_cannot_leave_the_store(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    for bad in ("../outside", "a//b", "/etc/passwd", "a/./b"):
        with pytest.raises(InvalidKey):
            store.put_bytes(bad, b"x")
    assert not (tmp_path / "outside").exists()


def test_a_failed_local_write_leaves_no_object_and_no_temp_file(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    key = window_key("2025-11-15T10:00", "trajectories.jsonl")
    store.put_bytes(key, b"complete\n")

    class Exploding:
        def __fspath__(self) -> str:
            raise OSError("disk unplugged")

    with pytest.raises(OSError, match="disk unplugged"):
        store.put_file(key, Exploding())  # type: ignore[arg-type]
    assert store.get_bytes(key) == b"complete\n"  # the old object, whole
    assert [p.name for p in (tmp_path / "objects").rglob("*") if p.is_file()] == ["trajectories.jsonl"]


def test_resource_from_env_picks_the_profile(tmp_path: Path, monkeypatch, s3_endpoint, s3_bucket) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    monkeypatch.delenv("BABYLON_STORAGE_URL", raising=False)
    embedded = object_store_resource_from_env()
    assert embedded.url == (tmp_path / "objects").as_uri()
    assert isinstance(embedded.open(), LocalObjectStore)

    monkeypatch.setenv("BABYLON_STORAGE_URL", f"s3://{s3_bucket}/babylon")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    with object_store_resource_from_env().process_config_and_initialize_cm() as production:  # EnvVars resolved
        store = production.open()
        store.put_bytes("judge-cache/abc.json", b"{}")
        assert store.get_bytes("judge-cache/abc.json") == b"{}"
        assert "testing-secret" not in repr(production)


def test_an_unknown_storage_url_is_a_clear_error() -> None:
    for url in ("ftp://host/x", "file://relative/path", "s3://", "/plain/path"):
        with pytest.raises(UnsupportedStorageUrl, match="file:///absolute/path or s3://bucket"):
            ObjectStoreResource(url=url).open()
