"""The hourly schedule also takes the windows a daemon outage made it miss (Dagster itself would not)."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import sqlalchemy as sa

from babylon_pipeline.definitions import defs
from babylon_pipeline.jobs.windows import window_schedule
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sim import simulate
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.windowing.catch_up import windows_due

KEYS = [f"2025-03-01-{hour:02d}:00" for hour in range(10)]


def test_the_last_window_always_runs_and_earlier_ones_only_when_missed() -> None:
    missed = {"2025-03-01-03:00", "2025-03-01-07:00"}
    assert windows_due(KEYS, materialized={"2025-03-01-03:00"}, missed=missed.__contains__) == [
        "2025-03-01-07:00", "2025-03-01-09:00"]
    assert windows_due(KEYS, set(), missed=lambda key: True, hours=2) == KEYS[-3:]  # no further back than asked
    assert windows_due([], set(), missed=lambda key: True) == []


def test_a_tick_after_an_outage_requests_each_missed_window_with_data_once(tmp_path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'babylon.db'}")
    upgrade(engine)
    simulate(engine, hours=3, agents=2, seed=1, start=datetime(2025, 3, 1, 5), steps_per_window=1)  # 05:00–07:00
    store = TrajectoryStore(database_url=str(engine.url))
    with dg.instance_for_test() as instance:
        def tick() -> list[str]:
            at = datetime(2025, 3, 1, 9, 5, tzinfo=UTC)  # the tick for 08:00: 05:00–07:00 were missed
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                           repository_def=defs.get_repository_def(),
                                           resources={"trajectory_store": store}) as context:
                return [request.partition_key for request in window_schedule.evaluate_tick(context).run_requests]

        assert tick() == ["2025-03-01-05:00", "2025-03-01-06:00", "2025-03-01-07:00", "2025-03-01-08:00"]
        instance.report_runless_asset_event(dg.AssetMaterialization("window_trajectories", partition=KEYS[5]))
        failed = dg.DagsterRun(job_name="window_job", run_id="f" * 32, status=dg.DagsterRunStatus.FAILURE,
                               tags={"dagster/partition": KEYS[6]})
        instance.add_run(failed)  # a person's to look at: not retried by the schedule
        assert tick() == ["2025-03-01-07:00", "2025-03-01-08:00"]


def test_the_schedule_is_the_one_the_code_location_runs() -> None:
    assert defs.get_schedule_def("window_job_schedule") is window_schedule
    assert window_schedule.cron_schedule == "5 * * * *"
