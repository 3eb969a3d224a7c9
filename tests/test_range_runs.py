"""What a range run of the window assets leaves in the Dagster instance, read as the UI reads it:
materialization events per partition, asset check executions per partition, the step's failure."""

from __future__ import annotations

import math

import dagster as dg
import pytest
from dagster._core.storage.partition_status_cache import get_and_update_asset_status_cache_value

from babylon_pipeline.jobs.windows import WINDOW_ASSETS
from babylon_pipeline.partitions import partition_key_of, window_partitions
from babylon_pipeline.resources.judge import JudgeResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.store.migrate import upgrade
from tests.window_data import add_malformed_rows, record_window

WINDOWS = ["2025-11-15T00:00", "2025-11-15T01:00", "2025-11-15T02:00"]
WINDOW_ASSET_NAMES = ("window_trajectories", "outcome_rewards", "art_groups", "ruler_scores")


@pytest.fixture
def embedded(tmp_path, empty_sqlite):
    upgrade(empty_sqlite)
    resources = {
        "trajectory_store": TrajectoryStore(database_url=str(empty_sqlite.url)),
        "object_store": ObjectStoreResource(url=(tmp_path / "objects").as_uri()),
        "judge": JudgeResource(),
    }
    return empty_sqlite, resources, tmp_path / "objects"


def _run_range(resources: dict, windows: list[str], instance: dg.DagsterInstance, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        WINDOW_ASSETS, resources=resources, instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": partition_key_of(windows[0]),
              "dagster/asset_partition_range_end": partition_key_of(windows[-1])},
        **kwargs,
    )


def _events(instance: dg.DagsterInstance, asset: str) -> list[dg.EventLogRecord]:
    return list(instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records)


