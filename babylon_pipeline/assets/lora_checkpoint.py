"""`lora_checkpoint`: one GRPO run over every scored, untrained group → a new LoRA version, registered.

Thin on purpose: `windowing.training_run` plans the batch and registers the result, the trainer
resource starts `python -m babylon_pipeline.training` through Dagster Pipes (a subprocess here, a
GPU pod in production), whose per-step logs stream into the run and whose report becomes this
materialization's metadata. The asset takes the `gpu` pool's one slot, so two trainings never run
at once. Any failure after the batch was opened fails the batch with its reason and registers
nothing. (No `from __future__ import annotations`: Dagster reads the config class off the signature.)
"""

from typing import Any, Literal

import dagster as dg
from pydantic import Field, model_validator

from babylon_pipeline.assets.base_model import base_model
from babylon_pipeline.assets.versions_report import record_model_versions
from babylon_pipeline.assets.windows import ruler_scores
from babylon_pipeline.instance import GPU_POOL, MODEL_VERSION_TAG_KEY, TRAINING_BATCH_TAG_KEY
from babylon_pipeline.model.base_record import BaseModelMissing, read_base_record
from babylon_pipeline.partitions import model_version_partitions
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trainer import TrainerResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.training.request import GRPOSettings, InvalidTrainingRequest, WandbOptions
from babylon_pipeline.windowing.training_batch import BatchLimits
from babylon_pipeline.windowing.training_run import (
    NothingToTrain,
    fail_run,
    plan_training_run,
    register_trained_version,
)

D = GRPOSettings  # the defaults live in the trainer's settings, once


class TrainingConfig(dg.Config):
    """GRPO hyperparameters and batch caps; see `training.request.GRPOSettings` for each."""

    max_groups: int = Field(default=BatchLimits.max_groups, description="scenario groups in the batch at most (≥ 1)")
    max_group_size: int = Field(default=BatchLimits.max_group_size,
                                description="trajectories per group at most (≥ 2); a trimmed group keeps its best "
                                            "and worst")
    learning_rate: float = Field(default=D.learning_rate, description="AdamW learning rate of the LoRA weights (> 0)")
    epochs: int = Field(default=D.epochs, description="passes over the batch's samples (≥ 1)")
    max_steps: int | None = Field(default=D.max_steps, description="optimizer steps at most (≥ 1); empty: as many "
                                                                   "as the epochs take")
    micro_batch_size: int = Field(default=D.micro_batch_size, description="sequences per optimizer step (≥ 1)")
    lora_r: int = Field(default=D.lora_r, description="LoRA rank (≥ 1; vLLM serves ranks up to its max_lora_rank)")
    lora_alpha: int = Field(default=D.lora_alpha, description="LoRA scaling numerator (≥ 1)")
    lora_dropout: float = Field(default=D.lora_dropout, description="dropout on the LoRA input, in [0, 1)")
    target_modules: str = Field(default="all-linear", description="`all-linear`, or module names separated by "
                                                                  "commas (`q_proj,v_proj`)")
    epsilon: float = Field(default=D.epsilon, description="PPO clip range: the ratio is kept within [1 - epsilon, "
                                                          "1 + epsilon]; in (0, 1)")
    beta: float = Field(default=D.beta, description="weight of the k3 KL to the base (≥ 0); 0 skips the reference pass")
    kl_bias_correction: bool = Field(default=D.kl_bias_correction,
                                     description="weight the KL term by the importance ratio (TRL's "
                                                 "use_bias_correction_kl)")
    loss_type: Literal["dapo", "grpo", "dr_grpo"] = Field(default=D.loss_type,
                                                          description="how token losses are averaged: `dapo` "
                                                                      "(over the batch's tokens), `grpo` (per "
                                                                      "sequence), `dr_grpo` (a constant)")
    max_grad_norm: float = Field(default=D.max_grad_norm, description="gradient clipping norm (> 0)")
    max_seq_len: int | None = Field(default=None, description="prompt + completion tokens (≥ 2); empty: the base's "
                                                              "context (`base_model`'s `context_tokens`)")
    max_completion_len: int = Field(default=D.max_completion_len, description="dr_grpo's constant normaliser (≥ 1)")
    checkpoint_every: int = Field(default=D.checkpoint_every, description="optimizer steps between intermediate "
                                                                          "checkpoints (≥ 0); 0: none")
    seed: int = Field(default=D.seed, description="seed of the adapter's initialisation and the sample order")
    use_behaviour_logprobs: bool = Field(default=D.use_behaviour_logprobs,
                                         description="importance ratio against the recorded log-probs where they "
                                                     "are valid (our model at temperature 1); else the ratio is 1")
    wandb_project: str = Field(default=WandbOptions.project, description="the W&B project of the run")
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = Field(
        default="auto", description="`auto`: online when WANDB_API_KEY is set, else offline")

    @model_validator(mode="after")
    def _valid(self) -> "TrainingConfig":
        """The trainer's own rules (`GRPOSettings`, `BatchLimits`, `WandbOptions`), before any batch is opened."""
        BatchLimits(max_groups=self.max_groups, max_group_size=self.max_group_size)
        self.wandb()
        self.settings(context_tokens=D.max_seq_len, prompt_room=None)  # the base is only known at run time
        return self

    def wandb(self) -> WandbOptions:
        return WandbOptions(project=self.wandb_project, mode=None if self.wandb_mode == "auto" else self.wandb_mode)

    def settings(self, context_tokens: int, prompt_room: int | None) -> GRPOSettings:
        """`prompt_room`: the prompt tokens the sampling policy fed its model (`BaseRecord.trained_prompt_room`)."""
        values = self.model_dump(exclude={"max_groups", "max_group_size", "wandb_project", "wandb_mode"})
        modules = [m.strip() for m in values["target_modules"].split(",") if m.strip()]
        values["target_modules"] = "all-linear" if modules == ["all-linear"] else modules
        values["max_seq_len"] = values["max_seq_len"] or context_tokens
        return GRPOSettings.from_dict({**values, "max_prompt_tokens": prompt_room})


