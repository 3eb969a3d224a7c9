"""`babylon models`: every registered version with its stage, its share of the agents and its evaluation."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from babylon_pipeline.serving.state import Deployment, eval_summary, read_deployment
from babylon_pipeline.store import tables

M = tables.trained_models
COLUMNS = ["version", "status", "traffic_share", "verdict", "benchmark_reward", "trained_at"]


def traffic_share(version: str | None, deployment: Deployment) -> float:
    """The share of agents `version` serves (None: the base)."""
    if deployment.canary is not None and version == deployment.canary:
        return deployment.canary_fraction
    return 1.0 - deployment.canary_fraction if version == deployment.in_service else 0.0


def models_table(engine: sa.Engine) -> pd.DataFrame:
    """Newest first; a `base` row leads while the base still serves some agents."""
    deployment = read_deployment(engine)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(M.c.version, M.c.status, M.c.evalMetrics, M.c.benchmarkScore, M.c.createdAt)
                            .order_by(M.c.createdAt.desc(), M.c.id.desc())).all()
    records = [(r.version, r.status, traffic_share(r.version, deployment),
                (eval_summary(r.evalMetrics) or {}).get("verdict"), r.benchmarkScore, r.createdAt) for r in rows]
    if deployment.in_service is None:
        records.insert(0, ("base", "base", traffic_share(None, deployment), None, None, None))
    return pd.DataFrame(records, columns=COLUMNS)
