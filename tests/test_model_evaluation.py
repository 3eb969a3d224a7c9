"""`model_evaluation`: held-out scenarios played by the candidate, the model in service and the base, paired,
with a verdict from a seeded bootstrap; a broken version is judged `worse` and its blocking check fails."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest
import sqlalchemy as sa
import torch
from dagster_aws.s3 import S3Resource

from babylon_pipeline.assets.model_evaluation import CHECK, model_evaluation
from babylon_pipeline.cli import main
from babylon_pipeline.evaluation import (
    BETTER,
    NO_DIFFERENCE,
    WORSE,
    EvaluationSettings,
    comparison_table,
    evaluate_version,
    metadata,
)
from babylon_pipeline.evaluation.compare import BootstrapSettings, guardrails, paired_bootstrap
from babylon_pipeline.evaluation.play import play_scenario
from babylon_pipeline.evaluation.run import run_evaluation
from babylon_pipeline.evaluation.suite import SuiteChanged, SuiteDefinition, ensure_suite, read_suite
from babylon_pipeline.model.base_record import BaseRecord, write_base_record
from babylon_pipeline.partitions import model_version_partitions
from babylon_pipeline.resources.inference import InferenceResource
from babylon_pipeline.resources.object_store import ObjectStoreResource
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sim import simulate
from babylon_pipeline.sim.observation import Observation
from babylon_pipeline.sim.policy import PolicyResponse
from babylon_pipeline.sim.seeds import EVALUATION_SEEDS, ReservedSeed
from babylon_pipeline.storage import LocalObjectStore, ObjectStore, open_object_store
from babylon_pipeline.store import tables
from babylon_pipeline.store.registry import open_batch, register_model, start_batch
from tests.evaluation_models import CONTEXT_TOKENS, break_adapter, shared_evaluation_models, store_version
from tests.s3_server import REGION
from tests.training_data import HOLD, upload_base

BASE = "tiny-hold"
SMALL = {"suite": "test-6x1x2", "scenarios": 6, "agents": 1, "ticks": 2, "max_new_tokens": 32}
NOW = datetime(2025, 11, 15, 12)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tiny model gains nothing from a second thread, and on shared cores two spinning threads cost ten times."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _setup(engine: sa.Engine, store: ObjectStore, models, versions: dict[str, str]) -> None:
    """The base and the given versions stored and registered; `versions` maps each to the status it should have."""
    upload_base(store, models / "base")
    write_base_record(store, BaseRecord(name=BASE, spec="store:base", source="embedded", parameters=1,
                                        context_tokens=CONTEXT_TOKENS))
    tables.metadata.create_all(engine)
    for version, status in versions.items():
        batch = f"batch-{version}"
        open_batch(engine, batch, BASE, version, [], [f"t-{version}"], {f"t-{version}": 0.5}, now=NOW)
        start_batch(engine, batch, now=NOW)
        register_model(engine, batch, version, f"models/{version}", BASE, None, None, None, None, now=NOW)
        with engine.begin() as conn:  # the stages of the deployment state: a candidate is invisible to the app
            conn.execute(sa.update(tables.trained_models).where(tables.trained_models.c.version == version)
                         .values(status=status))


def _row(engine: sa.Engine, version: str):
    m = tables.trained_models
    with engine.connect() as conn:
        return conn.execute(sa.select(m.c.benchmarkScore, m.c.accuracy, m.c.evalMetrics)
                            .where(m.c.version == version)).one()


def test_a_trained_adapter_is_judged_better_than_the_base_with_its_interval(tmp_path, tmp_path_factory, empty_sqlite,
                                                                            capsys) -> None:
    models = shared_evaluation_models(tmp_path_factory)
    store = LocalObjectStore(tmp_path / "objects")
    store_version(store, "v1.0.0", models / "hold")
    _setup(empty_sqlite, store, models, {"v1.0.0": "candidate"})

    argv = ["evaluate", "v1.0.0", "--json", "--database-url", empty_sqlite.url.render_as_string(hide_password=False),
            "--storage-url", (tmp_path / "objects").as_uri(), "--suite", SMALL["suite"], "--scenarios", "6",
            "--agents", "1", "--ticks", "2", "--max-new-tokens", "32"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert "scenario 6/6 (seed 900000005)" in err  # progress, one line per scenario
    assert summary["verdict"] == BETTER and summary["guardrails_passed"] is True and summary["champion"] == "base"
    assert 0 < summary["diff_low"] <= summary["diff_mean"] <= summary["diff_high"]
    candidate, base = summary["policies"]["candidate"], summary["policies"]["base"]
    assert candidate["valid_share"] >= 0.9
    assert candidate["hold_share"] == candidate["valid_share"]  # every valid answer is a HOLD ...
    assert candidate["grounded_share"] == candidate["trade_share"] == candidate["rejected_trade_share"] == 0.0
    assert base["hold_share"] == base["trade_share"] == 0.0  # ... which names nothing and trades nothing
    assert candidate["failed_share"] == pytest.approx(1 - candidate["valid_share"])  # 1/12 != 1 - 11/12 in floats
    assert base["valid_share"] == 0.0 and base["failed_share"] == 1.0  # the half-trained base writes no action
    assert summary["policies"]["champion"] == base and candidate["tokens"] > 0

    row = _row(empty_sqlite, "v1.0.0")
    assert row.benchmarkScore == candidate["reward"] and row.accuracy == candidate["valid_share"]
    assert row.evalMetrics == summary
    report = store.get_json("evaluations/v1.0.0/report.json")
    assert report["summary"] == summary and report["suite"]["hash"] == summary["suite_hash"]
    assert len(report["scenarios"]) == 3 * 6
    assert {r["seed"] for r in report["scenarios"]} == set(range(EVALUATION_SEEDS.start, EVALUATION_SEEDS.start + 6))


def test_a_broken_adapter_is_judged_worse_and_its_check_fails_on_postgres_and_s3(
        tmp_path, tmp_path_factory, empty_postgres, s3_endpoint, s3_bucket) -> None:
    models = shared_evaluation_models(tmp_path_factory)
    url = f"s3://{s3_bucket}/babylon"
    resource = ObjectStoreResource(url=url, s3=S3Resource(endpoint_url=s3_endpoint, region_name=REGION))
    store = resource.open()
    store_version(store, "v1.0.0", models / "hold")
    store_version(store, "v1.1.0", break_adapter(models / "hold", tmp_path / "broken"))
    _setup(empty_postgres, store, models, {"v1.0.0": "deployed", "v1.1.0": "candidate"})

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(model_version_partitions.name, ["v1.1.0"])
    result = dg.materialize(
        [model_evaluation], partition_key="v1.1.0", instance=instance, raise_on_error=False,
        resources={"object_store": resource, "inference": InferenceResource(), "trajectory_store": TrajectoryStore(
            database_url=empty_postgres.url.render_as_string(hide_password=False))},
        run_config={"ops": {"model_evaluation": {"config": SMALL}}},
    )
    assert not result.success  # the blocking check failed the step: nothing downstream runs
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert failure.cls_name == "DagsterAssetCheckFailedError" and CHECK in failure.message
    check = result.get_asset_check_evaluations()[0]
    assert check.check_name == CHECK and not check.passed
    figures = {k: v.value for k, v in check.metadata.items()}
    assert figures["verdict"] == WORSE and figures["champion"] == "v1.0.0" and figures["diff_high"] < 0
    assert figures["valid_action_share_passed"] is False and figures["valid_action_share_candidate"] == 0.0
    assert figures["failed_action_share_candidate"] == 1.0 and figures["failed_action_share_champion"] < 0.1

    [evaluated] = [e for e in result.asset_materializations_for_node("model_evaluation")
                   if e.asset_key == dg.AssetKey("model_evaluation")]  # (a `model_versions` one may come with it)
    metadata = {k: v.value for k, v in evaluated.metadata.items()}
    assert metadata["verdict"] == WORSE and metadata["candidate_valid_share"] == 0.0
    assert metadata["champion_valid_share"] >= 0.9 and "| reward " in metadata["comparison"]
    assert metadata["candidate_hold_share"] == 0.0 and metadata["champion_hold_share"] >= 0.9
    assert metadata["candidate_trade_share"] == metadata["champion_trade_share"] == 0.0
    eval_metrics = _row(empty_postgres, "v1.1.0").evalMetrics
    assert eval_metrics["verdict"] == WORSE and eval_metrics["guardrails_passed"] is False
    assert store.get_json("evaluations/v1.1.0/report.json")["summary"] == eval_metrics


class _ChatServer(ThreadingHTTPServer):
    """An OpenAI-compatible chat endpoint: the adapter named by `model` answers HOLD, anything else garbage."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _ChatHandler)
        self.models: list[str] = []


