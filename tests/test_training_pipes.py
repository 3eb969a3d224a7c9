"""`python -m babylon_pipeline.training` under Dagster Pipes, as the trainer resource starts it locally:
per-step logs in the run, the result as the asset's materialization, errors failing the run."""

import sys
from pathlib import Path

import dagster as dg
import pytest

from babylon_pipeline.training.trainer import WORK_DIR_ENV
from tests.training_data import local_store, put_batch, read_metadata, request, shared_tiny_base, synthetic_groups


def _materialize(extras: dict, work_dir: Path) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    @dg.asset
    def lora_checkpoint(context: dg.AssetExecutionContext, pipes: dg.PipesSubprocessClient):
        command = [sys.executable, "-m", "babylon_pipeline.training"]
        return pipes.run(context=context, command=command, extras=extras).get_materialize_result()

    instance = dg.DagsterInstance.ephemeral()
    client = dg.PipesSubprocessClient(env={WORK_DIR_ENV: str(work_dir), "WANDB_MODE": "disabled"})
    result = dg.materialize([lora_checkpoint], resources={"pipes": client}, instance=instance, raise_on_error=False)
    return result, instance


def test_the_trainer_process_reports_steps_and_its_result_through_pipes(tmp_path_factory, tmp_path):
    store = local_store(tmp_path / "store", shared_tiny_base(tmp_path_factory))
    key = put_batch(store, "pipes-batch", synthetic_groups(2, seed=7))
    extras = request(tmp_path / "store", "pipes-batch", "v1.0.0", key, max_steps=2, micro_batch_size=4,
                     wandb={"mode": None}).to_extras()
    result, instance = _materialize(extras, tmp_path / "work")

    assert result.success
    (materialization,) = result.asset_materializations_for_node("lora_checkpoint")
    metadata = materialization.metadata
    assert metadata["steps"].value == 2 and metadata["samples"].value == 8
    assert metadata["adapter_key"].value == "models/v1.0.0/adapter_model.safetensors"
    assert isinstance(metadata["logprob_gap_after"].value, float) and "kl" not in metadata  # beta 0: no KL
    assert materialization.tags["dagster/data_version"] == read_metadata(store, "v1.0.0")["data_hash"]
    logs = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any(message.startswith("step 2/2 loss=") and "gap=" in message for message in logs)


def test_a_bad_request_fails_the_run_with_the_reason(tmp_path):
    extras = {"batch_id": "b", "version": "1.0", "storage_url": tmp_path.as_uri(), "batch_key": "k/b",
              "base_model": "store:base"}
    result, instance = _materialize(extras, tmp_path / "work")
    assert not result.success
    reported = [str(entry.dagster_event.event_specific_data) for entry in instance.all_logs(result.run_id)
                if entry.dagster_event is not None and "closed with exception" in entry.user_message]
    assert len(reported) == 1 and "InvalidTrainingRequest" in reported[0]
    assert "version must look like vX.Y.Z" in reported[0]


@pytest.fixture(autouse=True)
def _no_wandb_key(monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
