"""The hourly window assets: trajectories → outcome rewards → ART groups → RULER scores.

Each asset processes every window of its run (one for the hourly schedule, many for a single-run
backfill) by calling a `windowing` stage, and reports each window's figures and check results under
its own partition, with stable names (`assets.reporting`).
(No `from __future__ import annotations` here: Dagster reads the config classes off the signatures.)
"""

from collections.abc import Iterator
from typing import Literal

import dagster as dg
from pydantic import Field, field_validator, model_validator

from babylon_pipeline.assets.reporting import WindowResult, materialize_windows
from babylon_pipeline.config_checks import share
from babylon_pipeline.kinds import OBJECT_STORE, TRAJECTORY_STORE
from babylon_pipeline.partitions import window_partitions
from babylon_pipeline.resources.judge import JudgeResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.rewards import RewardWeights
from babylon_pipeline.rewards.outcomes import OutcomeSummary
from babylon_pipeline.ruler import DEFAULT_JUDGE_WEIGHT
from babylon_pipeline.store.report import WindowReport
from babylon_pipeline.windowing.groups import export_window_groups
from babylon_pipeline.windowing.judging import WindowJudging, judge_window
from babylon_pipeline.windowing.rewards import score_window
from babylon_pipeline.windowing.trajectories import export_window_trajectories

WINDOW_ASSET = dict(
    partitions_def=window_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="windows",
)


# --- window_trajectories -------------------------------------------------------------------------


class WindowQualityConfig(dg.Config):
    min_valid_fraction: float = Field(default=0.95, description="the `data_quality` check fails (and blocks "
                                                                "downstream) below this share of usable rows, "
                                                                "in [0, 1]")

    _share = field_validator("min_valid_fraction")(share)


def _trajectory_metadata(report: WindowReport) -> dict[str, object]:
    reasons = "\n".join(f"| {reason} | {count} |" for reason, count in sorted(report.quarantined_by_reason.items()))
    metadata: dict[str, object] = {
        "trajectories": report.trajectories,
        "valid": report.valid,
        "quarantined": report.quarantined,
        "agents": len(report.agents),
        "scenarios": len(report.scenarios),
        "steps": report.steps,
        "llm_exchange_fraction": report.llm_exchange_fraction,
        "data_quality": report.data_quality,
        "window_ids_derived": report.derived_window_ids,
        "quarantine_by_reason": dg.MetadataValue.md("| reason | rows |\n|---|---|\n" + (reasons or "| (none) | 0 |")),
    }
    if report.valid:  # the app's own per-trajectory reward sum (`totalReward`), not the outcome reward
        metadata |= {"app_total_reward_min": report.reward_min, "app_total_reward_mean": report.reward_mean,
                     "app_total_reward_max": report.reward_max}
    return metadata


def _quality_checks(report: WindowReport, threshold: float) -> list[dg.AssetCheckResult]:
    measured = {"data_quality": report.data_quality, "threshold": threshold, "trajectories": report.trajectories}
    if report.trajectories == 0:
        quality = dg.AssetCheckResult(check_name="data_quality", passed=False, severity=dg.AssetCheckSeverity.WARN,
                                      metadata=measured, description="no trajectories in this hour")
    else:
        quality = dg.AssetCheckResult(check_name="data_quality", passed=report.data_quality >= threshold,
                                      severity=dg.AssetCheckSeverity.ERROR, metadata=measured)
    duplicates = report.quarantined_by_reason["duplicate"]
    duplicate_check = dg.AssetCheckResult(
        check_name="no_duplicates", passed=not duplicates, severity=dg.AssetCheckSeverity.WARN,
        metadata={"duplicates_quarantined": duplicates},
    )
    return [quality, duplicate_check]


