"""The `babylon` command: set up the store, simulate agents, and look at windows."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from babylon_pipeline.profile import database_url
from babylon_pipeline.store.db import make_engine, redacted
from babylon_pipeline.windows import InvalidWindowId, parse_moment, window_of, window_start


def _window_id(text: str) -> str:
    try:
        window_start(text)
    except InvalidWindowId as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _moment(text: str):
    try:
        return parse_moment(text)
    except InvalidWindowId as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer: {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="babylon", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url", help="trajectory store (default: $DATABASE_URL, else the embedded SQLite store)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", parents=[common], help="create the Babylon tables, or adopt the app's")

    simulate = commands.add_parser("simulate", parents=[common], help="write simulated agent windows")
    simulate.add_argument("--hours", type=_positive, default=6)
    simulate.add_argument("--agents", type=_positive, default=20)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--start", type=_moment, help="first window's start, UTC (default: 6 hours ago)")
    simulate.add_argument("--steps", type=_positive, default=5, help="ticks per agent and window")
    simulate.add_argument("--policy", choices=("scripted", "openai", "local"), default="scripted",
                          help="scripted agents of mixed skill; an OpenAI-compatible endpoint ($BABYLON_SIM_*); "
                               "or the pipeline's own model (base_model plus a trained version)")
    simulate.add_argument("--model-version", help="with --policy local: vX.Y.Z, or `base` for the bare base "
                                                  "(default: the model in service, else the bare base)")
    simulate.add_argument("--temperature", type=float, default=0.7, help="with --policy local or openai")
    simulate.add_argument("--storage-url", help="with --policy local: the object store (default: "
                                                "$BABYLON_STORAGE_URL, else the embedded one)")

    windows = commands.add_parser("windows", parents=[common], help="a table of the windows in the store")
    windows.add_argument("--since", type=_window_id, help="first window to list")

    report = commands.add_parser("window-report", parents=[common], help="one window's figures")
    report.add_argument("window", type=_window_id)
    report.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _upgrade(engine) -> int:
    from babylon_pipeline.store.migrate import upgrade

    result = upgrade(engine)
    print(f"{result.action}: {redacted(str(engine.url))} at revision {result.revision}")
    return 0


def _simulate(engine, args) -> int:
    from datetime import UTC, datetime, timedelta

    from babylon_pipeline.sim import AlreadySimulated, simulate

    start = args.start or window_start(window_of(datetime.now(UTC) - timedelta(hours=args.hours)))
    try:
        policy = _policy(engine, args)
        summary = simulate(engine, hours=args.hours, agents=args.agents, seed=args.seed, start=start,
                           steps_per_window=args.steps, policy_for=None if policy is None else lambda agent: policy)
    except (AlreadySimulated, ValueError, FileNotFoundError) as error:
        print(f"babylon: {error}", file=sys.stderr)
        return 2
    print(summary.describe())
    return 0


def _policy(engine, args):
    """One policy object for every agent, or None for the scripted mix."""
    if args.policy == "openai":
        from babylon_pipeline.sim.openai_policy import OpenAIChatPolicy

        return OpenAIChatPolicy.from_env(temperature=args.temperature)
    if args.policy != "local":
        return None
    from babylon_pipeline.model.base_record import read_base_record
    from babylon_pipeline.model.policy import LocalModelPolicy
    from babylon_pipeline.resources.object_store import embedded_storage_url
    from babylon_pipeline.storage import open_object_store

    store = open_object_store(args.storage_url or os.environ.get("BABYLON_STORAGE_URL") or embedded_storage_url())
    base = read_base_record(store)
    version = _model_version(engine, base, args.model_version)
    policy = LocalModelPolicy.from_store(store, base_name=base.name, version=version, base=base.spec,
                                         temperature=args.temperature, context_tokens=base.context_tokens,
                                         seed=args.seed)
    print(f"agents act with {version or base.name} (temperature {args.temperature})")
    return policy


def _model_version(engine, base, wanted: str | None) -> str | None:
    """The adapter `--model-version` names (None: the bare base), refused unless registered on this base."""
    from babylon_pipeline.storage.keys import BASE_MODEL
    from babylon_pipeline.store.registry import versions_on_base
    from babylon_pipeline.windowing.training_run import served_on_base

    if wanted == BASE_MODEL:
        return None
    if wanted is None:
        served = served_on_base(engine, base)
        return served.version if served else None
    known = versions_on_base(engine, base.name)
    if wanted not in known:
        raise ValueError(f"unknown --model-version {wanted!r}: on base {base.name} the known versions are "
                         f"{', '.join([BASE_MODEL, *known])}")
    return wanted


def _windows(engine, args) -> int:
    from babylon_pipeline.store.report import window_index, window_report

    index = window_index(engine, since=args.since)
    print(f"{'window':<17} {'trajectories':>12} {'agents':>7} {'scenarios':>9} {'quarantined':>11}")
    for window_id in index.windows:
        r = window_report(engine, window_id)
        print(f"{window_id:<17} {r.trajectories:>12} {len(r.agents):>7} {len(r.scenarios):>9} {r.quarantined:>11}")
    for window_id, count in sorted(index.malformed_window_ids.items()):
        print(f"warning: {count} rows have the malformed windowId {window_id!r} and belong to no window", file=sys.stderr)
    if not index.windows:
        print("(no windows: run `babylon simulate` or point --database-url at the Babylon database)")
    return 0


def _window_report(engine, args) -> int:
    from babylon_pipeline.store.report import window_report

    report = window_report(engine, args.window).to_json_dict()
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:<36} {value}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    url = database_url(args.database_url)
    engine = make_engine(url)
    try:
        if args.command == "db":
            return _upgrade(engine)
        if args.command == "simulate":
            return _simulate(engine, args)
        if args.command == "windows":
            return _windows(engine, args)
        return _window_report(engine, args)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        hint = " (run `babylon db upgrade`?)" if "table" in reason or "relation" in reason else ""
        print(f"babylon: the trajectory store at {redacted(url)} cannot be used: {reason}{hint}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
