"""Outcome rewards: each component moves the right way, pending trades wait, bad input never crashes."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from babylon_pipeline.rewards import RewardWeights, score_outcomes
from babylon_pipeline.store.records import Trajectory

W = "2025-11-15T10:00"
LATER = "2025-11-15T13:00"


def _action(kind: str, success: bool = True, **params: Any) -> dict:
    return {"actionType": kind, "parameters": params, "success": success}


def _trajectory(tid: str, *actions: dict, pnls: tuple[float, ...] = (0.0, 0.0)) -> Trajectory:
    """One step per action; the first steps' states carry `pnls` as the cumulative `agentPnL`."""
    steps = [
        {
            "stepNumber": n,
            "timestamp": 1_763_200_800_000 + n,
            "environmentState": {"agentPnL": pnls[n]} if n < len(pnls) else {},
            "action": actions[n] if n < len(actions) else None,
        }
        for n in range(max(len(actions), len(pnls)))
    ]
    return Trajectory.model_validate(
        {
            "id": tid, "trajectoryId": tid, "agentId": "ava", "windowId": W, "scenarioId": "s1",
            "startTime": "2025-11-15T10:05:00", "endTime": "2025-11-15T10:06:00", "durationMs": 60_000,
            "steps": steps, "totalReward": 0.0, "finalStatus": "completed",
        }
    )


def _market(market_id: str, outcome: str | None, window: str = W) -> dict:
    return {"windowId": window, "stockTicker": None, "predictionMarketId": market_id, "question": "?", "outcome": outcome,
            "finalProbability": 0.9, "volume": 100.0}


def _stock(ticker: str, change: Any, window: str = W, **prices: Any) -> dict:
    return {"windowId": window, "stockTicker": ticker, "changePercent": change, "sentiment": "BULLISH", **prices}


OUTCOMES = [_market("m-yes", "YES"), _market("m-no", "NO"), _stock("BTC", 4.0), _stock("ETH", -2.0)]


def _scores(*trajectories: Trajectory, outcomes: list[dict] = OUTCOMES, **weights: float):
    result = score_outcomes(trajectories, outcomes, RewardWeights(**weights))
    return {r.trajectory_id: r for r in result.rewards}


def test_a_right_bet_beats_a_wrong_one() -> None:
    s = _scores(
        _trajectory("right", _action("BUY_SHARES", marketId="m-yes", side="YES", amount=10)),
        _trajectory("wrong", _action("BUY_SHARES", marketId="m-yes", side="NO", amount=10)),
        _trajectory("right-no", _action("BUY_SHARES", marketId="m-no", side="NO", amount=10)),
        _trajectory("sold-winner", _action("SELL_SHARES", marketId="m-yes", side="YES", amount=10)),
        _trajectory("idle"),
    )
    assert s["right"].components["prediction"] == s["right-no"].components["prediction"] == 1.0
    assert s["wrong"].components["prediction"] == s["sold-winner"].components["prediction"] == -1.0
    assert s["right"].reward > s["idle"].reward > s["wrong"].reward
    assert s["right"].scored_trades == 1 and s["idle"].scored_trades == 0


def test_a_long_in_a_rising_ticker_beats_a_short() -> None:
    s = _scores(
        _trajectory("long", _action("OPEN_PERP", ticker="BTC", side="long", size=5)),
        _trajectory("short", _action("OPEN_PERP", ticker="BTC", side="short", size=5)),
        _trajectory("short-falling", _action("OPEN_PERP", ticker="eth", side="SHORT", size=5)),
    )
    assert s["long"].components["perp"] == pytest.approx(math.tanh(0.04 / 0.02))
    assert s["long"].reward > s["short"].reward
    assert s["short-falling"].components["perp"] > 0


def test_a_bigger_stake_weighs_more() -> None:
    big_right = _trajectory("big-right", _action("BUY_SHARES", marketId="m-yes", side="YES", amount=100),
                            _action("BUY_SHARES", marketId="m-no", side="YES", amount=10))
    big_wrong = _trajectory("big-wrong", _action("BUY_SHARES", marketId="m-yes", side="YES", amount=10),
                            _action("BUY_SHARES", marketId="m-no", side="YES", amount=100))
    s = _scores(big_right, big_wrong)
    assert s["big-right"].components["prediction"] == pytest.approx(90 / 110)
    assert s["big-wrong"].components["prediction"] == pytest.approx(-90 / 110)
    big_long = _trajectory("big-long", _action("OPEN_PERP", ticker="BTC", side="long", size=50),
                           _action("OPEN_PERP", ticker="ETH", side="long", size=5))
    small_long = _trajectory("small-long", _action("OPEN_PERP", ticker="BTC", side="long", size=5),
                             _action("OPEN_PERP", ticker="ETH", side="long", size=50))
    s = _scores(big_long, small_long)
    assert s["big-long"].components["perp"] > 0 > s["small-long"].components["perp"]