def _figures(record: dg.EventLogRecord) -> dict:
    return {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _check_executions(instance: dg.DagsterInstance, asset: str, check: str) -> list:
    """What the asset check's page lists: one execution record per (run, partition)."""
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    return list(instance.event_log_storage.get_asset_check_execution_history(key, limit=1000))


def _evaluation(record) -> dg.AssetCheckEvaluation:
    return record.event.dagster_event.event_specific_data


def test_a_failing_window_does_not_take_the_others_with_it(embedded) -> None:
    engine, resources, objects = embedded
    for window in WINDOWS:
        record_window(engine, window, scenarios=1, agents=3)
    poisoned = WINDOWS[1]
    (objects / "training-data").mkdir(parents=True)
    (objects / "training-data" / poisoned).write_text("a file where the window's folder goes")  # its writes fail
    instance = dg.DagsterInstance.ephemeral()

    result = _run_range(resources, WINDOWS, instance)

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == "window_trajectories"
    error = failure.step_failure_data.error
    assert "1 of 3 windows failed" in error.message and poisoned in error.message
    assert failure.step_failure_data.user_failure_data.metadata["materialized_windows"].value == 2
    # the finished windows are materialized, each once, with its own figures; the poisoned one is not
    by_partition = {r.partition_key: _figures(r) for r in _events(instance, "window_trajectories")}
    assert set(by_partition) == {partition_key_of(WINDOWS[0]), partition_key_of(WINDOWS[2])}
    assert all(figures["trajectories"] == 3 for figures in by_partition.values())
    assert instance.get_materialized_partitions(dg.AssetKey("window_trajectories")) == set(by_partition)
    # the asset's partition bar: two materialized, the poisoned one failed (what the UI reads from its status cache)
    status = get_and_update_asset_status_cache_value(instance, dg.AssetKey("window_trajectories"), window_partitions)
    assert set(status.deserialize_failed_partition_subsets(window_partitions).get_partition_keys()) == {
        partition_key_of(poisoned)}
    assert set(status.deserialize_materialized_partition_subsets(window_partitions).get_partition_keys()) == set(by_partition)
    # and their checks are recorded under their partitions
    executions = _check_executions(instance, "window_trajectories", "data_quality")
    evaluated = {r.partition: r.status.value for r in executions if r.event.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"}
    assert evaluated == {partition_key_of(WINDOWS[0]): "SUCCEEDED", partition_key_of(WINDOWS[2]): "SUCCEEDED"}

    # the failed window is left to retry: once it is fixed, a run of just that window materializes it
    (objects / "training-data" / poisoned).unlink()
    again = dg.materialize(WINDOW_ASSETS, resources=resources, instance=instance, partition_key=partition_key_of(poisoned))
    assert again.success
    assert instance.get_materialized_partitions(dg.AssetKey("ruler_scores")) == {partition_key_of(poisoned)}


def test_every_window_asset_records_one_event_per_window_with_its_figures(embedded) -> None:
    engine, resources, _ = embedded
    record_window(engine, WINDOWS[0], scenarios=1, agents=3)
    record_window(engine, WINDOWS[2], scenarios=2, agents=2)
    instance = dg.DagsterInstance.ephemeral()

    assert _run_range(resources, WINDOWS, instance).success

    for asset in WINDOW_ASSET_NAMES:
        records = _events(instance, asset)
        assert sorted(r.partition_key for r in records) == [partition_key_of(w) for w in WINDOWS], asset
        for record in records:
            assert not {"windows", "first_window", "last_window"} & set(_figures(record)), asset
    trajectories = {r.partition_key: _figures(r)["trajectories"] for r in _events(instance, "window_trajectories")}
    assert trajectories == {partition_key_of(WINDOWS[0]): 3, partition_key_of(WINDOWS[1]): 0, partition_key_of(WINDOWS[2]): 4}
    groups = {r.partition_key: _figures(r)["groups"] for r in _events(instance, "art_groups")}
    assert groups == {partition_key_of(WINDOWS[0]): 1, partition_key_of(WINDOWS[1]): 0, partition_key_of(WINDOWS[2]): 2}


def test_each_windows_data_quality_result_carries_its_partition_value_and_threshold(embedded) -> None:
    engine, resources, _ = embedded
    record_window(engine, WINDOWS[0], scenarios=1, agents=4)  # 4 of 4 usable
    record_window(engine, WINDOWS[2], scenarios=1, agents=4)
    add_malformed_rows(engine, WINDOWS[2], 2)  # 4 of 6 usable: below 0.95
    instance = dg.DagsterInstance.ephemeral()

    result = _run_range(resources, WINDOWS, instance)

    assert not result.success  # the blocking check failed for one window: downstream does not run
    executions = _check_executions(instance, "window_trajectories", "data_quality")
    assert len(executions) == 3 and None not in {r.partition for r in executions}
    by_partition = {r.partition: (r.status.value, _evaluation(r)) for r in executions}
    good, empty, poor = (by_partition[partition_key_of(w)] for w in WINDOWS)
    assert good[0] == "SUCCEEDED" and good[1].metadata["data_quality"].value == 1.0
    assert poor[0] == "FAILED" and poor[1].severity == dg.AssetCheckSeverity.ERROR
    assert poor[1].metadata["data_quality"].value == 0.666667  # 4/6, to 6 significant digits
    assert empty[0] == "FAILED" and empty[1].severity == dg.AssetCheckSeverity.WARN
    assert empty[1].metadata["trajectories"].value == 0
    assert {e.metadata["threshold"].value for _, e in by_partition.values()} == {0.95}
    # each result points at its window's materialization, which the check page links to
    materializations = {r.partition_key: r.storage_id for r in _events(instance, "window_trajectories")}
    assert {p: e.target_materialization_data.storage_id for p, (_, e) in by_partition.items()} == materializations
    duplicates = _check_executions(instance, "window_trajectories", "no_duplicates")
    assert sorted(r.partition for r in duplicates) == sorted(partition_key_of(w) for w in WINDOWS)
    assert not result.asset_materializations_for_node("ruler_scores")

    # a run of one window (the hourly schedule's) reports under that window's partition too
    single = dg.materialize(WINDOW_ASSETS, resources=resources, instance=instance, partition_key=partition_key_of(WINDOWS[0]))
    assert single.success
    latest = {check: [r for r in _check_executions(instance, "ruler_scores", check) if r.run_id == single.run_id]
              for check in ("scored_fraction", "scores_in_range")}
    for [record] in latest.values():
        assert record.partition == partition_key_of(WINDOWS[0]) and record.status.value == "SUCCEEDED"
    assert _evaluation(latest["scores_in_range"][0]).metadata["out_of_range"].value == 0
    [scored] = latest["scored_fraction"]
    assert {k: v.value for k, v in _evaluation(scored).metadata.items()} == {"scored_fraction": 1.0, "threshold": 0.9}


def test_figures_are_named_for_their_scale_and_rounded_for_display(embedded) -> None:
    engine, resources, _ = embedded
    record_window(engine, WINDOWS[0], scenarios=2, agents=3)
    instance = dg.DagsterInstance.ephemeral()

    assert _run_range(resources, WINDOWS[:2], instance).success

    [trajectories] = [_figures(r) for r in _events(instance, "window_trajectories") if r.partition_key == partition_key_of(WINDOWS[0])]
    assert {"app_total_reward_min", "app_total_reward_mean", "app_total_reward_max"} <= set(trajectories)
    assert not {"reward_min", "reward_mean", "reward_max"} & set(trajectories)
    assert trajectories["app_total_reward_mean"] == 0.3  # 0.1·agent per step, 3 steps: mean of 0, 0.3, 0.6
    [outcomes] = [_figures(r) for r in _events(instance, "outcome_rewards") if r.partition_key == partition_key_of(WINDOWS[0])]
    assert {"outcome_reward_min", "outcome_reward_mean", "outcome_reward_max"} <= set(outcomes)
    assert not {"mean_reward", "min_reward", "max_reward"} & set(outcomes)
    assert -1.0 <= outcomes["outcome_reward_min"] <= outcomes["outcome_reward_mean"] <= outcomes["outcome_reward_max"] <= 1.0
    [ruler] = [_figures(r) for r in _events(instance, "ruler_scores") if r.partition_key == partition_key_of(WINDOWS[0])]
    assert ruler["judge_failed"] == 0 and ruler["judge_groups"] == 2
    assert not [name for name in ruler if name.startswith("judge_judge_")]
    for asset in WINDOW_ASSET_NAMES:
        for record in _events(instance, asset):
            floats = {k: v for k, v in _figures(record).items() if isinstance(v, float) and math.isfinite(v)}
            assert {k: v for k, v in floats.items() if float(f"{v:.6g}") != v} == {}, asset
