"""`make demo`: the whole loop on the embedded profile, with nothing running beforehand.

Creates the store, simulates agents for a few hours ending two hours ago, runs `window_job` over
those windows as one run in the embedded Dagster instance (so `make dev` shows the runs, the assets
and their checks), prints the window table with what the assets found, then materializes
`base_model` (the first time: the tiny base is built and warm-started, a few minutes on a CPU) and
runs `training_job`, which trains and registers the next LoRA version.

Then the release: `evaluation_job` measures the new version against the model in service on the
held-out benchmark and prints its verdict; a version not judged worse starts as a canary on 10 % of
the agents (its adapter loaded by the local model and health-checked first); the last complete hour
is simulated with every agent answered by the version the deployment routes it to, scored by
`window_job`, and the regression watch's tick prints its decision on it. The demo compresses time:
the canary is recorded as started at the beginning of that hour (the hour it plays), so the watch,
here and in `make dev` afterwards, finds its traffic in the windows since the canary started.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from babylon_pipeline.assets.deployed_model import ASSET as DEPLOYED
from babylon_pipeline.assets.deployed_model import CHECK as ADAPTER_CHECK
from babylon_pipeline.assets.deployed_model import DEFAULT_FRACTION, deployment_metadata, health_metadata
from babylon_pipeline.assets.versions_report import ASSET as VERSIONS
from babylon_pipeline.assets.versions_report import versions_metadata
from babylon_pipeline.partitions import partition_key_of, window_partitions
from babylon_pipeline.profile import database_url
from babylon_pipeline.resources.inference import inference_resource_from_env
from babylon_pipeline.resources.notifier import notifier_resource_from_env
from babylon_pipeline.resources.object_store import object_store_resource_from_env
from babylon_pipeline.serving.current_json import write_current_json
from babylon_pipeline.serving.deploy import canary_refusal, deploy_canary
from babylon_pipeline.serving.inference import InferenceError
from babylon_pipeline.serving.state import read_deployment
from babylon_pipeline.sim import AlreadySimulated, simulate
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.registry import model_in_service, registered_model
from babylon_pipeline.store.training_data import readiness_snapshot
from babylon_pipeline.windowing.files import RULER_SCORES, read_window_json
from babylon_pipeline.windows import WINDOW, window_of, window_start


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--hours", type=int, default=6)
    parser.add_argument("--agents", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    start = window_start(window_of(datetime.now(UTC) - timedelta(hours=args.hours + 1)))
    windows = [window_of(start + WINDOW * h) for h in range(args.hours)]
    routed_hour = window_of(start + WINDOW * args.hours)  # the last complete hour: the canary plays it
    first_partition = window_partitions.get_first_partition_key()
    if first_partition is None or partition_key_of(windows[0]) < first_partition:
        parser.error(f"--hours {args.hours} reaches before the first window partition ({first_partition}); "
                     "set BABYLON_START (YYYY-MM-DD-HH:00) to an earlier hour")

    engine = make_engine(database_url())
    print(f"store: {upgrade(engine).action}")
    try:
        print(simulate(engine, hours=args.hours, agents=args.agents, seed=args.seed, start=start).describe())
    except AlreadySimulated as already:
        print(f"{already}; running window_job over them again (idempotent)")

    from babylon_pipeline.definitions import build_definitions

    defs = build_definitions()

    score_windows(defs, windows)

    store = object_store_resource_from_env().open()
    print(f"{'window':<17} {'groups':>6} {'judged':>6} {'trajectories':>12} {'outcome reward min/mean/max':>28}")
    for window_id in windows:
        scores = read_window_json(store, window_id, RULER_SCORES)
        outcome = [t["outcome_reward"] for g in scores["groups"].values() for t in g["trajectories"].values()] or [0.0]
        judged = sum(g["status"] == "scored" for g in scores["groups"].values())
        spread = f"{min(outcome):+.3f} / {sum(outcome) / len(outcome):+.3f} / {max(outcome):+.3f}"
        print(f"{window_id:<17} {len(scores['groups']):>6} {judged:>6} {len(outcome):>12} {spread:>28}")
    print(f"files: {object_store_resource_from_env().url}/training-data/")
    version = train(defs, engine)
    if version is not None and evaluate(defs, version):
        start_canary(engine, version, at=window_start(routed_hour))
    play_routed_hour(defs, engine, routed_hour, args)
    print("UI: make dev")
    engine.dispose()


def score_windows(defs: dg.Definitions, windows: Sequence[str]) -> None:
    """`window_job` over `windows` as one run, and what its checks found."""
    result = defs.resolve_job_def("window_job").execute_in_process(
        instance=dg.DagsterInstance.get(),
        tags={"dagster/asset_partition_range_start": partition_key_of(windows[0]),
              "dagster/asset_partition_range_end": partition_key_of(windows[-1])},
    )
    span = windows[0] if len(windows) == 1 else f"{windows[0]} .. {windows[-1]}"
    print(f"window_job over {span}: {'success' if result.success else 'FAILED'} (run {result.run_id})")
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)  # one result per check and window
    for c in result.get_asset_check_evaluations():
        outcomes[f"{c.asset_key.to_user_string()}.{c.check_name}"]["ok" if c.passed else c.severity.value] += 1
    print("checks: " + ", ".join(f"{name}=" + "/".join(f"{n} {what}" for what, n in sorted(counts.items()))
                                 for name, counts in outcomes.items()))


def materializations(result: dg.ExecuteInProcessResult, asset: str) -> list[dg.AssetMaterialization]:
    """`asset`'s own materializations in the run (its step also records `model_versions`)."""
    return [e for e in result.asset_materializations_for_node(asset) if e.asset_key == dg.AssetKey(asset)]


