"""A training batch assembled from scored windows: rewards, spread, caps and behaviour logprobs."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from babylon_pipeline.art import from_jsonl
from babylon_pipeline.art.turns import is_choice
from babylon_pipeline.storage import LocalObjectStore
from babylon_pipeline.store import tables
from babylon_pipeline.windowing.files import RULER_SCORES, read_window_json, write_window_json
from babylon_pipeline.windowing.training_batch import BatchLimits, assemble_batch
from tests.scored_windows import score_windows
from tests.window_data import record_window

W1, W2 = "2025-11-15T10:00", "2025-11-15T11:00"


@pytest.fixture
def scored(db, tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    ids = {w: set(record_window(db, w, scenarios=2, agents=4)) for w in (W1, W2)}
    score_windows(db, store, [W1, W2])
    return db, store, ids


def _own(model):
    return model == "tiny"


def test_groups_carry_training_rewards_of_the_candidates(scored) -> None:
    _, store, ids = scored
    batch = assemble_batch(store, ids, BatchLimits(), _own)
    assert len(batch.groups) == 4 and batch.windows == [W1, W2]
    expected = {tid: entry["training_reward"]
                for w in (W1, W2) for g in read_window_json(store, w, RULER_SCORES)["groups"].values()
                for tid, entry in g["trajectories"].items()}
    assert batch.rewards == expected and len(expected) == 16
    assert from_jsonl(batch.content) == batch.groups
    assert batch.as_metadata()["trajectories"] == 16 and batch.missing_trajectories == 0


def test_only_candidates_are_taken_and_missing_ones_counted(scored) -> None:
    _, store, ids = scored
    some = sorted(ids[W1])[:5]
    batch = assemble_batch(store, {W1: {*some, "not-in-any-group"}}, BatchLimits(), _own)
    assert set(batch.rewards) <= set(some)
    assert batch.missing_trajectories == 1
    # a candidate left alone in its group has nothing to be compared with
    assert batch.dropped_no_spread + len(batch.groups) == 2


def test_a_group_without_reward_spread_is_dropped_and_counted(scored) -> None:
    _, store, ids = scored
    document = read_window_json(store, W1, RULER_SCORES)
    flat = next(iter(document["groups"]))
    for entry in document["groups"][flat]["trajectories"].values():
        entry["training_reward"] = 0.25
    write_window_json(store, W1, RULER_SCORES, document, writer="test")
    batch = assemble_batch(store, {W1: ids[W1]}, BatchLimits(), _own)
    assert batch.dropped_no_spread == 1 and len(batch.groups) == 1


def test_caps_keep_the_reward_range_and_count_what_is_left_out(scored) -> None:
    _, store, ids = scored
    full = assemble_batch(store, ids, BatchLimits(), _own)
    capped = assemble_batch(store, ids, BatchLimits(max_groups=3, max_group_size=2), _own)
    assert len(capped.groups) == 3 and capped.dropped_over_cap == 1
    assert capped.trimmed_trajectories == 3 * 2
    assert capped.windows == [W1, W2] and capped.groups[0]["metadata"]["window_id"] == W2  # newest first
    for group in capped.groups:
        original = next(g for g in full.groups if g["metadata"] == group["metadata"])
        rewards = [t["reward"] for t in original["trajectories"]]
        assert sorted(t["reward"] for t in group["trajectories"]) == [min(rewards), max(rewards)]
    with pytest.raises(ValueError, match="max_group_size"):
        BatchLimits(max_group_size=1)


def test_behaviour_logprobs_survive_only_from_our_own_model_at_temperature_one(db, tmp_path) -> None:
    store = LocalObjectStore(tmp_path / "store")
    ids = set(record_window(db, W1, scenarios=1, agents=4))
    with db.begin() as conn:  # give every call recorded token logprobs, as LocalModelPolicy does
        for row in conn.execute(sa.select(tables.trajectories.c.id, tables.trajectories.c.stepsJson)).all():
            steps = json.loads(row.stepsJson)
            for step in steps:
                for call in step["llmCalls"]:
                    call["logprobs"] = [{"token": call["response"], "logprob": -0.5, "tokenId": 7}]
            conn.execute(sa.update(tables.trajectories).where(tables.trajectories.c.id == row.id)
                         .values(stepsJson=json.dumps(steps)))
    score_windows(db, store, [W1])

    def choices(batch):
        return [turn for g in batch.groups for t in g["trajectories"] for turn in t["messages_and_choices"]
                if is_choice(turn)]

    ours = assemble_batch(store, {W1: ids}, BatchLimits(), _own)
    assert ours.logprobs_kept == 12 and all(c["logprobs"]["content"][0]["token"] == "token_id:7" for c in choices(ours))
    theirs = assemble_batch(store, {W1: ids}, BatchLimits(), lambda model: False)
    assert theirs.logprobs_removed == 12 and all(c["logprobs"] is None for c in choices(theirs))


def test_non_canonical_or_unpublished_windows_are_skipped_and_counted_never_raised(scored) -> None:
    _, store, ids = scored
    bad = {"2025-02-30T10:00": {"x"}, "\u0662\u0660\u0662\u0665-11-15T10:00": {"y"}, "../etc": {"z"},
           "2025-11-15T12:00": {"never-scored"}}  # a window with no files at all
    batch = assemble_batch(store, {**bad, W1: ids[W1]}, BatchLimits(), _own)
    assert batch.windows == [W1] and len(batch.groups) == 2
    assert batch.skipped_windows == 4 and batch.missing_trajectories == 4


def test_a_judge_stage_dying_between_its_file_and_its_rows_leaves_nothing_that_blocks_training(db, tmp_path,
                                                                                               monkeypatch) -> None:
    """ruler_scores.json is written before the rows that make candidates; a crash in between leaves a file only."""
    from babylon_pipeline.store.training_data import candidates_by_window, select_training_candidates
    from babylon_pipeline.windowing import judging

    store = LocalObjectStore(tmp_path / "store")
    record_window(db, W1, scenarios=2, agents=4)
    score_windows(db, store, [W1])
    record_window(db, W2, scenarios=2, agents=4)

    def die(*args, **kwargs):
        raise ConnectionError("the database went away")

    monkeypatch.setattr(judging, "record_judgments", die)
    with pytest.raises(ConnectionError):
        score_windows(db, store, [W2])
    assert store.exists(f"training-data/{W2}/ruler_scores.json")
    candidates = candidates_by_window(select_training_candidates(db, 64, 16))
    assert set(candidates) == {W1}  # W2's trajectories are not candidates until its rows are written
    batch = assemble_batch(store, candidates, BatchLimits(), _own)
    assert batch.windows == [W1] and batch.skipped_windows == 0


def test_scored_fraction_is_an_alert_and_unscored_trajectories_are_never_candidates(db, tmp_path) -> None:
    """The check's description promised to block training on the window; what keeps a half-judged window's
    unscored trajectories out of training is that they have no judge reward. The check blocks nothing."""
    from babylon_pipeline.assets.windows import RulerConfig, ruler_scores
    from babylon_pipeline.ruler import HeuristicJudge
    from babylon_pipeline.store.training_data import candidates_by_window, select_training_candidates
    from babylon_pipeline.windowing.judging import judge_window

    [spec] = [s for s in ruler_scores.check_specs if s.name == "scored_fraction"]
    assert not spec.blocking and "block" not in (RulerConfig.model_fields["min_scored_fraction"].description or "x")

    class HalfJudge(HeuristicJudge):  # fails the second scenario's group
        @property
        def model(self) -> str:
            return "half-judge"

        def _judge_group(self, group, rubric):
            judgment = super()._judge_group(group, rubric)
            failed = judgment.model_copy(update={"status": "judge_failed", "scores": {}, "error": "down"})
            return judgment if group.group_id.endswith("s0") else failed

    store = LocalObjectStore(tmp_path / "store")
    ids = record_window(db, W1, scenarios=2, agents=4)
    score_windows(db, store, [W1])
    with db.begin() as conn:
        conn.execute(sa.update(tables.trajectories).values(aiJudgeReward=None, judgedAt=None))
    judging = judge_window(db, store, W1, HalfJudge(), "general", 0.5)
    assert judging.scored_fraction == 0.5
    candidates = candidates_by_window(select_training_candidates(db, 64, 16))
    assert candidates[W1] == set(ids[:4])  # the scored scenario only
