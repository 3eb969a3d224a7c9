"""Per-window, per-version statistics: attribution by the recorded `modelVersion`, sums that add up, and the
`arms.json` the window assets write beside the outcome rewards."""

from __future__ import annotations

import itertools
from datetime import timedelta

import dagster as dg
import pytest

from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.rewards.outcomes import OutcomeReward
from babylon_pipeline.serving.arms import BASE_ARM, ArmFacts, ArmStats, WindowArms, arm_of, total, window_arms
from babylon_pipeline.storage.factory import open_object_store
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.recorder import TrajectoryRecorder
from babylon_pipeline.store.records import Action, TradeRecord
from babylon_pipeline.windowing.rewards import read_outcome_rewards, read_window_arms
from babylon_pipeline.windows import window_start
from tests.canary_windows import Behaviour, materialize_rewards, record_arms

W = "2025-11-15T10:00"


def _trade(tid: str, versions: tuple, actions: int = 2, status: str = "completed") -> TradeRecord:
    return TradeRecord(trajectory_id=tid, window_id=W, window_pnl=0.0, model_versions=versions, final_status=status,
                       actions=[Action(action_type="BUY_SHARES") for _ in range(actions)])


def _reward(tid: str, reward: float, failed: int = 0) -> OutcomeReward:
    return OutcomeReward(tid, reward, {}, scored_trades=0, pending_trades=0, unscorable_trades=0, failed_actions=failed)


def test_a_trajectory_belongs_to_the_one_version_its_calls_recorded():
    assert arm_of(("v1.2.0",)) == "v1.2.0"
    assert arm_of((None,)) == BASE_ARM  # calls without a version: the base answered
    assert arm_of(()) is None  # no call recorded: cannot be told
    assert arm_of(("v1.1.0", "v1.2.0")) is None  # a stage change mid-trajectory


def test_window_sums_per_arm():
    trades = [_trade("a", ("v1.2.0",)), _trade("b", ("v1.2.0",), status="error"), _trade("c", (None,), actions=4),
              _trade("d", ()), _trade("e", ("v1.1.0", "v1.2.0")), _trade("f", ("v1.2.0",), actions=0)]
    rewards = [_reward("a", 0.5), _reward("b", -0.25, failed=1), _reward("c", 0.1, failed=1), _reward("d", 0.0),
               _reward("e", 0.0), _reward("f", 0.0)]
    arms = window_arms([ArmFacts.of(t) for t in trades], rewards)
    assert arms.arms["v1.2.0"] == ArmStats(trajectories=3, reward_sum=0.25, reward_sum_sq=0.3125, actions=4,
                                           failed_actions=1, failed_share_sum=0.5, failed_share_sum_sq=0.25, errors=1)
    assert arms.arms[BASE_ARM] == ArmStats(1, 0.1, pytest.approx(0.01), 4, 1, 0.25, 0.0625, 0)
    assert (arms.unattributed, arms.mixed) == (1, 1)
    assert WindowArms.from_json_dict(arms.to_json_dict()) == arms
    twice = total([arms, arms])
    assert twice.arm("v1.2.0").reward.n == 6 and twice.arm("v1.2.0").errors == 2 and twice.unattributed == 2
    assert twice.arm("v9.9.9") == ArmStats()
    with pytest.raises(ValueError):
        window_arms([ArmFacts.of(t) for t in trades], rewards[:-1])


@pytest.fixture
def window_home(tmp_path, empty_sqlite):
    upgrade(empty_sqlite)
    url = (tmp_path / "objects").as_uri()
    resources = {"trajectory_store": TrajectoryStore(database_url=str(empty_sqlite.url)),
                 "object_store": ObjectStoreResource(url=url)}
    return empty_sqlite, resources, open_object_store(url)


def test_window_assets_write_the_arms_of_the_recorded_versions(window_home):
    engine, resources, store = window_home
    record_arms(engine, W, {None: Behaviour(12, right=0.75), "v1.2.0": Behaviour(8, right=0.25, failed=0.5, errored=0.25)})
    recorder = TrajectoryRecorder(engine, clock=lambda: window_start(W) + timedelta(minutes=59))
    with recorder.trajectory("agent-silent", scenario_id=W) as t:  # every step failed before the model answered
        t.start_step({"agentPnL": 0.0})
        t.complete_step({"actionType": "BUY_SHARES", "success": False, "error": "policy down"}, reward=0.0)
    materialize_rewards(resources, W, dg.DagsterInstance.ephemeral())

    arms = read_window_arms(store, W)
    rewards = read_outcome_rewards(store, W)["rewards"]
    assert set(arms.arms) == {BASE_ARM, "v1.2.0"} and (arms.unattributed, arms.mixed) == (1, 0)
    base, canary = arms.arms[BASE_ARM], arms.arms["v1.2.0"]
    assert (base.trajectories, canary.trajectories) == (12, 8)
    assert base.reward_sum + canary.reward_sum == pytest.approx(sum(r["reward"] for r in rewards.values()) + 0.15 * 0.25)
    assert base.failed_actions == 0 and canary.failed_actions == 2 * round(canary.failed_share_sum)
    assert canary.reward.mean < base.reward.mean and canary.errors >= 1 and base.errors == 0


def test_an_index_line_written_before_the_versions_were_noted_reads_as_unattributed():
    old = TradeRecord.model_validate_json('{"trajectoryId": "t", "windowId": "2025-11-15T10:00", "windowPnL": 0.0, '
                                          '"actions": []}')
    assert (old.model_versions, old.final_status) == ((), "completed")
    assert window_arms([ArmFacts.of(old)], [_reward("t", 0.2)]) == WindowArms({}, unattributed=1, mixed=0)


def test_reward_sums_are_exact_whatever_the_order():
    """Sums over a million trajectories add tiny rewards to large ones: a naive sum of these gives 0.0."""
    values = [1e16, 1.0, 1.0, -1e16]
    trades = [_trade(str(i), ("v1.2.0",)) for i in range(len(values))]
    arms = window_arms([ArmFacts.of(t) for t in trades], [_reward(str(i), v) for i, v in enumerate(values)])
    assert arms.arms["v1.2.0"].reward_sum == 2.0