@dg.asset(
    **WINDOW_ASSET,
    check_specs=[
        dg.AssetCheckSpec("data_quality", asset="window_trajectories", blocking=True, partitions_def=window_partitions,
                          description="share of usable rows ≥ the threshold; an empty hour warns"),
        dg.AssetCheckSpec("no_duplicates", asset="window_trajectories", partitions_def=window_partitions,
                          description="no trajectory recorded twice (duplicates are quarantined)"),
    ],
    kinds={TRAJECTORY_STORE, OBJECT_STORE},  # the profile's stores, named in build_definitions
)
def window_trajectories(
    context: dg.AssetExecutionContext,
    config: WindowQualityConfig,
    trajectory_store: TrajectoryStore,
    object_store: ObjectStoreResource,
) -> Iterator[dg.MaterializeResult]:
    """The window's trajectories from the Babylon tables, parsed; unusable rows quarantined with reasons."""
    engine, store = trajectory_store.engine(), object_store.open()

    def process(window_id: str) -> WindowResult:
        report = export_window_trajectories(engine, store, window_id)
        context.log.info(f"{window_id}: {report.valid} trajectories, {report.quarantined} quarantined")
        return WindowResult(_trajectory_metadata(report), _quality_checks(report, config.min_valid_fraction))

    yield from materialize_windows(context, process)


# --- outcome_rewards -----------------------------------------------------------------------------


class OutcomeRewardConfig(dg.Config):
    """Weights of the outcome reward's components (see `babylon_pipeline.rewards.outcomes`); weights are
    relative (divided by their sum), finite and non-negative, at least one positive; scales positive."""

    prediction: float = Field(default=RewardWeights.prediction, description="weight of the prediction term "
                                                                            "(stake-weighted right/wrong sides)")
    perp: float = Field(default=RewardWeights.perp, description="weight of the perpetuals term (direction × move)")
    pnl: float = Field(default=RewardWeights.pnl, description="weight of the window P&L term")
    failure: float = Field(default=RewardWeights.failure, description="weight of the failed-action penalty")
    pnl_scale: float = Field(default=RewardWeights.pnl_scale,
                             description="game dollars of window P&L that give pnl = tanh(1) ≈ 0.76 (> 0)")
    perp_move_scale: float = Field(default=RewardWeights.perp_move_scale,
                                   description="stake-weighted move in the agent's favour that gives tanh(1) (> 0)")
    failure_step: float = Field(default=RewardWeights.failure_step,
                                description="penalty per failed action (> 0); 1 / failure_step of them saturate it")

    @model_validator(mode="after")
    def _valid(self) -> "OutcomeRewardConfig":
        RewardWeights(**self.model_dump())  # its own rules, before the window is read
        return self


@dg.asset(**WINDOW_ASSET, deps=[window_trajectories], kinds={TRAJECTORY_STORE, OBJECT_STORE})
def outcome_rewards(
    context: dg.AssetExecutionContext,
    config: OutcomeRewardConfig,
    trajectory_store: TrajectoryStore,
    object_store: ObjectStoreResource,
) -> Iterator[dg.MaterializeResult]:
    """Per trajectory, a reward from what the markets did; trades on unresolved markets stay pending."""
    weights = RewardWeights(**config.model_dump())
    engine, store = trajectory_store.engine(), object_store.open()

    def process(window_id: str) -> WindowResult:
        summary = score_window(engine, store, window_id, weights).summary
        return WindowResult(_outcome_metadata(summary))

    yield from materialize_windows(context, process)


def _outcome_metadata(summary: OutcomeSummary) -> dict[str, object]:
    """The outcome reward (in [-1, 1]) named as such, apart from the app's `app_total_reward_*`."""
    renamed = {"mean_reward": "outcome_reward_mean", "min_reward": "outcome_reward_min",
               "max_reward": "outcome_reward_max"}
    return {renamed.get(name, name): value for name, value in summary.as_metadata().items()}


# --- art_groups ----------------------------------------------------------------------------------


@dg.asset(**WINDOW_ASSET, deps=[window_trajectories, outcome_rewards], kinds={"openpipe-art"})
def art_groups(context: dg.AssetExecutionContext, object_store: ObjectStoreResource) -> Iterator[dg.MaterializeResult]:
    """One ART `TrajectoryGroup` per scenario, rewarded with the outcome rewards."""
    store = object_store.open()
    yield from materialize_windows(context, lambda window: WindowResult(export_window_groups(store, window).as_metadata()))


