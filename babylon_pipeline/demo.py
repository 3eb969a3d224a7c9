"""`make demo`: the whole loop so far on the embedded profile, with nothing running beforehand.

Creates the store, simulates agents for the last few hours, runs `window_job` over those windows as
one run in the embedded Dagster instance (so `make dev` shows the runs, the assets and their
checks), prints the window table with what the assets found, then materializes `base_model` (the
first time: the tiny base is built and warm-started, a few minutes on a CPU) and runs
`training_job`, which trains and registers the next LoRA version, and prints where it is stored.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from babylon_pipeline.partitions import partition_key_of, window_partitions
from babylon_pipeline.profile import database_url
from babylon_pipeline.resources.object_store import object_store_resource_from_env
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

    job = defs.resolve_job_def("window_job")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.get(),
        tags={"dagster/asset_partition_range_start": partition_key_of(windows[0]),
              "dagster/asset_partition_range_end": partition_key_of(windows[-1])},
    )
    print(f"window_job over {windows[0]} .. {windows[-1]}: {'success' if result.success else 'FAILED'} (run {result.run_id})")
    outcomes: dict[str, Counter[str]] = defaultdict(Counter)  # one result per check and window
    for c in result.get_asset_check_evaluations():
        outcomes[f"{c.asset_key.to_user_string()}.{c.check_name}"]["ok" if c.passed else c.severity.value] += 1
    print("checks: " + ", ".join(f"{name}=" + "/".join(f"{n} {what}" for what, n in sorted(counts.items()))
                                 for name, counts in outcomes.items()))

    store = object_store_resource_from_env().open()
    print(f"{'window':<17} {'groups':>6} {'judged':>6} {'trajectories':>12} {'outcome reward min/mean/max':>28}")
    for window_id in windows:
        scores = read_window_json(store, window_id, RULER_SCORES)
        outcome = [t["outcome_reward"] for g in scores["groups"].values() for t in g["trajectories"].values()] or [0.0]
        judged = sum(g["status"] == "scored" for g in scores["groups"].values())
        spread = f"{min(outcome):+.3f} / {sum(outcome) / len(outcome):+.3f} / {max(outcome):+.3f}"
        print(f"{window_id:<17} {len(scores['groups']):>6} {judged:>6} {len(outcome):>12} {spread:>28}")
    print(f"files: {object_store_resource_from_env().url}/training-data/")
    train(defs, engine)
    print("UI: make dev")
    engine.dispose()


def train(defs: dg.Definitions, engine) -> None:
    instance = dg.DagsterInstance.get()
    base = defs.resolve_job_def("base_model_job").execute_in_process(instance=instance)
    [event] = base.asset_materializations_for_node("base_model")
    figures = {k: v.value for k, v in event.metadata.items()}
    valid = "".join(f", {figures[key]:.0%} {what}" for key, what in (
        ("valid_action_share", "valid actions on held-out observations"),
        ("grounded_action_share", "naming only what they were shown")) if key in figures)
    print(f"base_model: {figures['name']}, {figures['parameters']:,} parameters{valid} (run {base.run_id})")
    ready = readiness_snapshot(engine, datetime.now(UTC))
    if ready.trainable_groups == 0:
        served = model_in_service(engine)
        print(f"training_job: nothing new to train on; in service: {served.model_id + ' at ' + served.storage_path if served else 'none'}")
        return
    result = defs.resolve_job_def("training_job").execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        print(f"training_job: FAILED (run {result.run_id}; `make dev` shows why)")
        return
    [event] = result.asset_materializations_for_node("lora_checkpoint")
    figures = {k: v.value for k, v in event.metadata.items()}
    registered = registered_model(engine, figures["version"])  # a candidate: it serves once deployed
    gap = " -> ".join(f"{figures[k]:+.4f}" if k in figures else "n/a" for k in ("logprob_gap_before", "logprob_gap_after"))
    print(f"training_job: {figures['model_id']} from {figures['parent_version']}, {figures['steps']} GRPO steps on "
          f"{figures['batch_groups']} groups, log-prob gap {gap} (run {result.run_id})")
    print(f"stored at {registered.storage_path if registered else '?'}/")


if __name__ == "__main__":
    main()
