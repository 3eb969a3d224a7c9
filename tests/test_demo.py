"""`make demo`'s program on the embedded profile, through the real `Definitions` and a Dagster instance
under `BABYLON_HOME`: simulated windows → window_job → base_model → training_job → a registered version →
evaluation_job's verdict → the version as a 10 % canary → an hour played routed by the deployment → the
regression watch's decision.

The demo runs once per session (`tests/demo_home.py`, shared with the commands of the README and docs/); this test
reads what it printed and left, then runs it again on a copy of its home.
"""

from __future__ import annotations

import json
import re

import dagster as dg
import sqlalchemy as sa

import babylon_pipeline.definitions  # noqa: F401  loaded before BABYLON_HOME is set, as other tests of a worker do
from babylon_pipeline import demo
from babylon_pipeline.serving.state import read_deployment
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine
from tests.demo_home import DEMO_ARGS, copy_demo_home, embedded_profile


def test_the_demo_trains_evaluates_and_deploys_a_first_version_as_a_canary(tmp_path, tmp_path_factory,
                                                                          capsys) -> None:
    home, out, built = copy_demo_home(tmp_path_factory, tmp_path / "home")
    assert "window_job over " in out and ": success" in out
    assert "training_job: babylon-agent-v1.0.0 from none (fresh LoRA)" in out
    assert f"stored at {(built / 'objects').as_uri()}/models/v1.0.0/" in out

    lines = out.splitlines()
    [verdict] = [line for line in lines if line.startswith("evaluation_job: v1.0.0 ")]
    assert re.search(r"v1\.0\.0 (better|no_difference) against base on \d+ held-out scenarios: reward difference "
                     r"[-+]\d\.\d{4} \[[-+]\d\.\d{4}, [-+]\d\.\d{4}\]", verdict), verdict
    assert "deploy: v1.0.0 is the canary on 10% of the agents, the base serves the rest" in out
    [routed] = [line for line in lines if "agents routed by the deployment: " in line]
    shares = dict(re.findall(r"(base|v1\.0\.0 \(canary, 10%\)): (\d+) agents?", routed))
    assert sum(map(int, shares.values())) == 10, routed  # every agent of the hour, routed
    [watch] = [line for line in lines if line.startswith("regression watch: ")]
    canary_agents = int(shares.get("v1.0.0 (canary, 10%)", 0))
    assert re.search(rf"canary v1\.0\.0 at 10 ?%: {canary_agents}/200 trajectories \(control base: "
                     rf"{10 - canary_agents}\).*hold", watch), watch  # the routed hour, counted by arm

    engine = make_engine(f"sqlite:///{home / 'babylon.db'}")
    with engine.connect() as conn:
        status, storage = conn.execute(sa.select(tables.trained_models.c.status, tables.trained_models.c.storagePath)).one()
        used = conn.scalar(sa.select(sa.func.count()).where(tables.trajectories.c.usedInTraining == sa.true()))
    deployment = read_deployment(engine)
    engine.dispose()
    assert status == "canary" and storage.endswith("/models/v1.0.0") and used == 20
    assert (deployment.in_service, deployment.canary, deployment.canary_fraction) == (None, "v1.0.0", 0.1)
    [alert] = [json.loads(line) for line in (home / "alerts.jsonl").read_text().splitlines()]
    assert alert["key"].startswith("deploy:v1.0.0:") and alert["severity"] == "info"
    with embedded_profile(home, tmp_path / "trainer"):
        with dg.DagsterInstance.get() as instance:  # the runs are in the embedded instance, for `make dev` to show
            keys = {dg.AssetKey("base_model"), dg.AssetKey("lora_checkpoint"), dg.AssetKey("ruler_scores")}
            assert all(instance.get_latest_materialization_event(key) is not None for key in keys)
            base_run = instance.get_run_by_id(instance.get_latest_materialization_event(dg.AssetKey("base_model")).run_id)
            assert base_run.job_name == "base_model_job"  # issue 17.6: not __ephemeral_asset_job__
            checks = instance.event_log_storage.get_latest_asset_check_execution_by_key([
                dg.AssetCheckKey(dg.AssetKey(asset), name) for asset, name in (
                    ("lora_checkpoint", "adapter_loads"), ("lora_checkpoint", "training_loss_finite"),
                    ("model_evaluation", "not_worse_than_service"), ("deployed_model", "adapter_answers"))])
            assert len(checks) == 4 and all(c.status.value == "SUCCEEDED" for c in checks.values())
            assert instance.get_latest_materialization_event(dg.AssetKey("deployed_model")).asset_materialization \
                .partition == "v1.0.0"
            versions = instance.get_latest_materialization_event(dg.AssetKey("model_versions")).asset_materialization
            assert versions.metadata["canary_versions"].value == 1 and "v1.0.0" in versions.metadata["versions"].value

        demo.main(DEMO_ARGS)  # again: the routed hour is new data; a version trained on it waits for the canary
    again = capsys.readouterr().out
    assert ("deploy: v1.1.0 not started: canary v1.0.0 is running at 10%" in again
            or "evaluation_job: v1.1.0 worse" in again or "nothing new to train on" in again), again
    assert "regression watch: canary v1.0.0 at 10" in again
