"""`deploy_job` on the embedded profile, end to end on the home `make demo` leaves: the demo's trained v1.0.0
is loaded onto the stored base by the local model, answers the health check with game actions, and starts
as a canary. (Shares the session's demo home with test_demo and test_readme; its own cost is one model load
and one batched generation.)"""

from __future__ import annotations

import json

import dagster as dg
import sqlalchemy as sa

from babylon_pipeline.assets.deployed_model import deployed_model
from babylon_pipeline.partitions import model_version_partitions
from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.serving.state import read_deployment
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from tests.demo_home import copy_demo_home


def test_the_demos_version_deploys_through_the_embedded_model(tmp_path, tmp_path_factory) -> None:
    home, _, _ = copy_demo_home(tmp_path_factory, tmp_path / "home")
    url = f"sqlite:///{home / 'babylon.db'}"
    engine = make_engine(url)
    upgrade(engine)
    with engine.begin() as conn:  # what model_evaluation writes for a version not worse than the base
        conn.execute(sa.text("UPDATE trained_models SET \"evalMetrics\" = :m WHERE version = 'v1.0.0'"),
                     {"m": json.dumps({"verdict": "no_difference", "guardrails_passed": True})})
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(model_version_partitions.name, ["v1.0.0"])
    objects = ObjectStoreResource(url=(home / "objects").as_uri())
    result = dg.materialize(
        [deployed_model], partition_key="v1.0.0", instance=instance,
        resources={"trajectory_store": TrajectoryStore(database_url=url), "object_store": objects,
                   "inference": InferenceResource(),
                   "notifier": NotifierResource(object_store=objects, jsonl_path=str(home / "alerts.jsonl"))},
        run_config={"ops": {"deployed_model": {"config": {"fraction": 0.2}}}},
    )
    assert result.success
    [check] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert check.passed and check.metadata["adapter"].value == "babylon-agent-v1.0.0"
    assert check.metadata["answers"].value == 4 and check.metadata["answers_with_action"].value >= 1
    deployment = read_deployment(engine)
    assert (deployment.canary, deployment.canary_fraction) == ("v1.0.0", 0.2)
    sent = json.loads((home / "alerts.jsonl").read_text().splitlines()[-1])
    assert (sent["key"], sent["severity"]) == (f"deploy:v1.0.0:{deployment.changed_at.isoformat()}", "info")
