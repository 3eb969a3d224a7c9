"""The object store on both backends (local files; moto's S3 server over real HTTP), keys and the resource."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import dagster as dg
import pytest
from botocore.exceptions import ClientError

from babylon_pipeline.resources.object_store import ObjectStoreResource, object_store_resource_from_env
from babylon_pipeline.storage import (
    InvalidKey,
    LocalObjectStore,
    ObjectNotFound,
    ObjectStore,
    S3ObjectStore,
    UnsupportedStorageUrl,
    batch_key,
    cache_key,
    checkpoint_key,
    model_key,
    open_object_store,
    window_key,
    window_prefix,
)
from babylon_pipeline.windowing.files import open_window_file, publish_window_files, read_manifest
from tests.s3_server import REGION

W = "2025-11-15T10:00"
PREFIX = window_prefix(W)
SECRET = "wJalrXUtnFEMI-not-a-real-secret-9f3c"


def s3_client(endpoint: str):
    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION)


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return S3ObjectStore(s3_client(endpoint), bucket, "babylon/test")


# --- objects ---------------------------------------------------------------------------------------

def test_put_get_exists_delete(store: ObjectStore) -> None:
    key = window_key(W, "trajectories.jsonl")
    assert not store.exists(key)
    with pytest.raises(ObjectNotFound) as missing:
        store.get_bytes(key)
    assert isinstance(missing.value, KeyError) and key in str(missing.value)

    store.put_bytes(key, b"one\n")
    assert store.exists(key) and store.get_bytes(key) == b"one\n"
    store.put_bytes(key, b"two\n")
    assert store.get_bytes(key) == b"two\n"

    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # absent: not an error, as on S3
    assert not store.exists(PREFIX)  # a folder is not an object
    with pytest.raises(ObjectNotFound):
        store.get_bytes(PREFIX)


def test_a_conditional_put_writes_only_over_the_version_it_read(store: ObjectStore) -> None:
    key = window_key(W, "manifest.json")
    assert store.put_if_unchanged(key, b"first", None)  # absent, as expected
    assert not store.put_if_unchanged(key, b"lost", None)  # no longer absent
    data, version = store.get_versioned(key)
    assert data == b"first"
    store.put_bytes(key, b"someone else")
    assert not store.put_if_unchanged(key, b"stale", version)
    assert store.get_bytes(key) == b"someone else"
    _, version = store.get_versioned(key)
    assert store.put_if_unchanged(key, b"second", version)
    assert store.get_bytes(key) == b"second"
    assert store.list_keys(PREFIX) == [key]  # the local store's lock file is not an object
    with pytest.raises(ObjectNotFound):
        store.get_versioned(window_key(W, "absent.json"))


def test_stages_publishing_to_one_window_at_once_all_keep_their_files(store: ObjectStore) -> None:
    writers, files_each = 6, 4
    start = threading.Barrier(writers)

    def publish(writer: int) -> None:
        start.wait()
        for n in range(files_each):
            publish_window_files(store, W, {f"part-{writer}-{n}.json": f"{writer}/{n}".encode()}, writer=f"w{writer}")

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(publish, range(writers)))
    listed = read_manifest(store, W)["files"]
    assert sorted(listed) == sorted(f"part-{w}-{n}.json" for w in range(writers) for n in range(files_each))
    with open_window_file(store, W, "part-5-3.json") as handle:  # listed with the hash of what was stored
        assert handle.read() == b"5/3"


def test_list_keys_lists_a_folder_sorted(store: ObjectStore) -> None:
    keys = [
        window_key("2025-11-15T11:00", "groups.jsonl"),
        window_key(W, "groups.jsonl"),
        window_key(W, "trajectories.jsonl"),
        model_key("v1.0.0", "adapter_config.json"),
        "judge-cache/ab.json",
    ]
    for key in keys:
        store.put_bytes(key, b"x")
    assert store.list_keys("") == sorted(keys)
    assert store.list_keys(PREFIX) == store.list_keys(f"{PREFIX}/") == sorted(keys[1:3])
    assert store.list_keys("training-data/2025-11-15T1") == []  # a folder, not a string prefix
    assert store.list_keys("nothing/here") == []


def test_s3_lists_only_its_prefix_and_follows_pages(s3_endpoint: str, s3_bucket: str) -> None:
    client = s3_client(s3_endpoint)
    for outside in ("babylon/test-other/x", "babylon/testx", "other/y"):
        client.put_object(Bucket=s3_bucket, Key=outside, Body=b"not ours")
    # Two keys per response, so listing takes several real requests with continuation tokens.
    client.meta.events.register("before-parameter-build.s3.ListObjectsV2", lambda params, **_: params.update(MaxKeys=2))
    store = S3ObjectStore(client, s3_bucket, "/babylon/test/")
    keys = [f"cache/judge/{i:02d}.json" for i in range(7)]
    for key in keys:
        store.put_bytes(key, b"{}")
    assert store.list_keys("") == keys
    assert store.list_keys("cache/judge") == keys
    assert client.get_object(Bucket=s3_bucket, Key="babylon/test/cache/judge/00.json")["Body"].read() == b"{}"


def test_json_is_canonical_utf8(store: ObjectStore) -> None:
    key = window_key(W, "ruler_scores.json")
    value = {"z": [1, 2.5, None], "a": {"é": "ünïcode", "b": True}}
    store.put_json(key, value)
    assert store.get_json(key) == value
    raw = store.get_bytes(key)
    assert "é".encode() in raw and raw.index(b'"a"') < raw.index(b'"z"')
    store.put_json(key, dict(reversed(list(value.items()))))
    assert store.get_bytes(key) == raw  # equal values, equal bytes
    with pytest.raises(ValueError):
        store.put_json(key, {"score": float("nan")})
    assert store.get_bytes(key) == raw


def test_large_files_stream_both_ways(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "adapter_model.safetensors"
    source.write_bytes(os.urandom(9 << 20))  # above boto3's 8 MiB multipart threshold
    key = model_key("v1.2.3", source.name)
    store.put_file(key, source)
    target = tmp_path / "downloaded" / "weights"
    target.parent.mkdir()
    store.get_file(key, target)
    assert target.read_bytes() == source.read_bytes()
    assert os.listdir(target.parent) == ["weights"]  # no temporary file left beside it

    target.write_bytes(b"previous")
    with pytest.raises(ObjectNotFound):
        store.get_file(model_key("v9.9.9", source.name), target)
    assert target.read_bytes() == b"previous" and os.listdir(target.parent) == ["weights"]


def test_a_moved_file_is_stored_and_gone_from_where_it_was(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "trajectories.jsonl"
    source.write_bytes(b'{"n": 1}\n' * 1000)
    key = window_key(W, source.name)
    store.move_file(key, source)
    assert not source.exists()
    assert store.get_bytes(key) == b'{"n": 1}\n' * 1000


def test_an_open_object_reads_the_version_it_opened(store: ObjectStore) -> None:
    key = window_key(W, "groups.jsonl")
    store.put_bytes(key, b"first version")
    with store.open_file(key) as handle:
        store.put_bytes(key, b"second version, replacing the first")
        assert handle.read() == b"first version"
    with store.open_file(key) as handle:
        assert handle.read() == b"second version, replacing the first"
    with pytest.raises(ObjectNotFound), store.open_file(window_key(W, "absent.jsonl")):
        pass


def test_local_move_renames_on_one_file_system_and_copies_across(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    same = tmp_path / "same.jsonl"
    same.write_bytes(b"same file system")
    inode = same.stat().st_ino
    store.move_file(window_key(W, "a.jsonl"), same)
    assert (store.root / window_key(W, "a.jsonl")).stat().st_ino == inode  # renamed, not copied
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second file system to move across")
    other = shm / f"babylon-test-{os.getpid()}.jsonl"
    other.write_bytes(b"another file system")
    store.move_file(window_key(W, "b.jsonl"), other)
    assert not other.exists() and store.get_bytes(window_key(W, "b.jsonl")) == b"another file system"
    assert sorted(os.listdir(store.root / window_prefix(W))) == ["a.jsonl", "b.jsonl"]  # no temporary file left


# --- keys ------------------------------------------------------------------------------------------

def test_key_builders_spell_the_layout() -> None:
    assert window_key(W, "groups.jsonl") == "training-data/2025-11-15T10:00/groups.jsonl"
    assert model_key("base", "config.json") == "models/base/config.json"
    assert model_key("v10.0.3", "adapter_model.safetensors") == "models/v10.0.3/adapter_model.safetensors"
    assert checkpoint_key("batch_2025-11-15.a", 120, "adapter_model.safetensors") == (
        "checkpoints/batch_2025-11-15.a/checkpoint-120/adapter_model.safetensors"
    )
    assert cache_key("judge", "ab12.json") == "cache/judge/ab12.json"
    assert batch_key("batch-7", "groups.jsonl") == "training-batches/batch-7/groups.jsonl"


@pytest.mark.parametrize(
    ("build", "part"),
    [
        (lambda: window_key("2025-11-15T10:30", "groups.jsonl"), "window id"),
        (lambda: window_key("2025-11-15T10:00\n", "groups.jsonl"), "window id"),
        (lambda: window_key("2025-13-15T10:00", "groups.jsonl"), "window id"),
        (lambda: window_key("../etc", "groups.jsonl"), "window id"),
        (lambda: window_key(W, "../etc"), "file name"),
        (lambda: window_key(W, ".."), "file name"),
        (lambda: window_key(W, "/etc/passwd"), "file name"),
        (lambda: window_key(W, "a/b"), "file name"),
        (lambda: window_key(W, ""), "file name"),
        (lambda: window_key(W, ".hidden"), "file name"),
        (lambda: window_key(W, "x" * 129), "file name"),
        (lambda: window_key(W, "naïve.json"), "file name"),
        (lambda: model_key("v1", "config.json"), "model version"),
        (lambda: model_key("v1.2.3\n", "config.json"), "model version"),
        (lambda: model_key("v01.2.3", "config.json"), "model version"),
        (lambda: model_key("../base", "config.json"), "model version"),
        (lambda: model_key("", "config.json"), "model version"),
        (lambda: checkpoint_key("../b", 1, "x"), "batch id"),
        (lambda: checkpoint_key("b", -1, "x"), "checkpoint step"),
        (lambda: checkpoint_key("b", True, "x"), "checkpoint step"),
        (lambda: cache_key("judge", "a..b"), "cache id"),
        (lambda: batch_key("../b", "groups.jsonl"), "batch id"),
        (lambda: cache_key("", "x"), "cache namespace"),
    ],
)
def test_bad_key_parts_are_named(build: Callable[[], str], part: str) -> None:
    with pytest.raises(InvalidKey, match=part):
        build()


@pytest.mark.parametrize(
    "key",
    ["../etc/passwd", "/etc/passwd", "", "a//b", "a/./b", "a/../b", ".tmp", "a/", "a\\b", "a/b\x00", "a/b\n", None],
)
def test_stores_refuse_bad_keys(store: ObjectStore, key: str) -> None:
    for call in (lambda: store.put_bytes(key, b"x"), lambda: store.get_bytes(key), lambda: store.exists(key),
                 lambda: store.delete(key)):
        with pytest.raises(InvalidKey):
            call()
    with pytest.raises(InvalidKey):
        store.list_keys("../")
    assert store.list_keys("") == []


def test_local_keys_cannot_follow_links_out_of_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = LocalObjectStore(tmp_path / "objects")
    (store.root / "models").symlink_to(outside)
    with pytest.raises(InvalidKey, match="outside"):
        store.put_bytes(model_key("base", "config.json"), b"x")
    with pytest.raises(InvalidKey):
        store.list_keys("models")
    assert list(outside.iterdir()) == []


# --- local atomicity ---------------------------------------------------------------------------------

def test_local_write_goes_through_a_temporary_file_beside_the_target(tmp_path: Path, monkeypatch) -> None:
    store = LocalObjectStore(tmp_path)
    renames: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def replace(src, dst) -> None:
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    store.put_bytes(window_key(W, "groups.jsonl"), b"data")
    [(src, dst)] = renames
    assert src.parent == dst.parent and src.name.startswith(".") and dst == tmp_path / PREFIX / "groups.jsonl"
    assert os.listdir(tmp_path / PREFIX) == ["groups.jsonl"]


def test_local_failed_write_leaves_the_old_object_or_none(tmp_path: Path, monkeypatch) -> None:
    store = LocalObjectStore(tmp_path)
    old, new = window_key(W, "groups.jsonl"), window_key(W, "ruler_scores.json")
    store.put_bytes(old, b"old")

    def broken_disk(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken_disk)
    for key in (old, new):
        with pytest.raises(OSError, match="disk full"):
            store.put_bytes(key, b"half-written")
    assert store.get_bytes(old) == b"old" and not store.exists(new)
    assert os.listdir(tmp_path / PREFIX) == ["groups.jsonl"]  # no temporary files left


# --- URLs and the resource ---------------------------------------------------------------------------

def test_file_urls_open_a_local_store(tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    store = open_object_store(folder.as_uri())
    assert isinstance(store, LocalObjectStore) and store.root == folder.resolve()
    store.put_bytes("a/b", b"x")
    assert (folder / "a" / "b").read_bytes() == b"x"


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("ftp://host/path", "'ftp'"),
        ("/just/a/path", "''"),
        ("gs://bucket/x", "'gs'"),
        ("file://relative/path", "absolute"),
        ("file:relative", "absolute"),
        ("s3://Bad_Bucket/x", "bucket"),
        ("s3:///no-bucket", "bucket"),
        ("s3://", "bucket"),
        ("s3://bucket/../up", "prefix"),
        ("s3://bucket/x?versionId=1", "query"),
    ],
)
def test_unsupported_urls_say_what_is_wanted(url: str, fragment: str) -> None:
    with pytest.raises(UnsupportedStorageUrl, match="file:///absolute/path or s3://bucket") as error:
        open_object_store(url, s3_client=object())
    assert fragment in str(error.value)


def test_credentials_in_an_s3_url_are_refused_without_being_repeated() -> None:
    with pytest.raises(UnsupportedStorageUrl, match="credentials") as error:
        open_object_store(f"s3://AKIAEXAMPLE:{SECRET}@bucket/prefix", s3_client=object())
    assert SECRET not in str(error.value) and "AKIAEXAMPLE" not in str(error.value)


def test_s3_url_with_an_endpoint_builds_its_own_client(s3_endpoint: str, s3_bucket: str) -> None:
    store = open_object_store(f"s3://{s3_bucket}/deploy/one", endpoint_url=s3_endpoint)
    assert isinstance(store, S3ObjectStore) and (store.bucket, store.prefix) == (s3_bucket, "deploy/one")
    store.put_bytes("a/b", b"x")
    assert s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key="deploy/one/a/b")["Body"].read() == b"x"


def test_resource_from_env_defaults_to_files_under_babylon_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    monkeypatch.delenv("BABYLON_STORAGE_URL", raising=False)
    resource = object_store_resource_from_env()
    assert resource.url == (tmp_path / "objects").as_uri() and resource.s3 is None
    store = resource.open()
    assert isinstance(store, LocalObjectStore) and store.root == (tmp_path / "objects").resolve()


def test_resource_from_env_opens_s3_with_the_endpoint_and_keeps_secrets_out(
    s3_endpoint: str, s3_bucket: str, monkeypatch
) -> None:
    monkeypatch.setenv("BABYLON_STORAGE_URL", f"s3://{s3_bucket}/babylon")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)  # moto accepts any credentials
    monkeypatch.delenv("AWS_REGION", raising=False)
    resource = object_store_resource_from_env()
    seen: list[str] = []

    @dg.asset
    def stored(object_store: ObjectStoreResource) -> None:
        store = object_store.open()
        store.put_json(window_key(W, "ruler_scores.json"), {"ok": True})
        seen.extend([repr(store), repr(object_store)])
        try:
            S3ObjectStore(object_store.s3.get_client(), "no-such-bucket-here").get_bytes("a")
        except ClientError as error:
            seen.append(str(error))

    result = dg.materialize([stored], resources={"object_store": resource})
    assert result.success
    body = s3_client(s3_endpoint).get_object(Bucket=s3_bucket, Key=f"babylon/{PREFIX}/ruler_scores.json")["Body"]
    assert body.read() == b'{\n "ok": true\n}'
    assert "S3ObjectStore(bucket=" in seen[0] and "NoSuchBucket" in seen[2]
    texts = [*seen, repr(resource), str(resource.s3)] + [str(event) for event in result.all_events]
    assert not any(SECRET in text for text in texts)


def test_resource_refuses_an_unknown_scheme_clearly() -> None:
    with pytest.raises(UnsupportedStorageUrl, match=r"'ftp'.*file:///absolute/path or s3://bucket"):
        ObjectStoreResource(url="ftp://files.example/objects").open()


def test_resource_reads_its_env_var_only_when_initialised(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_STORAGE_URL", (tmp_path / "objects").as_uri())
    resource = object_store_resource_from_env()
    with pytest.raises(RuntimeError, match="EnvVar\\('BABYLON_STORAGE_URL'\\)"):
        resource.open()
    with resource.process_config_and_initialize_cm() as initialised:
        assert isinstance(initialised.open(), LocalObjectStore) and initialised.s3 is None
