"""What can be trained on: scored trajectories not yet used, in their comparison groups.

A candidate is a trajectory marked as training data, not yet used in training, with a finite judge
reward (`aiJudgeReward`, written by the RULER stage) and a canonical window id (ASCII digits, a real
hour). Groups are keyed like
the ART export's: (window, `COALESCE(scenarioId, windowId)`). A group can teach GRPO something only
with two members or more whose rewards differ.

The readiness figures are aggregates over the candidates, one row per window, from the indexes the
app already has (no index of ours on its tables: Prisma would see drift). On Postgres the plan reads
the candidates through `(isTrainingData, usedInTraining)` while they are a small share of the table,
and in `windowId` index order when most rows are candidates (`benchmarks/bench_readiness.py`). Rows
the app left with a NULL `windowId` (the logger plugin's) are not candidates: the export derives
their window from `startTime`, which this query does not.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.windows import is_window_id, to_utc_naive

T = tables.trajectories
B = tables.training_batches
Item = TypeVar("Item")

ACTIVE_BATCH_STATUSES = ("pending", "training")
WINDOW_ID_PATTERN = "____-__-__T__:00"  # the shape of a window id; NULL and malformed ids never match
# ...in ASCII digits with months, days and hours in range (LIKE's `_` takes any character, `\d` any script's
# digit); the few impossible dates left (`2025-02-30`) are dropped by `is_window_id` before a batch is built
WINDOW_ID_REGEX = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):00"
REWARD_FINGERPRINT_SCALE = 1_000_000  # rewards enter the fingerprint as integer millionths: exact in any order


@dataclass(frozen=True)
class ActiveBatch:
    """The newest batch still `pending` or `training`, and for how long."""

    batch_id: str
    status: str
    age: timedelta


@dataclass(frozen=True)
class TrainingReadiness:
    scored_trajectories: int
    trainable_groups: int
    windows: tuple[str, ...]
    since_last_training: timedelta | None
    """Since the newest `training_batches.startedAt`; None when no training ever started."""
    active_batch: ActiveBatch | None
    fingerprint: str
    """Changes whenever the candidate set does (a trajectory added, used, re-scored or re-flagged)."""


@dataclass(frozen=True)
class CandidateGroup:
    window_id: str
    group_key: str
    trajectory_ids: tuple[str, ...]


def candidate_filter() -> sa.ColumnElement[bool]:
    finite = T.c.aiJudgeReward.between(-sys.float_info.max, sys.float_info.max)  # not NULL, NaN or ±inf
    return sa.and_(T.c.isTrainingData == sa.true(), T.c.usedInTraining == sa.false(), finite,
                   T.c.windowId.like(WINDOW_ID_PATTERN), T.c.windowId.regexp_match(WINDOW_ID_REGEX))


def _group_key() -> sa.ColumnElement[str]:
    return sa.func.coalesce(T.c.scenarioId, T.c.windowId)


def _groups_query() -> sa.Subquery:
    """One row per candidate group, with what both the readiness figures and the fingerprint need."""
    reward = T.c.aiJudgeReward
    return (
        sa.select(
            T.c.windowId.label("window_id"),
            _group_key().label("group_key"),
            sa.func.count().label("members"),
            (sa.func.max(reward) > sa.func.min(reward)).label("has_spread"),
            sa.func.min(T.c.trajectoryId).label("first_id"),
            sa.func.max(T.c.trajectoryId).label("last_id"),
            sa.func.max(T.c.judgedAt).label("last_judged"),
            sa.func.sum(sa.cast(reward * REWARD_FINGERPRINT_SCALE, sa.BigInteger)).label("reward_sum"),
        )
        .where(candidate_filter())
        .group_by(T.c.windowId, _group_key())
        .subquery("candidate_groups")
    )


def candidate_windows_query() -> sa.Select:
    """One row per window with candidates: its counts, and the figures the fingerprint is made of."""
    groups = _groups_query()
    trainable = sa.and_(groups.c.members >= 2, groups.c.has_spread)
    return (
        sa.select(
            groups.c.window_id,
            sa.func.sum(groups.c.members).label("trajectories"),
            sa.func.sum(sa.case((trainable, 1), else_=0)).label("trainable_groups"),
            sa.func.min(groups.c.first_id).label("first_id"),
            sa.func.max(groups.c.last_id).label("last_id"),
            sa.func.max(groups.c.last_judged).label("last_judged"),
            sa.func.sum(groups.c.reward_sum).label("reward_sum"),
        )
        .group_by(groups.c.window_id)
        .order_by(groups.c.window_id)
    )


def _fingerprint(rows: Iterable[sa.Row]) -> str:
    parts = [[str(value) for value in row] for row in rows]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def readiness_snapshot(engine: sa.Engine, now: datetime) -> TrainingReadiness:
    now = to_utc_naive(now)
    batch_since = sa.func.coalesce(B.c.startedAt, B.c.createdAt)
    active = (
        sa.select(B.c.batchId, B.c.status, batch_since.label("since"))
        .where(B.c.status.in_(ACTIVE_BATCH_STATUSES))
        .order_by(batch_since.desc(), B.c.batchId.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        windows = conn.execute(candidate_windows_query()).all()
        last_started = conn.scalar(sa.select(sa.func.max(B.c.startedAt)))
        newest_active = conn.execute(active).first()
    return TrainingReadiness(
        scored_trajectories=sum(int(w.trajectories) for w in windows),
        trainable_groups=sum(int(w.trainable_groups) for w in windows),
        windows=tuple(w.window_id for w in windows),
        since_last_training=None if last_started is None else now - last_started,
        active_batch=None if newest_active is None else ActiveBatch(
            newest_active.batchId, newest_active.status, now - newest_active.since
        ),
        fingerprint=_fingerprint(windows),
    )


def select_training_candidates(engine: sa.Engine, max_groups: int, max_group_size: int) -> list[CandidateGroup]:
    """The groups a training run takes: those with a reward spread first, newest windows first, then by key.

    Groups of one are left out (nothing to compare). A group larger than `max_group_size` keeps
    members evenly spaced over its judge rewards, the best and the worst always among them; the
    members left out stay candidates for a later run.
    """
    if max_groups < 1 or max_group_size < 2:
        raise ValueError("want max_groups >= 1 and max_group_size >= 2")
    groups = _groups_query()
    chosen_query = (
        sa.select(groups.c.window_id, groups.c.group_key)
        .where(groups.c.members >= 2)
        .order_by(groups.c.has_spread.desc(), groups.c.window_id.desc(), groups.c.group_key)
        .limit(max_groups)
    )
    with engine.connect() as conn:
        chosen = [(row.window_id, row.group_key) for row in conn.execute(chosen_query)
                  if is_window_id(row.window_id)]
        windows = sorted({window for window, _ in chosen})
        members_query = (
            sa.select(T.c.windowId, _group_key().label("group_key"), T.c.trajectoryId, T.c.aiJudgeReward)
            .where(candidate_filter(), T.c.windowId.in_(windows))
            .order_by(T.c.aiJudgeReward, T.c.trajectoryId)
        )
        members: dict[tuple[str, str], list[tuple[float, str]]] = defaultdict(list)
        for row in conn.execute(members_query) if windows else ():
            members[(row.windowId, row.group_key)].append((row.aiJudgeReward, row.trajectoryId))
    return [
        CandidateGroup(window, key, tuple(sorted(tid for _, tid in evenly_spaced(members[(window, key)], max_group_size))))
        for window, key in chosen
        if members[(window, key)]  # trained on or re-flagged between the two queries
    ]


def candidates_by_window(groups: Iterable[CandidateGroup]) -> dict[str, set[str]]:
    """The shape `windowing.training_batch.assemble_batch` takes: window id → its candidates' ids."""
    by_window: dict[str, set[str]] = defaultdict(set)
    for group in groups:
        by_window[group.window_id].update(group.trajectory_ids)
    return dict(by_window)


def evenly_spaced(ranked: Sequence[Item], size: int) -> list[Item]:
    """At most `size` of the ranked items, evenly spaced over the ranking, the first and the last always kept."""
    if len(ranked) <= size:
        return list(ranked)
    return [ranked[i] for i in sorted({round(i * (len(ranked) - 1) / (size - 1)) for i in range(size)})]
