"""The always-valid test: its error rate under "no difference" holds when read after every observation,
and a real regression is found."""

from __future__ import annotations

import math

import numpy as np
import pytest

from babylon_pipeline.serving.sequential import Moments, Verdict, compare, half_width

ALPHA = 0.05


def _first_verdicts(rewards: np.ndarray, on_canary: np.ndarray) -> list[Verdict]:
    """Per sequence, the first significant verdict when `compare` is read after every observation
    (INCONCLUSIVE if none): how a sensor ticking forever would see it."""
    found = []
    for values, canary in zip(rewards.tolist(), on_canary.tolist(), strict=True):
        arms = [Moments(), Moments()]  # control, canary
        verdict = Verdict.INCONCLUSIVE
        for x, c in zip(values, canary, strict=True):
            arms[c] = arms[c] + Moments(1, x, x * x)
            result = compare(arms[1], arms[0], alpha=ALPHA)
            if result.verdict in (Verdict.LOWER, Verdict.HIGHER):
                verdict = result.verdict
                break
        found.append(verdict)
    return found


def _allocation(rng: np.random.Generator, sequences: int, steps: int) -> np.ndarray:
    """Staged like a canary: 10 % of the traffic for the first third, then 50 %."""
    fraction = np.where(np.arange(steps) < steps // 3, 0.1, 0.5)
    return rng.random((sequences, steps)) < fraction


@pytest.mark.parametrize("kind", ["skewed", "binary"])
def test_type_one_error_stays_below_alpha_when_looked_at_every_step(kind):
    rng = np.random.default_rng(14)
    sequences, steps = 400, 1200
    if kind == "skewed":  # a bounded, skewed reward in [-1, 1], like outcome rewards
        rewards = rng.beta(2, 5, (sequences, steps)) * 2 - 1
    else:  # a rare 0/1 event, like an errored trajectory
        rewards = (rng.random((sequences, steps)) < 0.1).astype(float)
    verdicts = _first_verdicts(rewards, _allocation(rng, sequences, steps))
    false_alarms = sum(v is not Verdict.INCONCLUSIVE for v in verdicts) / sequences
    assert false_alarms <= ALPHA, f"{false_alarms:.3f} of {sequences} null sequences rejected"


def test_a_real_regression_is_detected():
    rng = np.random.default_rng(15)
    sequences, steps = 100, 1200
    canary = _allocation(rng, sequences, steps)
    rewards = rng.beta(2, 5, (sequences, steps)) * 2 - 1 - 0.15 * canary  # the canary loses 0.15 reward
    verdicts = _first_verdicts(rewards, canary)
    assert sum(v is Verdict.LOWER for v in verdicts) >= 0.9 * sequences
    assert Verdict.HIGHER not in verdicts


def test_interval_is_the_inverted_mixture_ratio():
    """At the interval's edge the mixture likelihood ratio is exactly 1/alpha (the mSPRT's threshold)."""
    canary, control = Moments(200, -10.0, 40.0), Moments(1800, 36.0, 300.0)
    result = compare(canary, control, alpha=ALPHA, effect_scale=0.1)
    pooled = (canary + control).variance
    v = max(canary.variance, pooled) / canary.n + max(control.variance, pooled) / control.n
    tau2 = 0.01
    edge = result.high - result.diff
    log_lr = 0.5 * math.log(v / (v + tau2)) + tau2 * edge ** 2 / (2 * v * (v + tau2))
    assert log_lr == pytest.approx(math.log(1 / ALPHA))
    assert result.diff == pytest.approx(-10 / 200 - 36 / 1800)
    assert result.low < result.diff < result.high
    assert result.verdict is Verdict.INCONCLUSIVE and result.p_value > ALPHA


def test_no_verdict_below_the_minimum_per_arm():
    result = compare(Moments(29, -29.0, 29.0), Moments(1000, 500.0, 300.0))
    assert result.verdict is Verdict.INSUFFICIENT and math.isinf(result.low) and result.p_value == 1.0


def test_identical_constant_arms_are_inconclusive_and_distinct_constants_are_not():
    assert compare(Moments(50, 0.0, 0.0), Moments(500, 0.0, 0.0)).verdict is Verdict.INCONCLUSIVE
    assert compare(Moments(50, -50.0, 50.0), Moments(500, 0.0, 0.0)).verdict is Verdict.LOWER


def test_the_width_shrinks_with_data_and_barely_depends_on_the_effect_scale():
    assert half_width(0.09 / 100) > half_width(0.09 / 1000) > half_width(0.09 / 10000)
    v = 0.09 / 200 + 0.09 / 1800
    assert half_width(v, effect_scale=0.05) / half_width(v, effect_scale=0.1) == pytest.approx(1, abs=0.1)
    assert half_width(v, effect_scale=0.2) / half_width(v, effect_scale=0.1) == pytest.approx(1, abs=0.15)