def test_window_pnl_counts_and_failed_actions_cost() -> None:
    s = _scores(
        _trajectory("gain", pnls=(100.0, 150.0)),  # agentPnL is cumulative: +50 inside the window
        _trajectory("loss", pnls=(100.0, 60.0)),
        _trajectory("clean", _action("CREATE_POST", postId="p")),
        _trajectory("failed", _action("CREATE_POST", postId="p"), _action("BUY_SHARES", success=False, marketId="m-yes", side="YES", amount=5)),
        _trajectory("failed-twice", _action("CREATE_POST", success=False), _action("OPEN_PERP", success=False)),
    )
    assert s["gain"].components["pnl"] == pytest.approx(math.tanh(0.5)) and s["gain"].reward > s["loss"].reward
    assert s["failed"].components["failure_penalty"] == -0.25 and s["failed"].failed_actions == 1
    assert s["clean"].reward > s["failed"].reward > s["failed-twice"].reward
    assert s["failed"].scored_trades == 0 and s["failed"].unscorable_trades == 0  # a failed trade is no trade


def test_an_unresolved_market_leaves_the_trade_pending() -> None:
    trajectory = _trajectory("t", _action("BUY_SHARES", marketId="m-later", side="YES", amount=10),
                             _action("BUY_SHARES", marketId="m-yes", side="NO", amount=1),
                             _action("OPEN_PERP", ticker="SOL", side="long", size=3))
    now = _scores(trajectory, outcomes=[*OUTCOMES, _market("m-later", None), _stock("SOL", 9.0, window=LATER)])["t"]
    assert (now.pending_trades, now.scored_trades) == (2, 1)
    assert now.components["prediction"] == -1.0 and now.components["perp"] == 0.0  # only the resolved wrong bet counts
    later = _scores(trajectory, outcomes=[*OUTCOMES, _market("m-later", "YES", window=LATER), _stock("SOL", 9.0, window=W)])["t"]
    assert (later.pending_trades, later.scored_trades) == (0, 3)
    assert later.components["prediction"] == pytest.approx(9 / 11) and later.reward > now.reward


def test_production_trading_decisions_are_scored() -> None:
    decision = {"method": "buy", "pnlChange": 5.0, "initialPnL": 0, "finalPnL": 5, "marketType": "prediction"}
    s = _scores(
        _trajectory("yes", _action("TRADING_DECISION", **decision, marketId="m-yes", side="YES")),
        _trajectory("sell-yes", _action("TRADING_DECISION", **decision | {"method": "sell"}, marketId="m-yes", side="YES")),
        _trajectory("long", _action("TRADING_DECISION", **decision | {"marketType": "perp"}, ticker="BTC", side="long")),
    )
    assert s["yes"].components["prediction"] == 1.0 and s["sell-yes"].components["prediction"] == -1.0
    assert s["long"].components["perp"] > 0 and s["long"].scored_trades == 1


def test_strings_and_other_spellings_are_accepted() -> None:
    s = _scores(
        _trajectory("strings", _action("BUY_SHARES", marketId="m-yes", side="yes", amount=" 10 ", price="0.4"),
                    _action("OPEN_PERP", ticker="btc", side="Long", size="2.5")),
        _trajectory("snake", _action("BUY_SHARES", market_id="m-yes", outcome="YES", shares="3"),
                    _action("OPEN_PERP", symbol="BTC", direction="long", quantity=1)),
        outcomes=[_market("M-YES", "yes"), _stock("BTC", None, startPrice="100", endPrice="104")],
    )
    for r in s.values():
        assert (r.scored_trades, r.unscorable_trades) == (2, 0)
        assert r.components["prediction"] == 1.0 and r.components["perp"] == pytest.approx(math.tanh(2.0))


