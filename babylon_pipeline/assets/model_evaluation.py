"""`model_evaluation`, one partition per model version: the held-out benchmark against the model in service.

Thin on purpose: `evaluation.evaluate_version` plays the suite (candidate, champion, base, paired by
seed; on the `inference` resource's server, else the local model), writes
`evaluations/{version}/report.json` and the version's `benchmarkScore`, `accuracy` and `evalMetrics`. Here the figures become metadata under stable names (the UI plots them across
versions) with a markdown comparison table, and the blocking check `not_worse_than_service` fails on
a `worse` verdict or a breached guardrail, so nothing downstream deploys the version.
(No `from __future__ import annotations`: Dagster reads the config class off the signature.)
"""

import dagster as dg
from pydantic import Field, model_validator

from babylon_pipeline.assets.lora_checkpoint import lora_checkpoint
from babylon_pipeline.assets.versions_report import record_model_versions
from babylon_pipeline.evaluation import EvaluationSettings, SuiteChanged, comparison_table, evaluate_version, metadata
from babylon_pipeline.evaluation.version import REPORT
from babylon_pipeline.model.base_record import BaseModelMissing
from babylon_pipeline.partitions import model_version_partitions
from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.storage.keys import evaluation_key
from babylon_pipeline.store.evaluations import UnknownVersion

S = EvaluationSettings  # the defaults live in the settings, once
CHECK = "not_worse_than_service"


class EvaluationConfig(dg.Config):
    """The benchmark suite (its size is part of its definition: another size needs another `suite` name),
    the bootstrap and the guardrail margins; see `evaluation.version.EvaluationSettings`. Checked by the
    settings' own rules when the step starts, before anything is played."""

    suite: str = Field(default=S.suite, description="the suite's name; a stored suite of this name with another "
                                                    "definition is refused")
    scenarios: int = Field(default=S.scenarios, description="simulated hours played by each policy, paired by seed")
    agents: int = Field(default=S.agents, description="agents per scenario (≥ 1)")
    ticks: int = Field(default=S.ticks, description="game ticks per scenario (≥ 1)")
    first_seed: int = Field(default=S.first_seed, description="the first scenario's seed; every seed must lie in "
                                                              "the range reserved for evaluation")
    temperature: float = Field(default=S.temperature, description="sampling temperature of every policy (> 0)")
    max_new_tokens: int = Field(default=S.max_new_tokens, description="answer length cap per game tick (≥ 1)")
    resamples: int = Field(default=S.resamples, description="paired bootstrap resamples (≥ 1,000)")
    confidence: float = Field(default=S.confidence, description="the interval's confidence, in [0.5, 1)")
    bootstrap_seed: int = Field(default=S.bootstrap_seed, description="the bootstrap's seed: the same figures give "
                                                                      "the same interval")
    max_valid_share_drop: float = Field(default=S.max_valid_share_drop,
                                        description="guardrail: the candidate's valid-action share may be at most "
                                                    "this far below the champion's (a share in [0, 1])")
    max_failed_share_rise: float = Field(default=S.max_failed_share_rise,
                                         description="guardrail: the candidate's failed-action share may be at most "
                                                     "this far above the champion's (a share in [0, 1])")

    @model_validator(mode="after")
    def _valid(self) -> "EvaluationConfig":
        settings = EvaluationSettings(**self.model_dump())
        settings.definition(), settings.bootstrap(), settings.margins()  # each raises ValueError on a bad value
        return self


@dg.asset(
    deps=[lora_checkpoint],
    partitions_def=model_version_partitions,
    group_name="deployment",
    kinds={"pytorch"},
    check_specs=[dg.AssetCheckSpec(CHECK, asset="model_evaluation", blocking=True,
                                   partitions_def=model_version_partitions,
                                   description="the verdict against the model in service is not `worse` and no "
                                               "guardrail (valid-action share, failed-action share) is breached")],
)
def model_evaluation(context: dg.AssetExecutionContext, config: EvaluationConfig, trajectory_store: TrajectoryStore,
                     object_store: ObjectStoreResource, inference: InferenceResource) -> dg.MaterializeResult:
    """The version against the model in service and the base on held-out scenarios, paired, with a verdict."""
    version, engine = context.partition_key, trajectory_store.engine()
    try:
        evaluation = evaluate_version(engine, object_store.open(), version,
                                      EvaluationSettings(**config.model_dump()), server=inference.policy_server(),
                                      log=context.log.info)
    except (BaseModelMissing, UnknownVersion, SuiteChanged, FileNotFoundError, ValueError) as error:
        raise dg.Failure(description=str(error)) from None
    table = comparison_table(evaluation)
    interval = evaluation.interval
    summary = (f"{version}: {evaluation.verdict} against {evaluation.champion or 'the base'}, reward difference "
               f"{interval.mean:+.4f} [{interval.low:+.4f}, {interval.high:+.4f}]"
               f"{'' if evaluation.guardrails_passed else ', guardrail breached'}")
    context.log.info(summary)
    record_model_versions(context, engine, f"evaluating {version}")
    figures = metadata(evaluation)
    check = dg.AssetCheckResult(
        check_name=CHECK, passed=evaluation.passed, severity=dg.AssetCheckSeverity.ERROR, description=summary,
        metadata={**{k: figures[k] for k in ("verdict", "champion", "diff_mean", "diff_low", "diff_high")},
                  **{f"{g.name}_{role}": getattr(g, role) for g in evaluation.guardrails for role in
                     ("candidate", "champion", "margin")},
                  **{f"{g.name}_passed": g.passed for g in evaluation.guardrails}},
    )
    return dg.MaterializeResult(
        metadata={**figures, "comparison": dg.MetadataValue.md(table),
                  "report": evaluation_key(version, REPORT)},
        check_results=[check],
    )
