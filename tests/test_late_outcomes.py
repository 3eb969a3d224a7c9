"""Outcomes that arrive after their window re-score it, once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from dagster._core.test_utils import create_run_for_test

from babylon_pipeline.instance import PARTITION_RANGE_END_TAG_KEY, PARTITION_RANGE_START_TAG_KEY
from babylon_pipeline.jobs.windows import RESCORE_ASSETS, WINDOW_ASSETS
from babylon_pipeline.partitions import partition_key_of
from babylon_pipeline.resources.judge import JudgeResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sensors.late_outcomes import late_outcomes_sensor
from babylon_pipeline.storage.factory import open_object_store
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.windowing.rewards import read_outcome_rewards
from babylon_pipeline.windows import window_of, window_start
from tests.window_data import record_window, resolve_market


def _window_awaiting_an_outcome(engine, tmp_path):
    """A window materialised with a trade pending on a market that has not resolved yet."""
    upgrade(engine)
    window = window_of(datetime.now(UTC) - timedelta(hours=3))
    record_window(engine, window, scenarios=1, agents=4, pending_market=True)
    resources = {
        "trajectory_store": TrajectoryStore(database_url=str(engine.url)),
        "object_store": ObjectStoreResource(url=(tmp_path / "objects").as_uri()),
        "judge": JudgeResource(),
    }
    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize(WINDOW_ASSETS, partition_key=partition_key_of(window), resources=resources, instance=instance).success

    def evaluate():
        with dg.build_sensor_context(instance=instance, resources=resources) as context:
            return late_outcomes_sensor(context)

    return window, resources, instance, evaluate


def test_a_late_resolution_requests_one_rescore_of_its_window(empty_sqlite, tmp_path) -> None:
    window, resources, instance, evaluate = _window_awaiting_an_outcome(empty_sqlite, tmp_path)
    store = open_object_store((tmp_path / "objects").as_uri())
    assert read_outcome_rewards(store, window)["pending_markets"] == ["M-LATE"]
    assert isinstance(evaluate(), dg.SkipReason)

    resolve_market(empty_sqlite, window_of(datetime.now(UTC) - timedelta(hours=1)), "m-late", "NO")
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


def _range_run(instance, first: datetime, last: datetime, status: dg.DagsterRunStatus):
    tags = {PARTITION_RANGE_START_TAG_KEY: partition_key_of(window_of(first)),
            PARTITION_RANGE_END_TAG_KEY: partition_key_of(window_of(last))}
    return create_run_for_test(instance, job_name="__ASSET_JOB", tags=tags, status=status)


def test_a_window_inside_a_range_run_in_progress_is_rescored_after_it(empty_sqlite, tmp_path) -> None:
    window, _, instance, evaluate = _window_awaiting_an_outcome(empty_sqlite, tmp_path)
    resolve_market(empty_sqlite, window_of(datetime.now(UTC) - timedelta(hours=1)), "m-late", "NO")
    hour, start = timedelta(hours=1), window_start(window)
    _range_run(instance, start - 48 * hour, start - 24 * hour, dg.DagsterRunStatus.STARTED)  # other windows
    _range_run(instance, start - 20 * hour, start - hour, dg.DagsterRunStatus.NOT_STARTED)  # ends just before
    _range_run(instance, start - 20 * hour, start + hour, dg.DagsterRunStatus.FAILURE)  # finished
    assert [r.partition_key for r in evaluate().run_requests] == [partition_key_of(window)]

    backfill = _range_run(instance, start, start + hour, dg.DagsterRunStatus.STARTED)
    waiting = evaluate()
    assert isinstance(waiting, dg.SkipReason) and window in waiting.skip_message

    instance.report_run_failed(backfill)
    assert [r.partition_key for r in evaluate().run_requests] == [partition_key_of(window)]
