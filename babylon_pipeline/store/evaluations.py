"""A version's evaluation in `trained_models`: `benchmarkScore`, `accuracy` and `evalMetrics`.

`evalMetrics` carries the verdict (`better` / `no_difference` / `worse`) and `guardrails_passed`:
deployment reads those from the row, so it needs nothing of the evaluation code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.windows import to_utc_naive

M = tables.trained_models


class UnknownVersion(LookupError):
    """No `trained_models` row has this version."""


@dataclass(frozen=True)
class VersionRow:
    version: str
    model_id: str
    status: str
    base_model: str
    eval_metrics: Mapping[str, Any] | None


def version_row(engine: sa.Engine, version: str) -> VersionRow:
    query = (sa.select(M.c.version, M.c.modelId, M.c.status, M.c.baseModel, M.c.evalMetrics)
             .where(M.c.version == version))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        raise UnknownVersion(f"no trained model has version {version!r}")
    return VersionRow(row.version, row.modelId, row.status, row.baseModel, row.evalMetrics)


def record_evaluation(engine: sa.Engine, version: str, benchmark_score: float, accuracy: float,
                      eval_metrics: Mapping[str, Any], *, now: datetime | None = None) -> None:
    """Replace the version's evaluation figures (a later evaluation of it supersedes an earlier one)."""
    if not (math.isfinite(benchmark_score) and math.isfinite(accuracy)):
        raise ValueError(f"evaluation figures must be finite: benchmarkScore {benchmark_score}, accuracy {accuracy}")
    moment = to_utc_naive(now or datetime.now(UTC))
    with engine.begin() as conn:
        updated = conn.execute(sa.update(M).where(M.c.version == version).values(
            benchmarkScore=benchmark_score, accuracy=accuracy, evalMetrics=dict(eval_metrics), updatedAt=moment))
    if updated.rowcount != 1:
        raise UnknownVersion(f"no trained model has version {version!r}")
