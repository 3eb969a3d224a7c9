"""The evaluation gate: a held-out benchmark suite, every scenario played by the candidate, the model in
service and the base with the same seeds, and a verdict from the paired differences. No Dagster here."""

from babylon_pipeline.evaluation.compare import BETTER, NO_DIFFERENCE, WORSE
from babylon_pipeline.evaluation.run import Evaluation, comparison_table, eval_metrics, metadata, report
from babylon_pipeline.evaluation.suite import SuiteChanged, SuiteDefinition
from babylon_pipeline.evaluation.version import EvaluationSettings, evaluate_version

__all__ = ["BETTER", "NO_DIFFERENCE", "WORSE", "Evaluation", "EvaluationSettings", "SuiteChanged", "SuiteDefinition",
           "comparison_table", "eval_metrics", "evaluate_version", "metadata", "report"]
