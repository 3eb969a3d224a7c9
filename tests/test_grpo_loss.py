"""Our GRPO loss is TRL 1.16's: same loss value, same gradient for every LoRA parameter, same stats.

Both run on one batch and one model: TRL's `GRPOTrainer` (built around the tiny model with a LoRA
config) gets the batch through `_compute_loss`, in the tensors its own generation step produces
(left-padded prompts, right-padded completions, advantages, old and reference log-probs), and
ours through `grpo_loss`. The LoRA B matrices are random (not zero), so every adapter parameter has
a gradient and the adapter moves the policy away from the reference; half the rows carry recorded
behaviour log-probs far from the policy's, so the ratio is not 1 and the clip is exercised.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer

from babylon_pipeline.model.tiny import build_tiny_model
from babylon_pipeline.model.tokenizer import train_tokenizer
from babylon_pipeline.training.collate import collate
from babylon_pipeline.training.loss import completion_logps, grpo_loss
from babylon_pipeline.training.samples import ChatEncoder, Sample
from tests.training_data import HOLD, SYSTEM, buy, observation, tokenizer_texts

MAX_COMPLETION = 64
ADVANTAGES = [1.2, -0.8, 0.3, -0.7, 0.9, -0.9]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(tokenizer_texts(), vocab_size=500)


@pytest.fixture(scope="module")
def samples(tokenizer) -> list[Sample]:
    encoder, rng = ChatEncoder(tokenizer), random.Random(0)
    rows = []
    for i, advantage in enumerate(ADVANTAGES):
        context = [{"role": "system", "content": SYSTEM},
                   {"role": "user", "content": observation(i, f"m{i}", "Will it rain?", rng.random())}]
        prompt, completion = encoder.encode_turn(context, buy(f"m{i}") if i % 3 else HOLD)
        behaviour = [math.nan] * len(completion)
        if i % 2:  # recorded log-probs, far from the policy's; the end marker has none
            behaviour = [-3.0] * (len(completion) - 1) + [math.nan]
        rows.append(Sample(tuple(prompt), tuple(completion), tuple(behaviour), advantage, str(i), 0, 0))
    return rows


def _trl_trainer(tokenizer, tmp_path, loss_type: str, beta: float, kl_correction: bool) -> GRPOTrainer:
    args = GRPOConfig(
        output_dir=str(tmp_path), use_cpu=True, report_to="none", save_strategy="no", bf16=False,
        per_device_train_batch_size=2, num_generations=2, max_completion_length=MAX_COMPLETION,
        loss_type=loss_type, beta=beta, use_bias_correction_kl=kl_correction,
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM",
                      init_lora_weights=False)
    torch.manual_seed(0)
    trainer = GRPOTrainer(
        model=build_tiny_model(tokenizer, seed=1), reward_funcs=lambda completions, **_: [0.0] * len(completions),
        args=args, train_dataset=Dataset.from_dict({"prompt": ["a", "b"]}), processing_class=tokenizer,
        peft_config=lora,
    )
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which is not run here
    trainer.model.train()
    return trainer


def _grads(model) -> dict[str, torch.Tensor]:
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize(("loss_type", "beta", "kl_correction"), [
    ("dapo", 0.0, True),
    ("dapo", 0.04, True),
    ("dapo", 0.04, False),
    ("grpo", 0.04, True),
    ("dr_grpo", 0.0, True),
])
def test_loss_gradients_and_stats_equal_trl_grpo_trainer(tokenizer, samples, tmp_path, loss_type, beta,
                                                         kl_correction):
    trainer = _trl_trainer(tokenizer, tmp_path, loss_type, beta, kl_correction)
    model = trainer.model
    batch = collate(samples, tokenizer.pad_token_id, torch.device("cpu"))
    width = batch.completion_ids.size(1)
    with torch.no_grad():
        current = completion_logps(model, batch)
        with model.disable_adapter():  # TRL's reference for a fresh PEFT adapter, through TRL's own forward
            ref_trl, _, _ = trainer._get_per_token_logps_and_entropies(model, batch.input_ids, batch.attention_mask,
                                                                       width)
    inputs = {
        "prompt_ids": batch.prompt_ids, "prompt_mask": batch.prompt_mask,
        "completion_ids": batch.completion_ids, "completion_mask": batch.completion_mask,
        "advantages": batch.advantages, "num_items_in_batch": batch.completion_mask.sum(),
        # TRL takes one old-log-prob tensor: where nothing was recorded, the current (detached) ones, as in ours
        "old_per_token_logps": torch.where(torch.isnan(batch.behaviour_logps), current, batch.behaviour_logps),
    }
    if beta:
        inputs["ref_per_token_logps"] = ref_trl
    trl_loss = trainer._compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = _grads(model)

    logps = completion_logps(model, batch)
    with torch.no_grad(), model.disable_adapter():
        ref = completion_logps(model, batch)
    ours = grpo_loss(logps, batch.behaviour_logps, batch.advantages, batch.completion_mask, epsilon=0.2,
                     loss_type=loss_type, max_completion_len=MAX_COMPLETION, beta=beta, ref_logps=ref,
                     kl_bias_correction=kl_correction)
    ours.loss.backward()
    our_grads = _grads(model)

    torch.testing.assert_close(ours.loss, trl_loss, rtol=1e-6, atol=1e-8)
    assert our_grads.keys() == trl_grads.keys() and len(our_grads) > 50
    for name, grad in trl_grads.items():
        assert grad.abs().max() > 0, name  # every LoRA parameter takes part
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)
    metrics = trainer._metrics["train"]
    assert ours.clip_fraction == pytest.approx(metrics["clip_ratio/region_mean"][-1], abs=1e-6)
    assert 0 < ours.clip_fraction < 1
    if beta:
        assert ours.kl == pytest.approx(metrics["kl"][-1], rel=1e-5) and ours.kl > 0
    else:
        assert ours.kl is None and "kl" not in metrics


def test_without_behaviour_logprobs_the_loss_is_a_data_constant_and_the_gradient_a_policy_gradient():
    """Ratio ≡ 1: loss = -Σ A·mask / Σ mask whatever the policy; gradient = that of -Σ A·logp·mask / Σ mask."""
    logps = torch.randn(3, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    advantages = torch.tensor([1.0, -0.5, 0.25])
    out = grpo_loss(logps, torch.full((3, 5), math.nan), advantages, mask, epsilon=0.2, loss_type="dapo",
                    max_completion_len=8)
    expected = -(advantages.unsqueeze(1) * mask).sum() / mask.sum()
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    torch.testing.assert_close(logps.grad, -(advantages.unsqueeze(1) * mask) / mask.sum())
    assert out.clip_fraction == 0.0