def train(defs: dg.Definitions, engine) -> str | None:
    """The version `training_job` trained and registered now; None when there was nothing new (or it failed)."""
    instance = dg.DagsterInstance.get()
    base = defs.resolve_job_def("base_model_job").execute_in_process(instance=instance)
    [event] = materializations(base, "base_model")
    figures = {k: v.value for k, v in event.metadata.items()}
    valid = "".join(f", {figures[key]:.0%} {what}" for key, what in (
        ("valid_action_share", "valid actions on held-out observations"),
        ("grounded_action_share", "naming markets, tickers or posts they were shown")) if key in figures)
    print(f"base_model: {figures['name']}, {figures['parameters']:,} parameters{valid} (run {base.run_id})")
    ready = readiness_snapshot(engine, datetime.now(UTC))
    if ready.trainable_groups == 0:
        served = model_in_service(engine)
        print(f"training_job: nothing new to train on; in service: {served.model_id + ' at ' + served.storage_path if served else 'none'}")
        return None
    result = defs.resolve_job_def("training_job").execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        print(f"training_job: FAILED (run {result.run_id}; `make dev` shows why)")
        return None
    [event] = materializations(result, "lora_checkpoint")
    figures = {k: v.value for k, v in event.metadata.items()}
    registered = registered_model(engine, figures["version"])  # a candidate: it serves once deployed
    gap = " -> ".join(f"{figures[k]:+.4f}" if k in figures else "n/a" for k in ("logprob_gap_before", "logprob_gap_after"))
    print(f"training_job: {figures['model_id']} from {figures['parent_version']}, {figures['steps']} GRPO steps on "
          f"{figures['batch_groups']} groups, log-prob gap {gap} (run {result.run_id})")
    print(f"stored at {registered.storage_path if registered else '?'}/")
    return figures["version"]


