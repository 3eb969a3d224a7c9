"""The watch's decision, pure: each rule with its explanation line."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from babylon_pipeline.serving.arms import BASE_ARM, ArmStats, WindowArms
from babylon_pipeline.serving.state import Deployment
from babylon_pipeline.serving.watch import Action, WatchConfig, canary_windows, decide

START = datetime(2026, 12, 5, 8, 0)
CONFIG = WatchConfig()


def _deployment(fraction: float = 0.1, *, stage_since: datetime = START, in_service: str | None = "v1.1.0") -> Deployment:
    return Deployment(in_service, "v1.2.0", fraction, 0, "salt", START, stage_since)


def _arm(n: int, mean: float, *, seed: int, failed: float = 0.02, errors: float = 0.0) -> ArmStats:
    """n trajectories with rewards around `mean` (sd 0.3), `failed` failed-action share, `errors` errored share."""
    rng = np.random.default_rng(seed)
    rewards = np.clip(rng.normal(mean, 0.3, n), -1, 1)
    shares = (rng.random(n) < failed).astype(float)
    return ArmStats(n, float(rewards.sum()), float((rewards ** 2).sum()), 2 * n, int(2 * shares.sum()),
                    float(shares.sum()), float(shares.sum()), int((rng.random(n) < errors).sum()))


def _arms(canary: ArmStats, control: ArmStats, control_name: str = "v1.1.0") -> WindowArms:
    return WindowArms({"v1.2.0": canary, control_name: control}, unattributed=3)


def test_a_good_canary_goes_to_the_next_stage_then_is_promoted():
    arms = _arms(_arm(250, 0.1, seed=1), _arm(2250, 0.1, seed=2))
    now = START + timedelta(minutes=90)
    first = decide(_deployment(0.1), arms, CONFIG, now)
    assert first.action is Action.NEXT_STAGE and first.next_fraction == 0.5
    assert first.explanation.startswith("canary v1.2.0 at 10 %: 250/200 trajectories (control v1.1.0: 2250), diff ")
    assert "next_stage: no regression with enough data: the next stage (50 %)" in first.explanation
    second = decide(_deployment(0.5, stage_since=START + timedelta(minutes=20)), arms, CONFIG, now)
    assert second.action is Action.PROMOTE and second.next_fraction is None
    assert second.tags()["babylon/watch_action"] == "promote" and "babylon/reward_diff_low" in second.tags()


def test_no_promotion_without_enough_data_or_time_at_the_stage():
    few = decide(_deployment(), _arms(_arm(41, 0.13, seed=1), _arm(380, 0.1, seed=2)), CONFIG,
                 START + timedelta(minutes=90))
    assert few.action is Action.HOLD
    assert few.explanation.startswith("canary v1.2.0 at 10 %: 41/200 trajectories (control v1.1.0: 380), diff +0.0")
    assert few.explanation.endswith("hold: waiting for data: canary 41/200 trajectories")
    early = decide(_deployment(), _arms(_arm(250, 0.1, seed=1), _arm(2250, 0.1, seed=2)), CONFIG,
                   START + timedelta(minutes=30))
    assert early.action is Action.HOLD and early.explanation.endswith("hold: 30/60 min at this stage")


def test_a_regression_rolls_back_before_enough_data_and_despite_manual_approval():
    manual = WatchConfig(manual_approval=True)
    arms = _arms(_arm(60, -0.2, seed=3), _arm(600, 0.1, seed=4))
    rolled = decide(_deployment(), arms, manual, START + timedelta(minutes=5))
    assert rolled.action is Action.ROLLBACK and "rollback: outcome reward significantly lower" in rolled.explanation
    assert rolled.reward.high < 0


def test_guardrails_roll_back_a_breach_but_not_a_rise_within_the_margin():
    broken = _arms(_arm(60, 0.1, seed=5, failed=0.6), _arm(600, 0.1, seed=6, failed=0.02))
    decision = decide(_deployment(), broken, CONFIG, START + timedelta(minutes=5))
    assert decision.action is Action.ROLLBACK and "rollback: failed-action share 0.57 vs 0.02" in decision.explanation
    erroring = _arms(_arm(300, 0.1, seed=5, errors=0.3), _arm(3000, 0.1, seed=6, errors=0.01))
    assert "rollback: error rate" in decide(_deployment(), erroring, CONFIG, START).explanation
    slightly = _arms(_arm(3000, 0.1, seed=5, failed=0.05), _arm(30000, 0.1, seed=6, failed=0.02))
    assert decide(_deployment(), slightly, CONFIG, START + timedelta(minutes=90)).action is Action.NEXT_STAGE


def test_a_canary_without_traffic_is_starved_after_the_timeout():
    arms = WindowArms({"v1.1.0": _arm(900, 0.1, seed=7)})
    assert decide(_deployment(), arms, CONFIG, START + timedelta(minutes=120)).action is Action.HOLD
    starved = decide(_deployment(), arms, CONFIG, START + timedelta(minutes=200))
    assert starved.action is Action.STARVED
    assert starved.explanation.endswith("starved: only canary 0/200 trajectories after 200 min (starvation timeout 180 min)")


def test_manual_approval_holds_a_ready_canary_and_the_base_is_the_control_when_it_serves():
    arms = _arms(_arm(250, 0.1, seed=1), _arm(2250, 0.1, seed=2), control_name=BASE_ARM)
    decision = decide(_deployment(0.5, in_service=None), arms, WatchConfig(manual_approval=True),
                      START + timedelta(minutes=90))
    assert decision.action is Action.HOLD and decision.control == BASE_ARM
    assert decision.explanation.endswith("ready for promotion to all agents: waiting for manual approval "
                                         "(BABYLON_DEPLOY_APPROVAL=manual)")


def test_config_from_the_environment():
    config = WatchConfig.from_env({"BABYLON_CANARY_STAGES": "0.05, 0.25,1", "BABYLON_CANARY_MIN_TRAJECTORIES": "40",
                                   "BABYLON_DEPLOY_APPROVAL": "manual", "BABYLON_CANARY_ALPHA": ""})
    assert config == WatchConfig(stages=(0.05, 0.25, 1.0), min_trajectories=40, manual_approval=True)
    for bad in ({"BABYLON_CANARY_STAGES": "0.5,0.1,1"}, {"BABYLON_CANARY_STAGES": "0.1,0.5"},
                {"BABYLON_CANARY_MIN_TRAJECTORIES": "5"}, {"BABYLON_CANARY_ALPHA": "x"},
                {"BABYLON_DEPLOY_APPROVAL": "sometimes"}):
        with pytest.raises(ValueError, match="BABYLON_"):
            WatchConfig.from_env(bad)


def test_the_windows_of_a_canary():
    assert canary_windows(datetime(2026, 12, 5, 8, 40), datetime(2026, 12, 5, 10, 5)) == [
        "2026-12-05T08:00", "2026-12-05T09:00", "2026-12-05T10:00"]
    with pytest.raises(ValueError):
        decide(Deployment("v1.1.0", None, 0.0, 0, "", None, None), WindowArms(), CONFIG, START)