class _ChatHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.models.append(request["model"])  # type: ignore[attr-defined]
        text = HOLD if request["model"] == "babylon-agent-v1.0.0" else "no idea"
        body = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": request["model"],
                           "choices": [{"index": 0, "finish_reason": "stop",
                                        "message": {"role": "assistant", "content": text}}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_on_an_inference_server_the_request_model_field_picks_the_adapter(tmp_path, tmp_path_factory,
                                                                          empty_sqlite) -> None:
    models = shared_evaluation_models(tmp_path_factory)
    store = LocalObjectStore(tmp_path / "objects")
    _setup(empty_sqlite, store, models, {"v1.0.0": "candidate"})
    server = _ChatServer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        inference = InferenceResource(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                                      adapter_root="/adapters", api_key="k")  # what model_evaluation is given
        evaluation = evaluate_version(empty_sqlite, store, "v1.0.0", EvaluationSettings(**SMALL),
                                      server=inference.policy_server())
    finally:
        server.shutdown()
    assert set(server.models) == {"babylon-agent-v1.0.0", BASE}  # the champion is the base: played once
    assert len(server.models) == 2 * 6 * 1 * 2
    assert evaluation.verdict == BETTER and evaluation.figures["candidate"].tokens == 7 * 12


class _Fixed:
    """A policy that always answers the same kind of action, naming what its prompt shows."""

    def __init__(self, answer: Callable[[str, Observation], str]) -> None:
        self.answer = answer

    def act(self, system_prompt: str, user_prompt: str, observation: Observation) -> PolicyResponse:
        return PolicyResponse(self.answer(user_prompt, observation), model="fixed", temperature=1.0, max_tokens=64,
                              completion_tokens=1)


def _action(kind: str, **parameters) -> str:
    return json.dumps({"action": kind, "parameters": parameters})


def _first_market(prompt: str) -> str:
    """The reference of the first prediction market the prompt lists, as shown (`- [ref] question YES 0.512, ...`)."""
    return re.search(r"^- \[([^\]]+)\] .* YES \d\.\d{3}, volume ", prompt, re.MULTILINE).group(1)


FIXED = {
    "hold": _Fixed(lambda prompt, o: HOLD),
    "buy": _Fixed(lambda prompt, o: _action("BUY_SHARES", marketId=_first_market(prompt), side="YES", amount=5)),
    "buy_part": _Fixed(lambda prompt, o: _action("BUY_SHARES", marketId=_first_market(prompt)[:-1], side="YES",
                                                 amount=5)),
    "close_unopened": _Fixed(lambda prompt, o: _action("CLOSE_PERP", ticker=o.perps[0].ticker)),
    "post": _Fixed(lambda prompt, o: _action("CREATE_POST", content="markets look calm")),
}
FIXED_SUITE = SuiteDefinition(name="fixed", scenarios=5, agents=2, ticks=3)


@pytest.mark.parametrize(("kind", "grounded", "trades", "rejected_trades", "holds"), [
    ("hold", 0, 0, 0, 6),  # valid, names nothing: not grounded
    ("buy", 6, 6, 0, 0),
    ("buy_part", 0, 6, 6, 0),  # a shown id but its last character: the game rejects it, and it is not shown
    ("close_unopened", 6, 6, 6, 0),  # the ticker is shown, but there is no position to close
    ("post", 0, 0, 0, 0),
])
def test_a_play_counts_trades_rejected_trades_and_holds(tmp_path, kind, grounded, trades, rejected_trades,
                                                        holds) -> None:
    play = play_scenario(FIXED[kind], FIXED_SUITE, FIXED_SUITE.seeds[0], tmp_path)
    assert (play.steps, play.valid) == (6, 6)  # 2 agents × 3 ticks, every answer read
    assert (play.grounded, play.trades, play.rejected_trades, play.holds) == (grounded, trades, rejected_trades,
                                                                              holds)
    assert play.failed == rejected_trades


class _FixedSource:
    """The candidate `v1.0.0` buys the first market shown, the base (the champion) holds."""

    def policy(self, version: str | None) -> _Fixed:
        return FIXED["buy" if version else "hold"]

    def reseed(self, seed: int) -> None:
        pass


def test_the_trade_figures_tell_a_trader_from_a_holder_in_metadata_and_table(tmp_path) -> None:
    evaluation = run_evaluation(FIXED_SUITE, FIXED_SUITE.digest(), _FixedSource(), "v1.0.0", None, work_dir=tmp_path)
    figures = metadata(evaluation)
    assert figures["candidate_valid_share"] == figures["champion_valid_share"] == 1.0  # alike on validity ...
    assert (figures["candidate_trade_share"], figures["candidate_hold_share"]) == (1.0, 0.0)  # ... not on trading
    assert (figures["champion_trade_share"], figures["champion_hold_share"]) == (0.0, 1.0)
    assert figures["candidate_rejected_trade_share"] == figures["champion_rejected_trade_share"] == 0.0
    assert (figures["candidate_grounded_share"], figures["champion_grounded_share"]) == (1.0, 0.0)
    table = comparison_table(evaluation)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in table.splitlines()[2:]}
    assert rows["trade_share"] == ["1.0000", "0.0000", "0.0000", "1.0000"]  # candidate, champion, base, difference
    assert rows["hold_share"] == ["0.0000", "1.0000", "1.0000", "-1.0000"]
    assert rows["rejected_trade_share"] == ["0.0000"] * 4
    assert evaluation.figures["candidate"].steps == 5 * 6


