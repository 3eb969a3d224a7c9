"""`run_training` end to end on the tiny base and a local object store: what it writes, what it learns,
where it starts from, and what it refuses to write."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import load_file

from babylon_pipeline.storage import model_key
from babylon_pipeline.training.batch import read_batch
from babylon_pipeline.training.device import pick_runtime
from babylon_pipeline.training.evaluation import measure_logprob_gap
from babylon_pipeline.training.liveness import VersionClaimed
from babylon_pipeline.training.request import GRPOSettings
from babylon_pipeline.training.samples import ChatEncoder, build_samples
from babylon_pipeline.training.trainer import NonFiniteLoss, VersionExists, load_policy, pad_token_id, run_training
from tests.training_data import (
    WINDOW,
    local_store,
    put_batch,
    read_metadata,
    request,
    shared_tiny_base,
    synthetic_groups,
    trajectory,
)

SECRET = "wandb-key-that-must-never-be-written"
TRAIN = {"learning_rate": 2e-3, "epochs": 3, "micro_batch_size": 8}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return shared_tiny_base(tmp_path_factory)


@pytest.fixture(scope="module")
def v1(base, tmp_path_factory) -> SimpleNamespace:
    """v1.0.0: a fresh LoRA trained on 4 synthetic groups (16 turns, 2 micro-batches × 3 epochs), W&B offline."""
    root = tmp_path_factory.mktemp("v1")
    store = local_store(root / "store", base)
    key = put_batch(store, "batch-1", synthetic_groups(4, seed=1))
    steps = []
    with pytest.MonkeyPatch.context() as env:
        env.setenv("WANDB_API_KEY", SECRET)
        result = run_training(
            request(root / "store", "batch-1", "v1.0.0", key, checkpoint_every=2, wandb={"mode": "offline"}, **TRAIN),
            progress=steps.append, work_dir=root / "work",
        )
    return SimpleNamespace(root=root, store=store, key=key, result=result, steps=steps)


def _policy(v1, parent: str | None, scratch: Path):
    model, tokenizer = load_policy(request(v1.root / "store", "probe", "v9.9.9", v1.key, parent=parent), v1.store,
                                   scratch, pick_runtime())
    return model.eval(), tokenizer


def _gap(model, tokenizer, groups) -> float:
    samples, _ = build_samples(groups, ChatEncoder(tokenizer), GRPOSettings())
    return measure_logprob_gap(model, samples, pad_token_id(tokenizer), pick_runtime(), 8)


def test_a_run_writes_a_complete_adapter_version_with_its_metadata_last(v1):
    result, store = v1.result, v1.store
    assert [s.step for s in v1.steps] == list(range(1, 7)) and result.steps == 6
    assert all(math.isfinite(s.loss) and s.tokens_per_s > 0 and s.kl is None for s in v1.steps)
    assert sorted(store.list_keys("models/v1.0.0")) == [
        "models/v1.0.0/adapter_config.json", "models/v1.0.0/adapter_model.safetensors", "models/v1.0.0/claim.json",
        "models/v1.0.0/metadata.json"]
    assert store.get_json("models/v1.0.0/claim.json") == {"batch_id": "batch-1"}
    meta = read_metadata(store, "v1.0.0")
    assert meta["data_hash"] == hashlib.sha256(store.get_bytes(v1.key)).hexdigest() == result.data_hash
    assert meta["windows"] == [WINDOW] and meta["parent_version"] is None and meta["base_model"] == "store:base"
    assert meta["counts"]["samples"] == 16 and meta["counts"]["trajectories"] == 16 and meta["counts"]["completions_cut"] == 0
    assert meta["settings"]["learning_rate"] == TRAIN["learning_rate"] and meta["metrics"]["steps"] == 6
    assert meta["counts"]["trainable_params"] == result.trainable_params > 0
    assert store.list_keys("checkpoints/batch-1") == [
        f"checkpoints/batch-1/checkpoint-{step}/{name}" for step in (2, 4)
        for name in ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json")]
    assert store.get_json("checkpoints/batch-1/checkpoint-4/trainer_state.json")["stats"]["step"] == 4


def test_steps_stay_within_the_test_budget_of_8_sequences_of_128_tokens(v1, base, tmp_path):
    _, tokenizer = _policy(v1, None, tmp_path)
    samples, _ = build_samples(read_batch(v1.store, v1.key).groups, ChatEncoder(tokenizer), GRPOSettings())
    assert max(len(s.prompt_ids) + len(s.completion_ids) for s in samples) <= 128
    assert max(s.tokens for s in v1.steps) <= 8 * 128


def test_the_offline_wandb_run_is_recorded_without_the_api_key(v1):
    result = v1.result
    assert result.wandb_run_id and result.wandb_url is None
    assert read_metadata(v1.store, "v1.0.0")["wandb_run_id"] == result.wandb_run_id
    files = [p for p in Path(result.wandb_dir).rglob("*") if p.is_file()]
    assert files and not any(SECRET.encode() in p.read_bytes() for p in files)


def test_the_saved_adapter_reloads_to_the_trained_policy(v1, tmp_path):
    model, tokenizer = _policy(v1, "v1.0.0", tmp_path)
    groups = read_batch(v1.store, v1.key).groups
    assert _gap(model, tokenizer, groups) == pytest.approx(v1.result.logprob_gap_after, abs=1e-6)
    assert v1.result.logprob_gap_after != pytest.approx(v1.result.logprob_gap_before, abs=1e-3)


def test_the_gap_between_better_and_worse_answers_rises_on_held_out_groups(v1, tmp_path):
    held_out = synthetic_groups(4, seed=99)
    assert not {t["metadata"]["trajectory_id"] for g in held_out for t in g["trajectories"]} & {
        t["metadata"]["trajectory_id"] for g in read_batch(v1.store, v1.key).groups for t in g["trajectories"]}
    before = _gap(*_policy(v1, None, tmp_path / "fresh"), held_out)
    after = _gap(*_policy(v1, "v1.0.0", tmp_path / "trained"), held_out)
    assert after > before + 0.1, (before, after)
    assert v1.result.logprob_gap_after > v1.result.logprob_gap_before + 0.1


def test_continual_training_starts_from_the_parent_adapter_and_a_first_run_from_a_fresh_one(v1, tmp_path):
    continued, _ = _policy(v1, "v1.0.0", tmp_path / "continued")
    saved = load_file(v1.store.root / model_key("v1.0.0", "adapter_model.safetensors"))
    loaded = get_peft_model_state_dict(continued)
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[name], saved[name]) for name in saved)
    assert any(name.endswith("lora_B.weight") and saved[name].abs().max() > 0 for name in saved)
    fresh = get_peft_model_state_dict(_policy(v1, None, tmp_path / "fresh")[0])
    assert all(not tensor.any() for name, tensor in fresh.items() if "lora_B" in name)

    # run_training itself: on v1's own batch, v2 starts where v1 ended, a parentless v3 where v1 began
    v2 = run_training(request(v1.root / "store", "batch-1-again", "v2.0.0", v1.key, parent="v1.0.0", max_steps=1),
                      work_dir=tmp_path / "work")
    v3 = run_training(request(v1.root / "store", "batch-1-fresh", "v3.0.0", v1.key, max_steps=1),
                      work_dir=tmp_path / "work")
    assert v2.logprob_gap_before == pytest.approx(v1.result.logprob_gap_after, abs=1e-6)
    assert v3.logprob_gap_before == pytest.approx(v1.result.logprob_gap_before, abs=1e-6)
    assert read_metadata(v1.store, "v2.0.0")["parent_version"] == "v1.0.0"


def test_a_complete_version_is_never_overwritten(v1, tmp_path):
    with pytest.raises(VersionExists, match="v1.0.0 is already complete"):
        run_training(request(v1.root / "store", "batch-1", "v1.0.0", v1.key), work_dir=tmp_path)


def test_a_version_claimed_by_another_batch_is_never_written(base, tmp_path):
    store = local_store(tmp_path / "store", base)
    key = put_batch(store, "mine", synthetic_groups(1, seed=6))
    store.put_json("models/v2.0.0/claim.json", {"batch_id": "theirs"})
    with pytest.raises(VersionClaimed, match="v2.0.0 is claimed by another batch"):
        run_training(request(tmp_path / "store", "mine", "v2.0.0", key), work_dir=tmp_path / "w")
    assert store.list_keys("models/v2.0.0") == ["models/v2.0.0/claim.json"]
    assert store.get_json("models/v2.0.0/claim.json") == {"batch_id": "theirs"}

    # a trainer whose claim is taken away while it runs (a later run reclaimed the version) uploads nothing
    def reclaimed(_stats):
        store.delete("models/v3.0.0/claim.json")

    with pytest.raises(VersionClaimed, match="no longer claimed"):
        run_training(request(tmp_path / "store", "mine", "v3.0.0", key, max_steps=1), progress=reclaimed,
                     work_dir=tmp_path / "w")
    assert store.list_keys("models/v3.0.0") == []
    assert list((tmp_path / "w" / "runs").iterdir()) == []  # the failed run's folder is removed


def test_a_nan_in_the_base_stops_the_run_and_writes_nothing(base, tmp_path):
    store = local_store(tmp_path / "store", base, poison=True)
    key = put_batch(store, "nan", synthetic_groups(2, seed=3))
    with pytest.raises(NonFiniteLoss):
        run_training(request(tmp_path / "store", "nan", "v1.0.0", key, checkpoint_every=1), work_dir=tmp_path / "w")
    assert store.list_keys("models/v1.0.0") == ["models/v1.0.0/claim.json"] and store.list_keys("checkpoints") == []


def test_an_infinite_loss_is_caught_before_the_optimizer_step(base, tmp_path):
    """Recorded log-probs of -1000 on a worse-than-average answer make its ratio infinite: loss = +inf."""
    store = local_store(tmp_path / "store", base)
    groups = synthetic_groups(1, seed=4)
    worse = groups[0]["trajectories"][1]
    worse["messages_and_choices"][-1]["logprobs"] = {"content": [
        {"token": f"token_id:{i}", "bytes": [], "logprob": -1000.0, "top_logprobs": []} for i in (5, 6, 7)
    ], "refusal": None}
    key = put_batch(store, "inf", groups)
    steps = []
    with pytest.raises(NonFiniteLoss, match="step 1/1: loss is inf"):
        run_training(request(tmp_path / "store", "inf", "v1.0.0", key, checkpoint_every=1), progress=steps.append,
                     work_dir=tmp_path / "w")
    expected = sorted([*store.list_keys("models/base"), "models/v1.0.0/claim.json"])
    assert steps == [] and store.list_keys("models") == expected


def _recorded_batch(tokenizer, temperature: float | None) -> list[dict]:
    """Two groups with recorded token ids whose log-probs say 'near certain' (-0.01): far from the tiny policy."""
    groups = synthetic_groups(2, seed=5)
    for group in groups:
        for member in group["trajectories"]:
            choice = member["messages_and_choices"][-1]
            ids = tokenizer.encode(choice["message"]["content"])
            tokens = [(token_id, -0.01) for token_id in ids]
            member.update(trajectory(member["metadata"]["trajectory_id"], member["messages_and_choices"][1]["content"],
                                     choice["message"]["content"], member["reward"], tokens=tokens,
                                     temperature=temperature))
    return groups


@pytest.mark.parametrize(("temperature", "clipped"), [(1.0, True), (None, False)])
def test_recorded_behaviour_logprobs_drive_the_ratio_only_when_usable(base, v1, tmp_path, temperature, clipped):
    _, tokenizer = _policy(v1, None, tmp_path / "probe")
    store = local_store(tmp_path / "store", base)
    groups = _recorded_batch(tokenizer, temperature)
    key = put_batch(store, "rec", groups)
    steps = []
    result = run_training(request(tmp_path / "store", "rec", "v1.0.0", key, max_steps=1), progress=steps.append,
                          work_dir=tmp_path / "w")
    assert read_metadata(store, "v1.0.0")["counts"]["turns_with_recorded_ids"] == 8 and len(steps) == 1
    if clipped:  # ratio ≈ exp(-6) < 1 - ε: every recorded token of a worse-than-average answer is clipped
        samples, _ = build_samples(groups, ChatEncoder(tokenizer), GRPOSettings())
        worse = sum(len(s.completion_ids) - 1 for s in samples if s.advantage < 0)  # the end marker: ratio 1
        expected = worse / sum(len(s.completion_ids) for s in samples)
        assert steps[0].clip_fraction == pytest.approx(expected) and result.clip_fraction == steps[0].clip_fraction
        assert expected > 0.1
    else:
        assert steps[0].clip_fraction == 0.0