def test_missing_or_bad_parameters_are_counted_not_fatal() -> None:
    s = _scores(_trajectory(
        "t",
        _action("BUY_SHARES", side="YES", amount=10),  # no market
        _action("BUY_SHARES", marketId="m-yes", amount=10),  # no side
        _action("SELL_SHARES", marketId="m-yes", side="MAYBE", amount=10),
        _action("BUY_SHARES", marketId="m-yes", side="YES"),  # no stake
        _action("BUY_SHARES", marketId="m-yes", side="YES", amount="ten"),
        _action("BUY_SHARES", marketId="m-yes", side="YES", amount=-5),
        _action("OPEN_PERP", side="long", size=1),  # no ticker
        _action("OPEN_PERP", ticker="BTC", size=1),  # no side
        _action("TRADING_DECISION", method="buy", pnlChange=1.0),  # neither market nor ticker
        _action("CLOSE_PERP", ticker="BTC"),  # not a trade to score
        _action("BUY_SHARES", marketId="m-yes", side="YES", amount=True),  # a bool is no stake
    ))["t"]
    assert (s.unscorable_trades, s.scored_trades, s.pending_trades) == (10, 0, 0)
    assert s.components == {"prediction": 0.0, "perp": 0.0, "pnl": 0.0, "failure_penalty": 0.0}


def test_outputs_stay_finite_and_bounded() -> None:
    extreme = [
        _trajectory("huge", _action("BUY_SHARES", marketId="m-yes", side="YES", amount="1e308"),
                    _action("BUY_SHARES", marketId="m-no", side="YES", amount=1.7e308),
                    _action("OPEN_PERP", ticker="BTC", side="long", size=1e308),
                    _action("OPEN_PERP", ticker="ETH", side="long", size=1e308), pnls=(-1e308, 1e308)),
        _trajectory("nan", _action("BUY_SHARES", marketId="m-yes", side="YES", amount="nan"),
                    _action("OPEN_PERP", ticker="BTC", side="long", size="inf")),
        _trajectory("worst", *[_action("BUY_SHARES", success=False)] * 9, _action("BUY_SHARES", marketId="m-yes", side="NO", amount=1),
                    _action("OPEN_PERP", ticker="BTC", side="short", size=1), pnls=(0.0, -1e9)),
    ]
    outcomes = [*OUTCOMES, _stock("ETH", "nan", window=LATER), {"windowId": None, "outcome": "YES"}, {}]
    result = score_outcomes(extreme, outcomes)
    for r in result.rewards:
        assert math.isfinite(r.reward) and -1.0 <= r.reward <= 1.0
        assert all(math.isfinite(v) and -1.0 <= v <= 1.0 for v in r.components.values())
    assert {r.trajectory_id: r.unscorable_trades for r in result.rewards} == {"huge": 0, "nan": 2, "worst": 0}
    assert result.by_trajectory()["worst"] < -0.95


def test_summary_and_determinism() -> None:
    trajectories = [
        _trajectory("a", _action("BUY_SHARES", marketId="m-yes", side="YES", amount=1)),
        _trajectory("b", _action("BUY_SHARES", marketId="m-open", side="YES", amount=1)),
        _trajectory("c", _action("OPEN_PERP", ticker="BTC", side="short", size=1)),
    ]
    rows = [*OUTCOMES, _market("m-yes", "NO", window="2025-11-15T09:00")]  # an older, conflicting row loses
    first = score_outcomes(trajectories, rows)
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    assert score_outcomes(iter(trajectories), shuffled) == first
    rewards = first.by_trajectory()
    assert first.summary.as_metadata() == {
        "trajectories": 3, "mean_reward": pytest.approx(sum(rewards.values()) / 3), "min_reward": rewards["c"],
        "max_reward": rewards["a"], "scored_trades": 2, "pending_trades": 1, "unscorable_trades": 0, "failed_actions": 0,
    }
    empty = score_outcomes([], rows).summary
    assert (empty.trajectories, empty.mean_reward, empty.min_reward, empty.max_reward) == (0, 0.0, 0.0, 0.0)


def test_weights_are_configurable_and_checked() -> None:
    trajectory = _trajectory("t", _action("BUY_SHARES", marketId="m-yes", side="YES", amount=1), pnls=(0.0, -500.0))
    assert _scores(trajectory, prediction=1, perp=0, pnl=0, failure=0)["t"].reward == 1.0
    assert _scores(trajectory, prediction=0, perp=0, pnl=1, failure=0)["t"].reward < -0.99
    with pytest.raises(ValueError):
        RewardWeights(prediction=0, perp=0, pnl=0, failure=0)
    with pytest.raises(ValueError):
        RewardWeights(pnl_scale=0)
    with pytest.raises(ValueError):
        RewardWeights(prediction=-1)
