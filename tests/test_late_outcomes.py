"""Outcomes that arrive after their window re-score it, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from babylon_pipeline.jobs.windows import RESCORE_ASSETS, WINDOW_ASSETS
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.judge import JudgeResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sensors.late_outcomes import late_outcomes_sensor
from babylon_pipeline.storage.factory import open_object_store
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.windowing.rewards import read_outcome_rewards
from babylon_pipeline.windows import window_of
from tests.window_data import record_window, resolve_market


def test_a_late_resolution_requests_one_rescore_of_its_window(empty_sqlite, tmp_path) -> None:
    upgrade(empty_sqlite)
    window = window_of(datetime.now(UTC) - timedelta(hours=3))
    later = window_of(datetime.now(UTC) - timedelta(hours=1))
    record_window(empty_sqlite, window, scenarios=1, agents=4, pending_market=True)
    resources = {
        "trajectory_store": TrajectoryStore(database_url=str(empty_sqlite.url)),
        "object_store": ObjectStoreResource(url=(tmp_path / "objects").as_uri()),
        "judge": JudgeResource(),
    }
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(WINDOW_ASSETS, partition_key=partition_key_of(window), resources=resources, instance=instance).success
    store = open_object_store((tmp_path / "objects").as_uri())
    assert read_outcome_rewards(store, window)["pending_markets"] == ["M-LATE"]

    def evaluate():
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return late_outcomes_sensor(context)

    assert isinstance(evaluate(), dg.SkipReason)

    resolve_market(empty_sqlite, later, "m-late", "NO")
    first, second = evaluate(), evaluate()
    [request] = first.run_requests
    assert request.partition_key == partition_key_of(window)
    assert [r.run_key for r in second.run_requests] == [request.run_key]  # the same arrival, the same run

    rescored = dg.materialize(RESCORE_ASSETS, partition_key=request.partition_key, resources=resources, instance=instance,
                              selection=RESCORE_ASSETS)
    assert rescored.success
    rewards = read_outcome_rewards(store, window)
    assert rewards["pending_markets"] == [] and rewards["summary"]["pending_trades"] == 0
    assert isinstance(evaluate(), dg.SkipReason)
