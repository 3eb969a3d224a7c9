"""The controls' config, as a person types it into the Launchpad: a bad value is refused with the rule's own
message before the control does anything.

Dagster builds a `dg.Config` (running its validators) when the step that takes it starts: the step fails
there, before its body runs (nothing loaded, changed, trained or judged; no materialization). Enumerations
are `Literal`s, which Dagster's config schema refuses before a run is even created."""

from __future__ import annotations

import math
from datetime import datetime

import dagster as dg
import pytest
import sqlalchemy as sa

from babylon_pipeline.assets.deployed_model import deployed_model
from babylon_pipeline.assets.lora_checkpoint import lora_checkpoint
from babylon_pipeline.assets.model_evaluation import model_evaluation
from babylon_pipeline.assets.windows import outcome_rewards, ruler_scores, window_trajectories
from babylon_pipeline.jobs.deployment import promote_job, rollback_job
from babylon_pipeline.partitions import model_version_partitions, partition_key_of
from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.judge import JudgeResource
from babylon_pipeline.resources.notifier import NotifierResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trainer import TrainerResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.ruler import HeuristicJudge
from babylon_pipeline.serving.state import deployment_history, read_deployment
from babylon_pipeline.storage import LocalObjectStore
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.windowing.judging import judge_window
from tests.inference_server import InferenceServer, inference_server  # noqa: F401
from tests.scored_windows import score_windows
from tests.test_serving_state import add_model
from tests.window_data import record_window

W = "2025-11-15T10:00"
T0 = datetime(2025, 11, 15, 12, 0)


@pytest.fixture
def engine(empty_sqlite: sa.Engine) -> sa.Engine:
    upgrade(empty_sqlite)
    add_model(empty_sqlite, "v1.0.0", created=T0)
    return empty_sqlite


@pytest.fixture
def instance() -> dg.DagsterInstance:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(model_version_partitions.name, ["v1.0.0"])
    return instance


def resources(engine: sa.Engine, server: InferenceServer, tmp_path) -> dict:
    objects = ObjectStoreResource(url=tmp_path.as_uri())
    return {"trajectory_store": TrajectoryStore(database_url=engine.url.render_as_string(hide_password=False)),
            "object_store": objects, "judge": JudgeResource(), "trainer": TrainerResource(),
            "inference": InferenceResource(base_url=server.base_url, adapter_root="/adapters", api_key="sk-x",
                                           max_retries=0, timeout_s=5),
            "notifier": NotifierResource(object_store=objects, jsonl_path=str(tmp_path / "alerts.jsonl"))}


def refused(result: dg.ExecuteInProcessResult, config_class: str) -> str:
    """The failed step's cause: the config class's validation error, raised before its body produced anything."""
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value in ("ASSET_MATERIALIZATION",
                                                                        "ASSET_CHECK_EVALUATION", "STEP_OUTPUT")]
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error, chain = failure.step_failure_data.error, []
    while error is not None:  # Dagster may wrap it ("Error occurred while executing op …"): its cause
        chain.append(error)
        error = error.cause
    [validation] = [e for e in chain if e.cls_name == "ValidationError"]
    assert f"validation error for {config_class}" in validation.message
    return validation.message