def evaluate(defs: dg.Definitions, version: str) -> bool:
    """`evaluation_job` for `version`, its verdict printed; whether its blocking check passed."""
    result = defs.resolve_job_def("evaluation_job").execute_in_process(
        instance=dg.DagsterInstance.get(), partition_key=version, raise_on_error=False)
    events = materializations(result, "model_evaluation") if result.success else []
    if not events:
        print(f"evaluation_job: {version} FAILED (run {result.run_id}; `make dev` shows why)")
        return False
    m = {k: v.value for k, v in events[0].metadata.items()}
    print(f"evaluation_job: {version} {m['verdict']} against {m['champion']} on {m['scenarios']} held-out scenarios: "
          f"reward difference {m['diff_mean']:+.4f} [{m['diff_low']:+.4f}, {m['diff_high']:+.4f}]; valid actions "
          f"{m['candidate_valid_share']:.0%} vs {m['champion_valid_share']:.0%}, grounded "
          f"{m['candidate_grounded_share']:.0%} vs {m['champion_grounded_share']:.0%}, trades "
          f"{m['candidate_trade_share']:.0%} vs {m['champion_trade_share']:.0%}"
          f"{'' if m['guardrails_passed'] else '; a guardrail is breached'} (run {result.run_id})")
    return bool(result.get_asset_check_evaluations()[0].passed)


def start_canary(engine, version: str, *, at: datetime) -> None:
    """`version` on `DEFAULT_FRACTION` of the agents, as `deploy_job` starts it, recorded as started `at`
    (the demo's compressed time); reported to the instance as `deployed_model` with its check."""
    if (refusal := canary_refusal(engine, version)) is not None:
        print(f"deploy: {version} not started: {refusal}")
        return
    with dg.build_resources({"object_store": object_store_resource_from_env(), "inference": inference_resource_from_env(),
                             "notifier": notifier_resource_from_env()}) as resources:
        store = resources.object_store.open()
        try:
            outcome = deploy_canary(engine, resources.inference.inference(store), version, DEFAULT_FRACTION,
                                    actor="make demo", reason="the demo's new version, evaluated not worse",
                                    alert=resources.notifier.send, now=at)
        except InferenceError as fault:
            print(f"deploy: {version} not started, the deployment is unchanged: {fault}")
            return
        write_current_json(store, outcome.deployment)
    instance = dg.DagsterInstance.get()
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=DEPLOYED, partition=version, metadata=deployment_metadata(engine, version, outcome.deployment)))
    instance.report_runless_asset_event(dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(DEPLOYED), check_name=ADAPTER_CHECK, passed=True, partition=version,
        metadata=health_metadata(outcome.health)))
    instance.report_runless_asset_event(dg.AssetMaterialization(
        asset_key=VERSIONS, description=f"after the demo started {version} as a canary",
        metadata=versions_metadata(engine)))
    deployment = outcome.deployment
    print(f"deploy: {version} is the canary on {deployment.canary_fraction:.0%} of the agents, "
          f"{deployment.in_service or 'the base'} serves the rest (its adapter answered "
          f"{outcome.health.actions}/{outcome.health.answers} health checks with an action)")


def play_routed_hour(defs: dg.Definitions, engine, hour: str, args: argparse.Namespace) -> None:
    """`hour` simulated with each agent answered by the version the deployment routes it to, scored, and the
    regression watch's tick on it."""
    from babylon_pipeline.serving.embedded import EmbeddedInference
    from babylon_pipeline.serving.routed_policy import RoutedPolicies

    store = object_store_resource_from_env().open()
    routed = RoutedPolicies(read_deployment(engine), EmbeddedInference(store, seed=args.seed).policy)
    try:
        summary = simulate(engine, hours=1, agents=args.agents, seed=args.seed, start=window_start(hour),
                           policy_for=routed)
        print(f"{summary.describe()}; agents routed by the deployment: {routed.describe()}")
    except AlreadySimulated as already:
        print(f"{already}; scoring it again (idempotent)")
    score_windows(defs, [hour])
    watch = defs.get_sensor_def("regression_watch_sensor")
    with dg.build_sensor_context(instance=dg.DagsterInstance.get(), sensor_name=watch.name,
                                 resources=defs.resources) as context:
        tick = watch(context)
    print(f"regression watch: {tick.skip_message}")


if __name__ == "__main__":
    main()
