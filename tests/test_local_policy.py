"""`LocalModelPolicy`: simulated agents acting with our own model, recorded so the trainer can use the
samples on-policy: the recorded log-probs are exactly the trainer's log-probs of the same tokens."""

from __future__ import annotations

from datetime import datetime

import pytest
import sqlalchemy as sa
import torch
from peft import LoraConfig, get_peft_model

from babylon_pipeline.art.turns import assistant_choice, user_message
from babylon_pipeline.assets.lora_checkpoint import TrainingConfig
from babylon_pipeline.cli import main
from babylon_pipeline.model.base_record import BaseRecord, write_base_record
from babylon_pipeline.model.policy import LocalModelPolicy
from babylon_pipeline.sim import simulate
from babylon_pipeline.sim.policy import PolicyRequest
from babylon_pipeline.storage import model_key
from babylon_pipeline.store import tables
from babylon_pipeline.serving.state import promote, start_canary
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.registry import open_batch, register_model, start_batch
from babylon_pipeline.store.reader import read_window
from babylon_pipeline.store.records import LLMCall
from babylon_pipeline.training.collate import collate
from babylon_pipeline.training.loss import completion_logps
from babylon_pipeline.training.request import STORE_BASE, GRPOSettings
from babylon_pipeline.training.samples import ChatEncoder, build_samples
from tests.training_data import SYSTEM, local_store, observation, shared_tiny_base

START = datetime(2025, 11, 15, 10, 0)


@pytest.fixture
def store(tmp_path, tmp_path_factory):
    return local_store(tmp_path / "store", shared_tiny_base(tmp_path_factory))