def test_the_bootstrap_is_seeded_and_its_interval_gives_the_verdict() -> None:
    differences = [0.02, -0.01, 0.05, 0.03, 0.0, 0.04, -0.02, 0.06]
    once, again = paired_bootstrap(differences), paired_bootstrap(differences)
    assert once == again and once.low < once.mean < once.high and once.pairs == 8
    assert paired_bootstrap(differences, BootstrapSettings(seed=1)) != once  # the seed, not luck, fixes it
    assert once.verdict == BETTER and once.low > 0
    assert paired_bootstrap([-d for d in differences]).verdict == WORSE
    assert paired_bootstrap([0.0] * 6).verdict == NO_DIFFERENCE
    assert paired_bootstrap([0.3, -0.3, 0.2, -0.2, 0.1, -0.1]).verdict == NO_DIFFERENCE
    with pytest.raises(ValueError, match="two finite"):
        paired_bootstrap([0.1, float("nan")])


def test_guardrails_allow_their_margins_and_no_more() -> None:
    held = guardrails(candidate_valid=0.95, champion_valid=1.0, candidate_failed=0.05, champion_failed=0.0)
    assert [g.passed for g in held] == [True, True]
    breached = guardrails(candidate_valid=0.9, champion_valid=1.0, candidate_failed=0.2, champion_failed=0.1)
    assert [(g.name, g.passed) for g in breached] == [("valid_action_share", False), ("failed_action_share", False)]


