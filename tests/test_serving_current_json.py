"""`deployments/current.json` on the local store and the loopback S3 server: published after a change, never
replaced by an older state, and routed from exactly as the database's state."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from babylon_pipeline.serving.current_json import CURRENT_KEY, read_current_json, write_current_json
from babylon_pipeline.serving.routing import route
from babylon_pipeline.serving.state import Deployment, read_deployment, start_canary
from babylon_pipeline.storage import ObjectStore, open_object_store
from babylon_pipeline.store import tables
from babylon_pipeline.store.migrate import upgrade

T0 = datetime(2025, 11, 15, 12, 0)


@pytest.fixture(params=["local", "s3"])
def object_store(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return open_object_store((tmp_path / "objects").as_uri())
    endpoint, bucket = request.getfixturevalue("s3_endpoint"), request.getfixturevalue("s3_bucket")
    return open_object_store(f"s3://{bucket}/babylon", endpoint_url=endpoint)


def test_the_published_state_routes_like_the_database_and_an_older_one_never_replaces_it(
        object_store: ObjectStore, empty_sqlite: sa.Engine) -> None:
    assert read_current_json(object_store) is None
    upgrade(empty_sqlite)
    with empty_sqlite.begin() as conn:
        conn.execute(sa.insert(tables.trained_models).values(
            id="m", modelId="babylon-agent-v1.0.0", version="v1.0.0", baseModel="b", status="candidate",
            storagePath="models/v1.0.0", evalMetrics={"verdict": "better", "guardrails_passed": True}, updatedAt=T0))
    changed = start_canary(empty_sqlite, "v1.0.0", 0.25, actor="t", reason="", now=T0)
    assert write_current_json(object_store, changed)
    published = read_current_json(object_store)
    assert published == changed == read_deployment(empty_sqlite)
    agents = [f"agent-{i}" for i in range(2000)]
    assert [route(a, published) for a in agents] == [route(a, read_deployment(empty_sqlite)) for a in agents]
    content = object_store.get_json(CURRENT_KEY)
    assert (content["canary_model"], content["in_service_model"], content["changed_at"]) == (
        "babylon-agent-v1.0.0", None, "2025-11-15T12:00:00")

    older = Deployment(None, None, 0.0, 0, "", None, T0 - timedelta(minutes=1))
    assert not write_current_json(object_store, older)  # a slower writer of an earlier change
    assert read_current_json(object_store) == changed
    newer = Deployment("v1.0.0", None, 0.0, 0, "", None, T0 + timedelta(minutes=1))
    assert write_current_json(object_store, newer) and read_current_json(object_store) == newer