def test_recorded_logprobs_are_the_trainers_logprobs_of_the_sampled_tokens(store, tmp_path) -> None:
    policy = LocalModelPolicy.from_store(store, base_name="tiny", work_dir=tmp_path / "w", max_new_tokens=24,
                                         context_tokens=512, seed=3, temperature=1.0)
    users = [observation(tick, "m7", "Will it rain?", 0.4) for tick in range(3)]
    responses = [policy.act(SYSTEM, user, None) for user in users]  # type: ignore[arg-type]
    assert all(r.model == "tiny" and r.temperature == 1.0 and r.logprobs for r in responses)

    samples, counts = build_samples([_group(users, responses)], ChatEncoder(policy.tokenizer), GRPOSettings())
    assert counts.turns_with_recorded_ids == counts.turns_with_behaviour_logprobs == 3

    batch = collate(samples, policy.tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        trainer_logps = completion_logps(policy.model, batch)
    recorded = batch.behaviour_logps
    known = ~torch.isnan(recorded)  # an end marker the trainer appended carries none
    assert known.sum() >= sum(len(r.logprobs) for r in responses) - 3
    torch.testing.assert_close(trainer_logps[known], recorded[known], atol=2e-4, rtol=0)


def test_answers_to_prompts_past_the_room_are_trained_in_the_context_they_were_sampled_in(store, tmp_path) -> None:
    """The embedded profile's shapes (a 256-token context, 96-token answers, the trainer's settings as
    `lora_checkpoint` builds them for that base) on prompts longer than the policy's 160-token room:
    the trainer keeps the prompt's last 160 tokens as the policy did, so before any step the ratio
    π_θ / π_old of every sampled token is 1 (with the old cut, to `max_seq_len` alone, it ranged over 0.64-1.43)."""
    base = BaseRecord(name="tiny", spec=STORE_BASE, source="embedded", parameters=0, context_tokens=256)
    policy = LocalModelPolicy.from_store(store, base_name=base.name, work_dir=tmp_path / "w", seed=3, temperature=1.0,
                                         context_tokens=base.context_tokens)
    users = ["\n".join(observation(tick + k, f"m{k}", "Will it rain?", 0.1 * k) for k in range(4 + tick))
             for tick in range(4)]
    responses = policy.act_batch([PolicyRequest(SYSTEM, user, None) for user in users])  # type: ignore[arg-type]
    encoder = ChatEncoder(policy.tokenizer)
    full = [encoder.encode_prompt([{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}])
            for user in users]
    assert all(len(ids) > policy.room == r.prompt_tokens == 160 for ids, r in zip(full, responses, strict=True))
    lengths = {r.completion_tokens for r in responses}
    assert min(lengths) < policy.max_new_tokens == max(lengths)  # answers that ended and answers cut at the budget

    settings = TrainingConfig().settings(base.context_tokens, base.trained_prompt_room())
    samples, counts = build_samples([_group(users, responses)], encoder, settings)
    assert [s.prompt_ids for s in samples] == [tuple(ids[-policy.room:]) for ids in full]  # what the model was fed
    assert (counts.prompts_trimmed, counts.prompt_tokens_dropped) == (4, sum(len(ids) - policy.room for ids in full))
    assert (counts.completions_cut, counts.completion_tokens_cut) == (0, 0)

    batch = collate(samples, policy.tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        logps = completion_logps(policy.model, batch)  # π_θ as the loss computes it, the adapter untouched
    known = ~torch.isnan(batch.behaviour_logps)
    assert int(known.sum()) == sum(len(r.logprobs) for r in responses)  # every sampled token has its π_old
    ratio = torch.exp(logps - batch.behaviour_logps)[known]
    torch.testing.assert_close(ratio, torch.ones_like(ratio), atol=1e-4, rtol=0)


def _group(users: list[str], responses: list) -> dict:
    """One ART group of single-turn trajectories, built with the exporter's own turn functions."""
    trajectories = []
    for i, (user, response) in enumerate(zip(users, responses, strict=True)):
        call = LLMCall(model=response.model, systemPrompt=SYSTEM, userPrompt=user, response=response.text,
                       temperature=response.temperature, logprobs=list(response.logprobs))
        trajectories.append({"messages_and_choices": [{"role": "system", "content": SYSTEM}, user_message(call),
                                                      assistant_choice(call)],
                             "reward": float(i), "metadata": {"trajectory_id": f"t{i}", "temperature": 1.0}})
    return {"trajectories": trajectories}


def _store_adapter(store, tmp_path, version: str = "v1.0.0") -> None:
    """A fresh LoRA adapter on the tiny base, stored as the trainer stores a version."""
    base = LocalModelPolicy.from_store(store, base_name="tiny", work_dir=tmp_path / "b")
    adapter = get_peft_model(base.model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    adapter.save_pretrained(str(tmp_path / version), safe_serialization=True)
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        store.put_file(model_key(version, name), tmp_path / version / name)
    store.put_json(model_key(version, "metadata.json"), {"version": version})


def _register(db, version: str, base_model: str, now: datetime) -> None:
    batch = f"batch-{version}"
    open_batch(db, batch, base_model, version, [], [f"t-{version}"], {f"t-{version}": 0.5}, now=now)
    start_batch(db, batch, now=now)
    register_model(db, batch, version, f"file:///models/{version}", base_model, None, None, None, None, now=now)


def test_agents_act_with_a_trained_version_and_say_so_in_the_record(store, tmp_path, db) -> None:
    _store_adapter(store, tmp_path)

    policy = LocalModelPolicy.from_store(store, base_name="tiny", version="v1.0.0", work_dir=tmp_path / "p",
                                         max_new_tokens=16, context_tokens=256)
    simulate(db, hours=1, agents=5, seed=2, start=START, steps_per_window=2, policy_for=lambda agent: policy)
    calls = [c for t in read_window(db, "2025-11-15T10:00") for s in t.steps for c in s.llm_calls]
    assert len(calls) == 10
    assert {(c.model, c.model_version, c.temperature) for c in calls} == {("babylon-agent-v1.0.0", "v1.0.0", 0.7)}
    assert all(c.logprobs and all(t.token_id is not None and t.logprob <= 0 for t in c.logprobs) for c in calls)


def test_an_incomplete_version_is_refused(store, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="not a complete adapter"):
        LocalModelPolicy.from_store(store, base_name="tiny", version="v9.0.0", work_dir=tmp_path / "x")


def test_the_cli_chooses_the_bare_base_a_known_version_or_refuses_before_printing(store, tmp_path, empty_sqlite,
                                                                                  capsys) -> None:
    db = empty_sqlite  # the choice does not depend on the database kind: one is enough for two model loads
    upgrade(db)
    write_base_record(store, BaseRecord(name="tiny", spec="store:base", source="embedded", parameters=1,
                                        context_tokens=256))
    _store_adapter(store, tmp_path)
    _register(db, "v2.0.0", "another-base", datetime(2025, 11, 14))  # its adapter does not fit this base
    _register(db, "v1.0.0", "tiny", datetime(2025, 11, 15))
    with db.begin() as conn:  # evaluated, then deployed: in service
        conn.execute(sa.update(tables.trained_models).where(tables.trained_models.c.version == "v1.0.0")
                     .values(evalMetrics={"verdict": "better", "guardrails_passed": True}))
    start_canary(db, "v1.0.0", 0.1, actor="test", reason="evaluated")
    promote(db, actor="test", reason="serves everyone")
    common = ["simulate", "--hours", "1", "--agents", "2", "--steps", "1", "--policy", "local",
              "--database-url", db.url.render_as_string(hide_password=False),
              "--storage-url", (tmp_path / "store").as_uri()]

    def llm_calls(window: str) -> set:
        return {(c.model, c.model_version) for t in read_window(db, window) for s in t.steps for c in s.llm_calls}

    for unknown in ("v1.1.0", "v2.0.0", "latest"):
        assert main([*common, "--start", "2025-11-15T10:00", "--model-version", unknown]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err == (f"babylon: unknown --model-version {unknown!r}: on base tiny the known versions "
                                     "are base, v1.0.0\n")

    assert main([*common, "--start", "2025-11-15T10:00", "--model-version", "base"]) == 0
    assert capsys.readouterr().out.startswith("agents act with tiny (temperature 0.7)\n")
    assert llm_calls("2025-11-15T10:00") == {("tiny", None)}

    assert main([*common, "--start", "2025-11-15T11:00"]) == 0  # default: the model in service on this base
    assert capsys.readouterr().out.startswith("agents act with v1.0.0 (temperature 0.7)\n")
    assert llm_calls("2025-11-15T11:00") == {("babylon-agent-v1.0.0", "v1.0.0")}
