"""Every registered version in one table: what `babylon models` prints and the `model_versions` asset shows.

Per version: its stage and share of the agents (the deployment), when and from which batch it was trained
and its training reward (`trained_models`), its benchmark verdict with the interval of the reward
difference and the champion it was measured against (`evalMetrics`), and, if a rollback took it out of
service and nothing brought it back since, that rollback's reason (`babylon_deployment_history`).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import sqlalchemy as sa

from babylon_pipeline.serving.state import Deployment, deployment_history, eval_summary, read_deployment
from babylon_pipeline.store import tables

M = tables.trained_models
COLUMNS = ["version", "status", "traffic_share", "verdict", "diff_mean", "diff_low", "diff_high", "champion",
           "benchmark_reward", "avg_reward", "trained_at", "training_batch", "rolled_back_for"]
STATUSES = ("candidate", "canary", "deployed", "archived")  # what the pipeline writes, in the order of a life
DISPLAY_COLUMNS = ["version", "status", "traffic_share", "verdict", "interval", "champion", "benchmark_reward",
                   "avg_reward", "trained_at", "training_batch", "rolled_back_for"]


def traffic_share(version: str | None, deployment: Deployment) -> float:
    """The share of agents `version` serves (None: the base)."""
    if deployment.canary is not None and version == deployment.canary:
        return deployment.canary_fraction
    return 1.0 - deployment.canary_fraction if version == deployment.in_service else 0.0


def rollback_reasons(history: pd.DataFrame) -> dict[str, str]:
    """Per version, the reason of the rollback that took it out of service, unless a later change made it
    serve again (a canary start, a promotion, a `rollback --to` it). `history` is oldest first."""
    reasons: dict[str, str] = {}
    for row in history.itertuples(index=False):
        if row.version is not None and row.action in ("canary", "promote", "rollback"):
            reasons.pop(row.version, None)
        if row.action == "rollback" and row.from_version is not None:
            reasons[row.from_version] = row.reason
    return reasons


def models_table(engine: sa.Engine) -> pd.DataFrame:
    """Newest first; a `base` row leads while the base still serves some agents."""
    deployment = read_deployment(engine)
    reasons = rollback_reasons(deployment_history(engine))
    with engine.connect() as conn:
        rows = conn.execute(sa.select(M.c.version, M.c.status, M.c.evalMetrics, M.c.benchmarkScore, M.c.avgReward,
                                      M.c.createdAt, M.c.trainingBatch)
                            .order_by(M.c.createdAt.desc(), M.c.id.desc())).all()
    records = []
    for r in rows:
        summary = eval_summary(r.evalMetrics) or {}
        records.append((r.version, r.status, traffic_share(r.version, deployment), summary.get("verdict"),
                        *(_number(summary.get(k)) for k in ("diff_mean", "diff_low", "diff_high")),
                        summary.get("champion"), r.benchmarkScore, r.avgReward, r.createdAt, r.trainingBatch,
                        reasons.get(r.version)))
    if deployment.in_service is None:
        records.insert(0, ("base", "base", traffic_share(None, deployment), *[None] * (len(COLUMNS) - 3)))
    return pd.DataFrame(records, columns=COLUMNS)


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many versions are in each stage the pipeline writes (every stage named, 0 included)."""
    counts = table["status"].value_counts()
    return {status: int(counts.get(status, 0)) for status in STATUSES}


def display_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table as people read it: shares in %, rewards to 4 places, the interval as `mean [low, high]`."""
    if table.empty:
        return pd.DataFrame(columns=DISPLAY_COLUMNS)
    return table.assign(
        traffic_share=table["traffic_share"].map("{:.0%}".format),
        interval=[_interval(m, lo, hi) for m, lo, hi in zip(table["diff_mean"], table["diff_low"], table["diff_high"],
                                                             strict=True)],
        benchmark_reward=table["benchmark_reward"].map(_figure),
        avg_reward=table["avg_reward"].map(_figure),
        trained_at=table["trained_at"].map(lambda t: "-" if pd.isna(t) else t.strftime("%Y-%m-%d %H:%M")),
    )[DISPLAY_COLUMNS].astype(object).where(lambda shown: shown.notna(), "-")


def _interval(mean: Any, low: Any, high: Any) -> str:
    if pd.isna(mean):
        return "-"
    bounds = "" if pd.isna(low) or pd.isna(high) else f" [{low:+.4f}, {high:+.4f}]"  # an older evaluation: none
    return f"{mean:+.4f}{bounds}"


def _figure(value: Any) -> str:
    return "-" if pd.isna(value) else f"{value:.4f}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) else None
