"""`lora_checkpoint`'s checks as the UI shows them (issue 17.6): check evaluations in a real instance's
event log after a real training run, and again after the stored adapter was damaged or a non-finite
loss was reported. The training figures of issue 17.7 are read from the same materialization event."""

from __future__ import annotations

import json
import math

import dagster as dg

from babylon_pipeline.assets.lora_checkpoint import lora_checkpoint
from babylon_pipeline.checks.lora_checkpoint import LORA_CHECKPOINT_CHECKS, adapter_loads, training_loss_finite
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trainer import TrainerResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from tests.test_lora_checkpoint import FAST, World, world  # noqa: F401 (the fixture)

ASSET = dg.AssetKey("lora_checkpoint")


def _run(world: World, instance: dg.DagsterInstance, selection=None) -> dg.ExecuteInProcessResult:
    resources = {"trajectory_store": TrajectoryStore(database_url=world.url),
                 "object_store": ObjectStoreResource(url=world.store_url), "trainer": TrainerResource()}
    return dg.materialize([lora_checkpoint, *LORA_CHECKPOINT_CHECKS], resources=resources, instance=instance,
                          selection=selection,
                          run_config=None if selection else {"ops": {"lora_checkpoint": {"config": FAST}}},
                          raise_on_error=False)


def _evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dg.AssetCheckEvaluation]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {r.event_log_entry.dagster_event.event_specific_data.check_name: r.event_log_entry.dagster_event.event_specific_data
            for r in records}


def test_checks_pass_on_a_trained_adapter_and_fail_on_a_damaged_one(world: World) -> None:
    instance = dg.DagsterInstance.ephemeral()
    result = _run(world, instance)
    assert result.success
    checks = _evaluations(instance, result.run_id)
    assert set(checks) == {"adapter_loads", "training_loss_finite"} and all(c.passed for c in checks.values())
    assert checks["adapter_loads"].metadata["peft_type"].value == "LORA"
    assert checks["adapter_loads"].metadata["tensors"].value > 0
    assert math.isfinite(checks["training_loss_finite"].metadata["final_loss"].value)

    # 17.7: what was cut, prompts and completions apart, in the event the UI shows
    event = instance.get_latest_materialization_event(ASSET).asset_materialization
    figures = {k: v.value for k, v in event.metadata.items()}
    assert {"prompts_trimmed", "prompt_tokens_dropped", "completions_cut", "completion_tokens_cut"} <= set(figures)
    assert "truncated" not in figures and "wandb_url" not in figures

    weights, config = "models/v1.0.0/adapter_model.safetensors", "models/v1.0.0/adapter_config.json"
    good = world.store.get_bytes(weights)
    world.store.put_bytes(weights, good[:-64])  # a truncated upload
    again = _run(world, instance, selection=dg.AssetSelection.checks(adapter_loads))
    [damaged] = _evaluations(instance, again.run_id).values()
    assert not damaged.passed and damaged.description and damaged.metadata["version"].value == "v1.0.0"

    world.store.put_bytes(weights, good)
    wrong_rank = {**world.store.get_json(config), "r": 3}  # a config that does not describe these weights
    world.store.put_bytes(config, json.dumps(wrong_rank).encode())
    bad_config = _run(world, instance, selection=dg.AssetSelection.checks(adapter_loads))
    [refused] = _evaluations(instance, bad_config.run_id).values()
    assert not refused.passed and "does not match the weights" in refused.description

    instance.report_runless_asset_event(dg.AssetMaterialization(ASSET, metadata={
        "version": "v1.0.0", "final_loss": float("nan"), "mean_loss": 0.5}))
    nan = _run(world, instance, selection=dg.AssetSelection.checks(training_loss_finite))
    [loss] = _evaluations(instance, nan.run_id).values()
    assert not loss.passed
