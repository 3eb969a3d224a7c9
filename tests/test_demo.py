"""`make demo`'s program on the embedded profile, through the real `Definitions` and a Dagster instance
under `BABYLON_HOME`: simulated windows → window_job → base_model → training_job → a registered version.

The demo runs once per session (`tests/demo_home.py`, shared with the README's commands); this test
reads what it printed and left, then runs it again on a copy of its home.
"""

from __future__ import annotations

import dagster as dg
import sqlalchemy as sa

import babylon_pipeline.definitions  # noqa: F401  loaded before BABYLON_HOME is set, as other tests of a worker do
from babylon_pipeline import demo
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine
from tests.demo_home import DEMO_ARGS, copy_demo_home, embedded_profile


def test_the_demo_trains_and_registers_a_first_version_on_the_embedded_profile(tmp_path, tmp_path_factory,
                                                                               capsys) -> None:
    home, out, built = copy_demo_home(tmp_path_factory, tmp_path / "home")
    assert "window_job over " in out and ": success" in out
    assert "training_job: babylon-agent-v1.0.0 from none (fresh LoRA)" in out
    assert f"stored at {(built / 'objects').as_uri()}/models/v1.0.0/" in out

    engine = make_engine(f"sqlite:///{home / 'babylon.db'}")
    with engine.connect() as conn:
        status, storage = conn.execute(sa.select(tables.trained_models.c.status, tables.trained_models.c.storagePath)).one()
        used = conn.scalar(sa.select(sa.func.count()).where(tables.trajectories.c.usedInTraining == sa.true()))
    engine.dispose()
    assert status == "candidate" and storage.endswith("/models/v1.0.0") and used == 20
    with embedded_profile(home, tmp_path / "trainer"):
        with dg.DagsterInstance.get() as instance:  # the runs are in the embedded instance, for `make dev` to show
            keys = {dg.AssetKey("base_model"), dg.AssetKey("lora_checkpoint"), dg.AssetKey("ruler_scores")}
            assert all(instance.get_latest_materialization_event(key) is not None for key in keys)
            base_run = instance.get_run_by_id(instance.get_latest_materialization_event(dg.AssetKey("base_model")).run_id)
            assert base_run.job_name == "base_model_job"  # issue 17.6: not __ephemeral_asset_job__
            checks = instance.event_log_storage.get_latest_asset_check_execution_by_key([
                dg.AssetCheckKey(dg.AssetKey("lora_checkpoint"), name) for name in ("adapter_loads", "training_loss_finite")])
            assert len(checks) == 2 and all(c.status.value == "SUCCEEDED" for c in checks.values())

        demo.main(DEMO_ARGS)  # again: the same windows, nothing new to train
    assert "nothing new to train on; in service: none" in capsys.readouterr().out
