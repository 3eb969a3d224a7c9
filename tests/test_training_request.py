"""The trainer's input contract (Pipes extras) and what its process may import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from babylon_pipeline.training.request import GRPOSettings, InvalidTrainingRequest, TrainingRequest, WandbOptions

EXTRAS = {
    "batch_id": "batch-2025-11-15T12",
    "version": "v1.3.0",
    "storage_url": "s3://babylon-models/prod",
    "batch_key": "training-batches/batch-2025-11-15T12/groups.jsonl",
    "base_model": "Qwen/Qwen2.5-0.5B-Instruct",
    "parent_version": "v1.2.0",
    "settings": {"learning_rate": 1e-5, "beta": 0.04, "loss_type": "dr_grpo", "target_modules": ["q_proj", "v_proj"],
                 "epochs": 2, "max_grad_norm": 1, "max_prompt_tokens": 1952},
    "wandb": {"project": "babylon", "mode": "offline"},
}


def test_extras_round_trip_to_an_equal_request():
    request = TrainingRequest.from_extras(EXTRAS)
    assert request.settings.target_modules == ("q_proj", "v_proj") and request.settings.max_grad_norm == 1.0
    assert request.settings.lora_r == 8 and request.settings.loss_type == "dr_grpo"
    assert request.settings.max_prompt_tokens == 1952 and GRPOSettings().max_prompt_tokens is None
    assert request.wandb == WandbOptions(project="babylon", mode="offline")
    assert TrainingRequest.from_extras(request.to_extras()) == request


def test_defaults_follow_trl_where_it_has_them():
    settings = GRPOSettings()
    assert (settings.epsilon, settings.beta, settings.loss_type, settings.max_grad_norm) == (0.2, 0.0, "dapo", 1.0)
    assert settings.kl_bias_correction and settings.use_behaviour_logprobs
    minimal = {k: EXTRAS[k] for k in ("batch_id", "version", "storage_url", "batch_key", "base_model")}
    request = TrainingRequest.from_extras(minimal)
    assert request.parent_version is None and request.settings == settings and request.wandb == WandbOptions()


@pytest.mark.parametrize(("change", "message"), [
    ({"version": "1.3.0"}, "version must look like vX.Y.Z"),
    ({"version": "base"}, "not 'base'"),
    ({"parent_version": "v1.3"}, "parent_version must look like vX.Y.Z"),
    ({"parent_version": "v1.3.0"}, "must differ from version"),
    ({"batch_id": "../etc"}, "batch_id must be name-safe"),
    ({"batch_key": None}, r"missing required extras \['batch_key'\]"),
    ({"batch_key": "/abs/key"}, "batch_key: invalid key"),
    ({"storage_url": "http://x"}, "storage_url must be"),
    ({"base_model": " "}, "base_model must be"),
    ({"settings": {"learning_rte": 1e-5}}, r"unknown settings \['learning_rte'\]"),
    ({"settings": {"learning_rate": -1.0}}, "learning_rate must be > 0"),
    ({"settings": {"learning_rate": float("nan")}}, "must be a finite float"),
    ({"settings": {"epochs": 1.5}}, "epochs must be int"),
    ({"settings": {"use_behaviour_logprobs": "yes"}}, "must be bool"),
    ({"settings": {"loss_type": "ppo"}}, "loss_type must be one of"),
    ({"settings": {"max_prompt_tokens": 0}}, "max_prompt_tokens must be >= 1 or null"),
    ({"settings": {"max_prompt_tokens": 1.5}}, "max_prompt_tokens must be int"),
    ({"settings": {"epsilon": 1.5}}, r"epsilon must be in \(0, 1\)"),
    ({"settings": {"target_modules": []}}, "target_modules must be"),
    ({"settings": []}, "settings must be an object"),
    ({"wandb": {"project": "p", "entity": "e"}}, r"unknown wandb keys \['entity'\]"),
    ({"wandb": {"mode": "sometimes"}}, "wandb.mode must be one of"),
    ({"learning_rate": 1e-5}, r"unknown extras \['learning_rate'\]"),
])
def test_bad_extras_are_clear_errors(change, message):
    with pytest.raises(InvalidTrainingRequest, match=message):
        TrainingRequest.from_extras({**EXTRAS, **change})


def _modules_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(m.split('.')[0] for m in sys.modules))"
    return set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())


def test_the_orchestrator_builds_requests_without_torch():
    loaded = _modules_after("from babylon_pipeline.training.request import TrainingRequest")
    assert not loaded & {"torch", "transformers", "peft", "trl", "dagster", "wandb"}


def test_the_trainer_process_never_imports_dagster():
    loaded = _modules_after("import babylon_pipeline.training.__main__, babylon_pipeline.training.trainer")
    assert "dagster_pipes" in loaded and "torch" in loaded
    assert "dagster" not in loaded
