"""Evaluate one registered version against the model in service: what the asset and `babylon evaluate` run.

The default size, 16 scenarios of 2 agents over 3 ticks (96 answers per policy), took 28 s for two
distinct policies on 2 shared CPU cores with the embedded tiny model (`benchmarks/bench_eval.py`; under a
minute with three), and the verdict is the same from run to run:
every draw is seeded (scenarios by their reserved seeds, sampling by the scenario seed, the bootstrap by its own).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from babylon_pipeline.evaluation.compare import BootstrapSettings, GuardrailMargins
from babylon_pipeline.evaluation.policies import PolicyServer, policy_source
from babylon_pipeline.evaluation.run import CANDIDATE, Evaluation, eval_metrics, report, run_evaluation
from babylon_pipeline.evaluation.suite import SuiteDefinition, ensure_suite
from babylon_pipeline.model.base_record import read_base_record
from babylon_pipeline.sim.seeds import EVALUATION_SEEDS
from babylon_pipeline.storage import ObjectStore
from babylon_pipeline.storage.keys import evaluation_key
from babylon_pipeline.store.evaluations import record_evaluation, version_row
from babylon_pipeline.store.registry import model_in_service

REPORT = "report.json"


@dataclass(frozen=True)
class EvaluationSettings:
    suite: str = "babylon-lite-16x2x3"
    scenarios: int = 16
    agents: int = 2
    ticks: int = 3
    first_seed: int = EVALUATION_SEEDS.start
    temperature: float = 0.7
    max_new_tokens: int = 96
    resamples: int = BootstrapSettings.resamples
    confidence: float = BootstrapSettings.confidence
    bootstrap_seed: int = BootstrapSettings.seed
    max_valid_share_drop: float = GuardrailMargins.max_valid_share_drop
    max_failed_share_rise: float = GuardrailMargins.max_failed_share_rise

    def definition(self) -> SuiteDefinition:
        return SuiteDefinition(name=self.suite, scenarios=self.scenarios, agents=self.agents, ticks=self.ticks,
                               first_seed=self.first_seed, temperature=self.temperature,
                               max_new_tokens=self.max_new_tokens)

    def bootstrap(self) -> BootstrapSettings:
        return BootstrapSettings(resamples=self.resamples, confidence=self.confidence, seed=self.bootstrap_seed)

    def margins(self) -> GuardrailMargins:
        return GuardrailMargins(self.max_valid_share_drop, self.max_failed_share_rise)


def evaluate_version(engine: sa.Engine, store: ObjectStore, version: str,
                     settings: EvaluationSettings = EvaluationSettings(), *, server: PolicyServer | None = None,
                     log: Callable[[str], object] = lambda message: None) -> Evaluation:
    """Play the suite, write `evaluations/{version}/report.json`, then the version's row; the `Evaluation`.
    Policies play on `server` when given (production), else on the local model (embedded)."""
    row = version_row(engine, version)
    base = read_base_record(store)
    if row.base_model != base.name:
        raise ValueError(f"{version} was trained on base {row.base_model}, the base now is {base.name}: "
                         "its adapter does not fit it")
    served = model_in_service(engine)
    champion = served.version if served is not None and served.base_model == base.name else None
    if served is not None and champion is None:
        log(f"the version in service, {served.version}, was trained on another base: the champion is the base")
    definition = settings.definition()
    suite_hash = ensure_suite(store, definition)
    log(f"{version} against {champion or 'the base'} on suite {definition.name} ({suite_hash[:12]}): "
        f"{definition.scenarios} scenarios of {definition.agents} agents over {definition.ticks} ticks")
    with tempfile.TemporaryDirectory(prefix="babylon-evaluate-") as scratch:
        source = policy_source(store, base, Path(scratch), temperature=definition.temperature,
                               max_new_tokens=definition.max_new_tokens, server=server)
        evaluation = run_evaluation(definition, suite_hash, source, version, champion, bootstrap=settings.bootstrap(),
                                    margins=settings.margins(), work_dir=Path(scratch), progress=log)
    store.put_json(evaluation_key(version, REPORT), report(evaluation))
    candidate = evaluation.figures[CANDIDATE]
    record_evaluation(engine, version, candidate.reward, candidate.valid_share, eval_metrics(evaluation))
    return evaluation