# --- ruler_scores --------------------------------------------------------------------------------


class RulerConfig(dg.Config):
    rubric: Literal["general", "babylon_trading"] = Field(
        default="general", description="`general` (RULER's) or `babylon_trading` (P&L, timing, risk, prediction "
                                       "accuracy, post quality)")
    judge_weight: float = Field(default=DEFAULT_JUDGE_WEIGHT,
                                description="training reward = judge_weight · judge score + (1 − judge_weight) · "
                                            "outcome reward scaled in the group; in [0, 1]")
    min_scored_fraction: float = Field(default=0.9, description="the `scored_fraction` check fails below this share "
                                                                "(in [0, 1]): an alert that the judge is failing "
                                                                "(unscored trajectories never train, scored ones do)")
    rejudge: bool = Field(default=False, description="re-score: ask the judge about every group again instead of "
                                                     "reusing the judgments cached under judge-cache/ (which a "
                                                     "window materialized again otherwise reuses: same judge, "
                                                     "rubric and content, no call)")

    _shares = field_validator("judge_weight", "min_scored_fraction")(share)


def _judging_metadata(judging: WindowJudging) -> dict[str, object]:
    scores = judging.scores
    metadata: dict[str, object] = {
        # `judge_` once: the summary's own `judge_failed` stays `judge_failed`
        **{k if k.startswith("judge_") else f"judge_{k}": v
           for k, v in judging.summary.as_dict().items() if v is not None},
        "trajectories": judging.trajectories,
        "scored_trajectories": judging.scored_trajectories,
        "scored_fraction": judging.scored_fraction,
        "trainable_groups": judging.trainable_groups,
    }
    if scores:
        metadata |= {"score_min": min(scores), "score_mean": sum(scores) / len(scores), "score_max": max(scores)}
    return metadata


def _judging_checks(judging: WindowJudging, threshold: float) -> list[dg.AssetCheckResult]:
    out_of_range = sum(1 for s in judging.scores if not 0.0 <= s <= 1.0)
    return [
        dg.AssetCheckResult(
            check_name="scored_fraction", passed=judging.scored_fraction >= threshold,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"scored_fraction": judging.scored_fraction, "threshold": threshold},
        ),
        dg.AssetCheckResult(check_name="scores_in_range", passed=out_of_range == 0, metadata={"out_of_range": out_of_range}),
    ]


@dg.asset(
    **WINDOW_ASSET,
    deps=[art_groups, outcome_rewards],
    check_specs=[
        dg.AssetCheckSpec("scored_fraction", asset="ruler_scores", partitions_def=window_partitions,
                          description="share of trajectories the judge scored ≥ the threshold (an alert; "
                                      "unscored trajectories are never training candidates)"),
        dg.AssetCheckSpec("scores_in_range", asset="ruler_scores", partitions_def=window_partitions,
                          description="every judge score in [0, 1]"),
    ],
    kinds={TRAJECTORY_STORE, OBJECT_STORE},
)
def ruler_scores(
    context: dg.AssetExecutionContext,
    config: RulerConfig,
    trajectory_store: TrajectoryStore,
    object_store: ObjectStoreResource,
    judge: JudgeResource,
) -> Iterator[dg.MaterializeResult]:
    """RULER relative scores per group, written to `reward_judgments` and `trajectories.aiJudge*`."""
    engine, store, the_judge = trajectory_store.engine(), object_store.open(), judge.judge()
    context.log.info(f"judging with the {judge.describe()}")

    def process(window_id: str) -> WindowResult:
        judging = judge_window(engine, store, window_id, the_judge, config.rubric, config.judge_weight,
                               rejudge=config.rejudge)
        context.log.info(
            f"{window_id}: {judging.summary.scored}/{judging.summary.groups} groups scored, "
            f"{judging.summary.judge_failed} judge_failed, {judging.summary.calls} judge calls"
        )
        return WindowResult({"judge": judge.describe(), **_judging_metadata(judging)},
                            _judging_checks(judging, config.min_scored_fraction))

    yield from materialize_windows(context, process)
