"""Rewards from what actually happened in the markets: pure functions, no Dagster, no database.

`score_outcomes` scores a window's trajectories against the `market_outcomes` rows known so far;
the formula is documented in `rewards.outcomes`.
"""

from babylon_pipeline.rewards.markets import MarketOutcomes
from babylon_pipeline.rewards.outcomes import (
    DEFAULT_WEIGHTS,
    OutcomeReward,
    OutcomeRewards,
    OutcomeSummary,
    RewardWeights,
    score_outcomes,
    score_trajectory,
)
from babylon_pipeline.rewards.trades import PerpTrade, PredictionTrade, Unscorable, read_trade

__all__ = [
    "DEFAULT_WEIGHTS",
    "MarketOutcomes",
    "OutcomeReward",
    "OutcomeRewards",
    "OutcomeSummary",
    "PerpTrade",
    "PredictionTrade",
    "RewardWeights",
    "Unscorable",
    "read_trade",
    "score_outcomes",
    "score_trajectory",
]