@dg.asset(
    deps=[base_model, ruler_scores],
    pool=GPU_POOL,
    group_name="training",
    kinds={"pytorch", "wandb"},
)
def lora_checkpoint(
    context: dg.AssetExecutionContext,
    config: TrainingConfig,
    trajectory_store: TrajectoryStore,
    object_store: ObjectStoreResource,
    trainer: TrainerResource,
) -> dg.MaterializeResult:
    """A GRPO-trained LoRA adapter version, continued from the model in service, stored and registered."""
    engine, store = trajectory_store.engine(), object_store.open()
    try:
        base = read_base_record(store)
        limits = BatchLimits(max_groups=config.max_groups, max_group_size=config.max_group_size)
        wandb = config.wandb()
        settings = config.settings(base.context_tokens, base.trained_prompt_room())
        run = plan_training_run(engine, store, object_store.url, base, limits, settings, wandb,
                                stop_trainer=trainer.stop_trainer)
    except (BaseModelMissing, NothingToTrain, InvalidTrainingRequest, ValueError) as error:
        raise dg.Failure(description=str(error)) from None
    context.instance.add_run_tags(context.run_id,
                                  {TRAINING_BATCH_TAG_KEY: run.batch_id, MODEL_VERSION_TAG_KEY: run.version})
    if recovered := run.recovery.describe():
        context.log.warning(f"put right what a dead run left: {recovered}")
    context.log.info(
        f"{run.batch_id}: {len(run.batch.groups)} groups, {len(run.batch.rewards)} trajectories from "
        f"{len(run.batch.windows)} windows → {run.version} on {base.name} "
        f"from {run.parent.version if run.parent else 'a fresh LoRA'}"
    )
    try:
        reported = trainer.run(context, run.request.to_extras()).get_materialize_result()
        registered = register_trained_version(engine, store, run)
    except BaseException as error:
        fail_run(engine, store, run, error)
        raise
    context.instance.add_dynamic_partitions(model_version_partitions.name, [registered.version])
    context.log.info(f"registered {registered.model_id} ({registered.trajectories_marked} trajectories marked used)")
    record_model_versions(context, engine, f"registering {registered.version}")
    metadata: dict[str, Any] = {
        **(reported.metadata or {}),
        **{f"batch_{k}": v for k, v in run.batch.as_metadata().items()},
        "batch_id": run.batch_id,
        "model_id": registered.model_id,
        "base_model": base.name,
        "parent_version": run.parent.version if run.parent else "none (fresh LoRA)",
        "trajectories_marked": registered.trajectories_marked,
    }
    return dg.MaterializeResult(metadata=metadata, data_version=reported.data_version)
