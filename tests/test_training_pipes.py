"""`python -m babylon_pipeline.training` under Dagster Pipes, as the trainer resource starts it locally:
per-step logs in the run, the result as the asset's materialization, errors failing the run."""

import logging
import sys
from pathlib import Path

import dagster as dg
import pytest

from babylon_pipeline.training.__main__ import completions_cut_warning, pipes_metadata
from babylon_pipeline.training.results import StepStats, TrainingResult
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
    assert any(message.startswith("step 2/2 loss=") and "gap=" in message and message.endswith(" eta=0:00")
               for message in logs)
    assert any(message.startswith("step 1/2 loss=") and " tok/s=" in message and " eta=" in message for message in logs)


def test_cut_completions_are_counted_apart_and_warned_about_and_the_offline_wandb_run_is_a_path(
        tmp_path_factory, tmp_path):
    """Issue 17.7: at a context too short for the answers, the UI shows what was cut and a warning."""
    store = local_store(tmp_path / "store", shared_tiny_base(tmp_path_factory))
    key = put_batch(store, "cut-batch", synthetic_groups(1, seed=3))
    extras = request(tmp_path / "store", "cut-batch", "v1.0.0", key, max_steps=1, micro_batch_size=4,
                     max_seq_len=6, wandb={"mode": "offline"}).to_extras()
    result, instance = _materialize(extras, tmp_path / "work")

    assert result.success
    (materialization,) = result.asset_materializations_for_node("lora_checkpoint")
    figures = {name: value.value for name, value in materialization.metadata.items()}
    assert figures["completions_cut"] == figures["samples"] == figures["prompts_trimmed"] == 4  # all > 5 tokens
    assert figures["completion_tokens_cut"] > 0 and figures["prompt_tokens_dropped"] > 0
    warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert any(m.startswith("4 of 4 completions were cut to fit max_seq_len") for m in warnings), warnings
    run_link = materialization.metadata["wandb_run_id"]
    assert isinstance(run_link, dg.PathMetadataValue) and Path(run_link.value).is_dir()
    assert "offline-run-" in run_link.value and "wandb_url" not in figures and "wandb_dir" not in figures


def test_wandb_run_id_is_a_link_online_and_nothing_when_disabled():
    online = _result(wandb_run_id="abc123", wandb_url="https://wandb.ai/team/babylon/runs/abc123", wandb_dir="/w")
    assert pipes_metadata(online)["wandb_run_id"] == {"raw_value": online.wandb_url, "type": "url"}
    assert "wandb_run_id" not in pipes_metadata(_result(wandb_run_id=None, wandb_url=None, wandb_dir=None))
    trimmed_only = _result(wandb_run_id=None, wandb_url=None, wandb_dir=None)
    assert completions_cut_warning(trimmed_only) is None  # old context lost: no warning


def _result(**wandb) -> TrainingResult:
    return TrainingResult(
        version="v1.0.0", adapter_key="k", metadata_key="m", data_hash="h", steps=1, final_loss=0.1, mean_loss=0.1,
        kl=None, clip_fraction=0.0, tokens_per_s=1.0, logprob_gap_before=None, logprob_gap_after=None, samples=4,
        prompts_trimmed=4, prompt_tokens_dropped=40, completions_cut=0, completion_tokens_cut=0, trainable_params=1,
        seconds=1.0, metadata={}, **wandb)


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


def test_the_progress_line_estimates_the_remaining_time_at_the_pace_so_far() -> None:
    stats = StepStats(step=3, total_steps=12, loss=0.5, kl=None, clip_fraction=0.0, grad_norm=1.0, tokens=100,
                      tokens_per_s=250.0, logprob_gap=None)
    assert stats.eta_s(30.0) == 90.0
    assert stats.describe(30.0).endswith(" eta=1:30") and " eta=" not in stats.describe()
    assert StepStats(**{**stats.as_dict(), "step": 1, "total_steps": 1001}).describe(4.0).endswith(" eta=1:06:40")
