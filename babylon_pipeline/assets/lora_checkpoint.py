"""`lora_checkpoint`: one GRPO run over every scored, untrained group → a new LoRA version, registered.

Thin on purpose: `windowing.training_run` plans the batch and registers the result, the trainer
resource starts `python -m babylon_pipeline.training` through Dagster Pipes (a subprocess here, a
GPU pod in production), whose per-step logs stream into the run and whose report becomes this
materialization's metadata. The asset takes the `gpu` pool's one slot, so two trainings never run
at once. Any failure after the batch was opened fails the batch with its reason and registers
nothing. (No `from __future__ import annotations`: Dagster reads the config class off the signature.)
"""

from typing import Any

import dagster as dg

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

    max_groups: int = BatchLimits.max_groups
    max_group_size: int = BatchLimits.max_group_size
    learning_rate: float = D.learning_rate
    epochs: int = D.epochs
    max_steps: int | None = D.max_steps
    micro_batch_size: int = D.micro_batch_size
    lora_r: int = D.lora_r
    lora_alpha: int = D.lora_alpha
    lora_dropout: float = D.lora_dropout
    target_modules: str = "all-linear"
    """`all-linear`, or module names separated by commas (`q_proj,v_proj`)."""
    epsilon: float = D.epsilon
    beta: float = D.beta
    kl_bias_correction: bool = D.kl_bias_correction
    loss_type: str = D.loss_type
    max_grad_norm: float = D.max_grad_norm
    max_seq_len: int | None = None
    """Prompt + completion tokens; default: the base's context (`base_model`'s `context_tokens`)."""
    max_completion_len: int = D.max_completion_len
    checkpoint_every: int = D.checkpoint_every
    seed: int = D.seed
    use_behaviour_logprobs: bool = D.use_behaviour_logprobs
    wandb_project: str = WandbOptions.project
    wandb_mode: str | None = None
    """`online`, `offline` or `disabled`; default online when WANDB_API_KEY is set, else offline."""

    def settings(self, context_tokens: int) -> GRPOSettings:
        values = self.model_dump(exclude={"max_groups", "max_group_size", "wandb_project", "wandb_mode"})
        modules = [m.strip() for m in values["target_modules"].split(",") if m.strip()]
        values["target_modules"] = "all-linear" if modules == ["all-linear"] else modules
        values["max_seq_len"] = values["max_seq_len"] or context_tokens
        return GRPOSettings.from_dict(values)


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
        wandb = WandbOptions(project=config.wandb_project, mode=config.wandb_mode)
        settings = config.settings(base.context_tokens)
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
