"""Outcome rewards: a reward per trajectory from what actually happened in the markets.

Four components, each bounded, computed from the trajectory's successful trades (`rewards.trades`)
and the `market_outcomes` rows known so far (`rewards.markets`):

    prediction = Σ stake·direction·(+1 if side = outcome else −1) / Σ stake       in [−1, 1]
                 over prediction trades whose market has resolved
    perp       = tanh( Σ size·direction·move / Σ size / perp_move_scale )          in (−1, 1)
                 over perp trades; `move` is the ticker's change over the trajectory's window
                 (changePercent / 100), direction +1 long, −1 short
    pnl        = tanh( window_pnl / pnl_scale )                                    in (−1, 1)
                 window_pnl = last minus first recorded `agentPnL` (realised P&L delta)
    failure    = −min(1, failed_actions · failure_step)                            in [−1, 0]

    reward = (w_prediction·prediction + w_perp·perp + w_pnl·pnl + w_failure·failure) / Σ w

so the reward is a weighted mean of bounded terms and lies in [−1, 1] whatever the weights. A
component with nothing to score is 0 (no bet is neither right nor wrong). A trade on a market
not yet resolved, or on a ticker whose move in the window is not yet known, is *pending*: it is
counted, not scored, and scoring again once the outcome rows arrive scores it. A trade that lacks
what scoring needs is counted as unscorable. Failed actions are not scored as trades; they only
cost through `failure`. Trade prices are not used: what a price earned shows in the P&L term.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from babylon_pipeline.rewards.markets import MarketOutcomes
from babylon_pipeline.rewards.trades import PerpTrade, PredictionTrade, Unscorable, read_trade
from babylon_pipeline.store.records import TradeRecord, Trajectory


@dataclass(frozen=True)
class RewardWeights:
    """Component weights (relative: they are divided by their sum) and the scales of the tanh terms."""

    prediction: float = 0.35
    perp: float = 0.25
    pnl: float = 0.25
    failure: float = 0.15
    pnl_scale: float = 100.0  # game dollars of window P&L that give pnl = tanh(1) ≈ 0.76
    perp_move_scale: float = 0.02  # a 2 % stake-weighted move in the agent's favour gives tanh(1)
    failure_step: float = 0.25  # each failed action; four saturate the failure term

    def __post_init__(self) -> None:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if any(not (math.isfinite(v) and v >= 0) for v in values.values()):
            raise ValueError(f"reward weights and scales must be finite and non-negative: {values}")
        if self.prediction + self.perp + self.pnl + self.failure <= 0:
            raise ValueError("at least one reward weight must be positive")
        if min(self.pnl_scale, self.perp_move_scale, self.failure_step) <= 0:
            raise ValueError("pnl_scale, perp_move_scale and failure_step must be positive")


@dataclass(frozen=True)
class OutcomeReward:
    trajectory_id: str
    reward: float
    components: dict[str, float]  # prediction, perp, pnl, failure_penalty: unweighted, each in [-1, 1]
    scored_trades: int
    pending_trades: int
    unscorable_trades: int
    failed_actions: int
    pending_markets: tuple[str, ...] = ()  # prediction markets still unresolved
    pending_tickers: tuple[str, ...] = ()  # tickers whose move in the window is not yet known


@dataclass(frozen=True)
class OutcomeSummary:
    """The window at a glance; with no trajectories the rewards read 0."""

    trajectories: int
    mean_reward: float
    min_reward: float
    max_reward: float
    scored_trades: int
    pending_trades: int
    unscorable_trades: int
    failed_actions: int

    def as_metadata(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class OutcomeRewards:
    rewards: list[OutcomeReward]
    summary: OutcomeSummary

    def by_trajectory(self) -> dict[str, float]:
        """Rewards keyed by trajectory id, as the ART export and the judge blend take them."""
        return {r.trajectory_id: r.reward for r in self.rewards}


DEFAULT_WEIGHTS = RewardWeights()


def score_outcomes(
    trajectories: Iterable[Trajectory | TradeRecord],
    outcome_rows: Iterable[Mapping[str, Any]],
    weights: RewardWeights = DEFAULT_WEIGHTS,
) -> OutcomeRewards:
    """Score every trajectory of the window, in the order given, against the outcomes known so far."""
    markets = MarketOutcomes.from_rows(outcome_rows)
    rewards = [score_trajectory(trajectory, markets, weights) for trajectory in trajectories]
    values = [r.reward for r in rewards] or [0.0]
    summary = OutcomeSummary(
        trajectories=len(rewards),
        mean_reward=math.fsum(values) / len(values),
        min_reward=min(values),
        max_reward=max(values),
        scored_trades=sum(r.scored_trades for r in rewards),
        pending_trades=sum(r.pending_trades for r in rewards),
        unscorable_trades=sum(r.unscorable_trades for r in rewards),
        failed_actions=sum(r.failed_actions for r in rewards),
    )
    return OutcomeRewards(rewards=rewards, summary=summary)


def score_trajectory(trajectory: Trajectory | TradeRecord, markets: MarketOutcomes, weights: RewardWeights) -> OutcomeReward:
    actions = trajectory.actions
    failed = sum(not action.success for action in actions)
    trades = [read_trade(action) for action in actions if action.success]
    bets: list[tuple[float, float]] = []  # (stake, signed correctness)
    moves: list[tuple[float, float]] = []  # (size, signed move)
    pending_markets: set[str] = set()
    pending_tickers: set[str] = set()
    pending = 0
    for trade in trades:
        if isinstance(trade, PredictionTrade):
            outcome = markets.resolution(trade.market_id)
            if outcome is None:
                pending += 1
                pending_markets.add(trade.market_id)
            else:
                bets.append((trade.stake, trade.direction * (1.0 if trade.side == outcome else -1.0)))
        elif isinstance(trade, PerpTrade):
            move = markets.move(trajectory.window_id, trade.ticker)
            if move is None:
                pending += 1
                pending_tickers.add(trade.ticker)
            else:
                moves.append((trade.size, trade.direction * move))
    pnl = trajectory.window_pnl
    components = {
        "prediction": _weighted_mean(bets),
        "perp": math.tanh(_weighted_mean(moves) / weights.perp_move_scale),
        "pnl": math.tanh(pnl / weights.pnl_scale) if math.isfinite(pnl) else 0.0,
        "failure_penalty": -min(1.0, failed * weights.failure_step),
    }
    weighted = (
        weights.prediction * components["prediction"]
        + weights.perp * components["perp"]
        + weights.pnl * components["pnl"]
        + weights.failure * components["failure_penalty"]
    )
    return OutcomeReward(
        trajectory_id=trajectory.trajectory_id,
        reward=weighted / (weights.prediction + weights.perp + weights.pnl + weights.failure),
        components=components,
        scored_trades=len(bets) + len(moves),
        pending_trades=pending,
        unscorable_trades=sum(isinstance(trade, Unscorable) for trade in trades),
        failed_actions=failed,
        pending_markets=tuple(sorted(pending_markets)),
        pending_tickers=tuple(sorted(pending_tickers)),
    )


def _weighted_mean(pairs: list[tuple[float, float]]) -> float:
    """Σ w·v / Σ w with the weights first scaled to at most 1, so huge stakes cannot overflow."""
    if not pairs:
        return 0.0
    top = max(weight for weight, _ in pairs)
    total = math.fsum(weight / top for weight, _ in pairs)
    return math.fsum(weight / top / total * value for weight, value in pairs)