def run_asset(asset, config: dict, res: dict, instance, partition: str | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize([asset], partition_key=partition, instance=instance, resources=res, raise_on_error=False,
                          run_config={"ops": {asset.op.name: {"config": config}}})


@pytest.mark.parametrize(("config", "message"), [
    ({"fraction": 0.0}, "a canary fraction is a share of agents in (0, 1], not 0.0"),
    ({"fraction": 1.5}, "a canary fraction is a share of agents in (0, 1], not 1.5"),
    ({"fraction": math.nan}, "a canary fraction is a share of agents in (0, 1], not nan"),
    ({"fraction": math.inf}, "a canary fraction is a share of agents in (0, 1], not inf"),
    ({"reason": "  "}, "must say why (it is kept in the deployment history), not be empty"),
])
def test_deploy_refuses_a_bad_fraction_or_reason(engine, inference_server, tmp_path, instance, config,
                                                 message) -> None:
    inference_server.publish("v1.0.0")
    result = run_asset(deployed_model, config, resources(engine, inference_server, tmp_path), instance, "v1.0.0")
    assert message in refused(result, "DeployConfig")
    assert read_deployment(engine).canary is None and deployment_history(engine).empty
    assert inference_server.requests == []  # nothing loaded, not even asked


@pytest.mark.parametrize(("job", "op", "config", "config_class", "message"), [
    (promote_job, "promote_canary_op", {"version": "1.0"}, "PromoteConfig",
     "'1.0' is not a model version: want vMAJOR.MINOR.PATCH"),
    (promote_job, "promote_canary_op", {"reason": ""}, "PromoteConfig", "must say why"),
    (rollback_job, "rollback_op", {"to": "latest"}, "RollbackConfig",
     "'latest' is not a model version: want vMAJOR.MINOR.PATCH"),
    (rollback_job, "rollback_op", {"reason": "\t"}, "RollbackConfig", "must say why"),
])
def test_promote_and_rollback_refuse_a_bad_target_or_reason(engine, inference_server, tmp_path, instance, job, op,
                                                            config, config_class, message) -> None:
    result = job.execute_in_process(instance=instance, resources=resources(engine, inference_server, tmp_path),
                                    raise_on_error=False, run_config={"ops": {op: {"config": config}}})
    assert message in refused(result, config_class)
    assert deployment_history(engine).empty and inference_server.requests == []


@pytest.mark.parametrize(("asset", "config", "config_class", "message"), [
    (lora_checkpoint, {"learning_rate": 0.0}, "TrainingConfig", "learning_rate must be > 0"),
    (lora_checkpoint, {"max_group_size": 1}, "TrainingConfig", "max_group_size >= 2"),
    (lora_checkpoint, {"epsilon": 2.0}, "TrainingConfig", "epsilon must be in (0, 1)"),
    (model_evaluation, {"resamples": 50}, "EvaluationConfig", "want at least 1,000 resamples"),
    (model_evaluation, {"confidence": 1.0}, "EvaluationConfig", "a confidence in [0.5, 1)"),
    (model_evaluation, {"max_failed_share_rise": -0.1}, "EvaluationConfig", "guardrail margins are shares in [0, 1]"),
    (model_evaluation, {"first_seed": 0}, "EvaluationConfig", "leave the range reserved for evaluation"),
    (window_trajectories, {"min_valid_fraction": 1.2}, "WindowQualityConfig", "must be a share in [0, 1], not 1.2"),
    (outcome_rewards, {"pnl": -1.0}, "OutcomeRewardConfig", "reward weights and scales must be finite and non-negative"),
    (ruler_scores, {"judge_weight": 1.5}, "RulerConfig", "must be a share in [0, 1], not 1.5"),
])
def test_train_evaluate_and_window_configs_refuse_bad_values(engine, inference_server, tmp_path, instance, asset,
                                                             config, config_class, message) -> None:
    partition = "v1.0.0" if asset is model_evaluation else partition_key_of(W) if asset.partitions_def else None
    result = run_asset(asset, config, resources(engine, inference_server, tmp_path), instance, partition)
    assert message in refused(result, config_class)
    assert not (tmp_path / "training-data").exists() and not (tmp_path / "benchmarks").exists()


@pytest.mark.parametrize(("asset", "config", "message"), [
    (ruler_scores, {"rubric": "vibes"}, "Value at path root:ops:ruler_scores:config:rubric not in enum type"),
    (lora_checkpoint, {"loss_type": "ppo"}, "Value at path root:ops:lora_checkpoint:config:loss_type not in enum type"),
])
def test_an_unknown_choice_is_refused_before_a_run_exists(engine, inference_server, tmp_path, instance, asset,
                                                          config, message) -> None:
    partition = partition_key_of(W) if asset.partitions_def else None
    with pytest.raises(dg.DagsterInvalidConfigError, match=message):
        run_asset(asset, config, resources(engine, inference_server, tmp_path), instance, partition)
    assert instance.get_runs() == []


def test_rejudge_asks_the_judge_again_where_a_rerun_reuses_the_cache(db, tmp_path) -> None:
    """Materializing a window again is no re-score (same judge, rubric and content: the cached judgment);
    `rejudge` is."""
    store = LocalObjectStore(tmp_path / "store")
    record_window(db, W, scenarios=2, agents=4)
    score_windows(db, store, [W])
    again = judge_window(db, store, W, HeuristicJudge(), "general", 0.5).summary
    assert (again.groups, again.cached) == (2, 2)
    rejudged = judge_window(db, store, W, HeuristicJudge(), "general", 0.5, rejudge=True).summary
    assert (rejudged.groups, rejudged.cached, rejudged.scored) == (2, 0, 2)