def test_a_suite_is_stored_once_and_a_changed_definition_under_its_name_is_refused(tmp_path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    suite = SuiteDefinition(name="s", scenarios=8, agents=2, ticks=3)
    digest = ensure_suite(store, suite)
    assert ensure_suite(store, suite) == digest and read_suite(store, "s") == suite
    stored = store.get_json("benchmarks/s/definition.json")
    assert stored["hash"] == digest and stored["seeds"] == suite.seeds
    with pytest.raises(SuiteChanged, match="'s' is stored with another definition .* differs in scenarios"):
        ensure_suite(store, SuiteDefinition(name="s", scenarios=9, agents=2, ticks=3))
    assert store.get_json("benchmarks/s/definition.json") == stored  # nothing overwritten
    assert ensure_suite(store, SuiteDefinition(name="s2", scenarios=9, agents=2, ticks=3)) != digest
    with pytest.raises(ValueError, match="leave the range reserved"):
        SuiteDefinition(name="x", scenarios=8, agents=2, ticks=3, first_seed=7)


def test_simulate_refuses_the_seeds_reserved_for_evaluation(tmp_path, empty_sqlite, capsys) -> None:
    tables.metadata.create_all(empty_sqlite)
    with pytest.raises(ReservedSeed, match="reserved for the evaluation benchmark"):
        simulate(empty_sqlite, hours=1, agents=2, seed=EVALUATION_SEEDS.start, start=NOW)
    argv = ["simulate", "--database-url", empty_sqlite.url.render_as_string(hide_password=False), "--hours", "1",
            "--agents", "2", "--start", "2025-11-15T10:00", "--seed", str(EVALUATION_SEEDS.stop - 1)]
    assert main(argv) == 2
    assert capsys.readouterr().err == (f"babylon: seed {EVALUATION_SEEDS.stop - 1} is reserved for the evaluation "
                                       "benchmark (seeds 900,000,000 to 999,999,999 are never used for training "
                                       "data): pick another --seed\n")
    assert main([*argv[:-1], str(EVALUATION_SEEDS.start - 1)]) == 0  # just outside the range: simulated


def test_babylon_evaluate_refuses_an_unknown_version(tmp_path, empty_sqlite, capsys) -> None:
    tables.metadata.create_all(empty_sqlite)
    store = open_object_store((tmp_path / "objects").as_uri())
    assert not store.list_keys("")
    argv = ["evaluate", "v9.0.0", "--database-url", empty_sqlite.url.render_as_string(hide_password=False),
            "--storage-url", (tmp_path / "objects").as_uri()]
    assert main(argv) == 2
    assert capsys.readouterr().err == "babylon: no trained model has version 'v9.0.0'\n"
