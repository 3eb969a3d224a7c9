"""Which trajectories and groups can be trained on, the readiness figures and the candidate fingerprint."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.registry import fail_batch, open_batch, start_batch
from babylon_pipeline.store.training_data import (
    ActiveBatch,
    CandidateGroup,
    candidates_by_window,
    readiness_snapshot,
    select_training_candidates,
)
from tests.training_rows import insert_rows, scored_group, trajectory_row

W1, W2, W3 = "2025-11-15T10:00", "2025-11-15T11:00", "2025-11-15T12:00"
NOW = datetime(2025, 11, 15, 14, 0)


def _snapshot(db):
    return readiness_snapshot(db, NOW)


def test_only_scored_untrained_training_rows_with_a_window_count(db) -> None:
    insert_rows(db, [
        *scored_group(W1, "s1", [0.1, 0.9, 0.5]),
        trajectory_row("used", W1, "s1", 0.4, used=True),
        trajectory_row("not-training-data", W1, "s1", 0.4, training_data=False),
        trajectory_row("unjudged", W1, "s1", None),
        trajectory_row("no-window", None, "s1", 0.4),
        {**trajectory_row("malformed-window", W1, "s1", 0.4), "windowId": "2025-11-15 10:00"},
        trajectory_row("infinite", W1, "s1", float("inf")),
        trajectory_row("nan", W1, "s1", float("nan")),  # Postgres keeps NaN; SQLite stores NULL
    ])
    snapshot = _snapshot(db)
    assert snapshot.scored_trajectories == 3
    assert snapshot.trainable_groups == 1
    assert snapshot.windows == (W1,)


def test_trainable_groups_need_two_members_and_a_reward_spread(db) -> None:
    insert_rows(db, [
        *scored_group(W1, "spread", [0.2, 0.8]),
        *scored_group(W1, "flat", [0.5, 0.5, 0.5]),
        *scored_group(W1, "alone", [0.7]),
        *scored_group(W2, None, [0.1, 0.3], prefix="no-scenario"),  # grouped by the window
        *scored_group(W2, "spread", [0.4, 0.6]),  # the same scenario in another window: another group
        *scored_group(W3, "s", [0.9, 0.1], prefix="w3-a"),
        *scored_group(W3, "s", [0.5], prefix="w3-b"),  # same group as w3-a
    ])
    snapshot = _snapshot(db)
    assert snapshot.scored_trajectories == 13
    assert snapshot.trainable_groups == 4
    assert snapshot.windows == (W1, W2, W3)


def test_an_empty_store_is_not_ready_and_has_a_fingerprint(db) -> None:
    snapshot = _snapshot(db)
    assert (snapshot.scored_trajectories, snapshot.trainable_groups, snapshot.windows) == (0, 0, ())
    assert snapshot.since_last_training is None and snapshot.active_batch is None
    assert len(snapshot.fingerprint) == 64


def _update(db, trajectory_id: str, **values) -> None:
    with db.begin() as conn:
        conn.execute(sa.update(tables.trajectories).where(tables.trajectories.c.trajectoryId == trajectory_id)
                     .values(**values))


def test_the_fingerprint_follows_every_change_of_the_candidate_set(db) -> None:
    insert_rows(db, [*scored_group(W1, "s1", [0.1, 0.9]), *scored_group(W2, "s1", [0.3, 0.6])])
    seen = [_snapshot(db).fingerprint]
    assert _snapshot(db).fingerprint == seen[0]  # unchanged data, same fingerprint

    insert_rows(db, [trajectory_row("trained-elsewhere", W1, "s1", 0.5, used=True)])
    assert _snapshot(db).fingerprint == seen[0]  # not a candidate: no change

    changes = [
        lambda: insert_rows(db, [trajectory_row("new", W2, "s2", 0.5)]),
        lambda: _update(db, f"{W1}-s1-0", aiJudgeReward=0.2),  # re-scored: same count, same ids
        lambda: _update(db, f"{W1}-s1-0", judgedAt=NOW),  # re-judged to the same score
        lambda: _update(db, f"{W1}-s1-1", usedInTraining=True),
        lambda: _update(db, f"{W2}-s1-0", isTrainingData=False),
    ]
    for change in changes:
        change()
        fingerprint = _snapshot(db).fingerprint
        assert fingerprint not in seen
        seen.append(fingerprint)


def test_last_training_start_and_the_active_batch(db) -> None:
    insert_rows(db, scored_group(W1, "s1", [0.1, 0.9]))
    ids = [f"{W1}-s1-0", f"{W1}-s1-1"]
    rewards = {ids[0]: 0.0, ids[1]: 1.0}
    open_batch(db, "b-old", "base", "v1.0.0", [W1], ids, rewards, now=NOW - timedelta(hours=5))
    start_batch(db, "b-old", now=NOW - timedelta(hours=5))
    fail_batch(db, "b-old", "out of memory", now=NOW - timedelta(hours=4))
    open_batch(db, "b-new", "base", "v1.0.0", [W1], ids, rewards, now=NOW - timedelta(minutes=30))
    snapshot = _snapshot(db)
    assert snapshot.since_last_training == timedelta(hours=5)
    assert snapshot.active_batch == ActiveBatch("b-new", "pending", timedelta(minutes=30))

    start_batch(db, "b-new", now=NOW - timedelta(minutes=20))
    snapshot = _snapshot(db)
    assert snapshot.since_last_training == timedelta(minutes=20)
    assert snapshot.active_batch == ActiveBatch("b-new", "training", timedelta(minutes=20))


def test_candidates_put_groups_with_spread_first_newest_window_first(db) -> None:
    insert_rows(db, [
        *scored_group(W1, "a", [0.2, 0.8]),
        *scored_group(W1, "flat", [0.5, 0.5]),
        *scored_group(W2, "b", [0.1, 0.3]),
        *scored_group(W2, "a", [0.6, 0.4]),
        *scored_group(W3, "alone", [0.9]),
    ])
    groups = select_training_candidates(db, max_groups=10, max_group_size=8)
    assert [(g.window_id, g.group_key) for g in groups] == [(W2, "a"), (W2, "b"), (W1, "a"), (W1, "flat")]
    assert groups[0] == CandidateGroup(W2, "a", (f"{W2}-a-0", f"{W2}-a-1"))
    assert select_training_candidates(db, max_groups=2, max_group_size=8) == groups[:2]
    assert candidates_by_window(groups[:3]) == {
        W2: {f"{W2}-a-0", f"{W2}-a-1", f"{W2}-b-0", f"{W2}-b-1"}, W1: {f"{W1}-a-0", f"{W1}-a-1"},
    }


def test_a_large_group_keeps_members_spread_over_its_rewards(db) -> None:
    rewards = [i / 10 for i in range(10)]  # member i has reward i/10
    insert_rows(db, scored_group(W1, "big", rewards, prefix="m"))
    [group] = select_training_candidates(db, max_groups=1, max_group_size=4)
    assert group.trajectory_ids == ("m-0", "m-3", "m-6", "m-9")  # the worst and the best always kept


@pytest.mark.parametrize(("max_groups", "max_group_size"), [(0, 4), (4, 1)])
def test_caps_must_leave_something_to_train(db, max_groups, max_group_size) -> None:
    with pytest.raises(ValueError, match="max_groups"):
        select_training_candidates(db, max_groups, max_group_size)


NON_CANONICAL = [
    "2025-02-30T10:00",  # the right shape, no such day
    "\u0662\u0660\u0662\u0665-\u0661\u0661-\u0661\u0665T\u0661\u0660:00",  # Arabic-Indic: `\d`, int() take them
    "\uff12\uff10\uff12\uff15-11-15T10:00",  # fullwidth digits
    "2025-13-15T10:00",
    "2025-11-15T24:00",
]


def test_a_non_canonical_window_id_is_never_a_candidate(db) -> None:
    rows = [*scored_group(W1, "s1", [0.1, 0.9])]
    for n, window in enumerate(NON_CANONICAL):
        rows += [{**row, "windowId": window} for row in scored_group(W2, f"bad{n}", [0.2, 0.8], prefix=f"bad{n}")]
    insert_rows(db, rows)
    chosen = select_training_candidates(db, max_groups=64, max_group_size=8)
    assert [group.window_id for group in chosen] == [W1]
    # the impossible date passes the SQL filter, and only it: the shape and ASCII digits are checked there
    assert _snapshot(db).windows == ("2025-02-30T10:00", W1)
