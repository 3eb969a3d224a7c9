"""The `babylon` command: set up the store, simulate agents, look at windows, deploy versions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

import sqlalchemy as sa

from babylon_pipeline.profile import database_url
from babylon_pipeline.store.db import InvalidDatabaseUrl, StoreWithoutTables, make_engine, parse_database_url, redacted
from babylon_pipeline.windows import InvalidWindowId, parse_moment, to_utc_naive, window_of, window_start


def _window_id(text: str) -> str:
    try:
        window_start(text)
    except InvalidWindowId as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _hour(text: str):
    """A window's start: a UTC date and time on the hour (a window is one whole hour, never a part)."""
    try:
        moment = parse_moment(text)
    except InvalidWindowId as error:
        raise argparse.ArgumentTypeError(f"{error} (want YYYY-MM-DDTHH:00, UTC)") from None
    if (moment.minute, moment.second, moment.microsecond) != (0, 0, 0):
        raise argparse.ArgumentTypeError(f"not on the hour: {text!r} (a window starts on the hour, e.g. "
                                         f"{window_of(moment)})")
    return moment


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    database_help = "trajectory store (default: $DATABASE_URL, else the embedded SQLite store)"
    parser = argparse.ArgumentParser(prog="babylon", description=__doc__)
    parser.add_argument("--database-url", help=database_help)
    # after the subcommand too; SUPPRESS: a subcommand without the flag keeps the one given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=argparse.SUPPRESS, help=database_help)
    commands = parser.add_subparsers(dest="command", required=True)

    db = commands.add_parser("db", help="database schema")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    db_commands.add_parser("upgrade", parents=[common], help="create the Babylon tables, or adopt the app's")

    simulate = commands.add_parser("simulate", parents=[common], help="write simulated agent windows")
    simulate.add_argument("--hours", type=_positive, default=6)
    simulate.add_argument("--agents", type=_positive, default=20)
    simulate.add_argument("--seed", type=int, default=7)
    simulate.add_argument("--start", type=_hour, help="first window's start, UTC, on the hour (default: the "
                                                       "last --hours complete hours)")
    simulate.add_argument("--steps", type=_positive, default=5, help="ticks per agent and window")
    simulate.add_argument("--policy", choices=("scripted", "openai", "local"), default="scripted",
                          help="scripted agents of mixed skill; an OpenAI-compatible endpoint ($BABYLON_SIM_*); "
                               "or the pipeline's own model (base_model plus a trained version)")
    simulate.add_argument("--model-version", help="with --policy local: vX.Y.Z, or `base` for the bare base "
                                                  "(default: the model in service, else the bare base)")
    simulate.add_argument("--routed", action="store_true",
                          help="with --policy local or openai: each agent acts with the version the deployment routes "
                               "it to (canary or in service; openai: the inference server $BABYLON_INFERENCE_*)")
    simulate.add_argument("--temperature", type=float, default=0.7, help="with --policy local or openai")
    simulate.add_argument("--storage-url", help="with --policy local: the object store (default: "
                                                "$BABYLON_STORAGE_URL, else the embedded one)")
    simulate.add_argument("--no-create-users", dest="create_users", action="store_false",
                          help='in the app\'s database, refuse agents that are not "User" rows instead of creating them')

    windows = commands.add_parser("windows", parents=[common], help="a table of the windows in the store")
    windows.add_argument("--since", type=_window_id, help="first window to list")

    report = commands.add_parser("window-report", parents=[common], help="one window's figures")
    report.add_argument("window", type=_window_id)
    report.add_argument("--json", action="store_true", help="print one JSON object")
    _deployment_commands(commands, common)

    evaluate = commands.add_parser("evaluate", parents=[common], help="a model version against the model in service "
                                                                        "on the held-out benchmark")
    evaluate.add_argument("version", help="vX.Y.Z, a registered version")
    evaluate.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    evaluate.add_argument("--storage-url", help="the object store (default: $BABYLON_STORAGE_URL, else the "
                                                "embedded one)")
    evaluate.add_argument("--suite", help="benchmark suite name (a new size needs a new name)")
    evaluate.add_argument("--scenarios", type=_positive)
    evaluate.add_argument("--agents", type=_positive)
    evaluate.add_argument("--ticks", type=_positive)
    evaluate.add_argument("--max-new-tokens", type=_positive)
    return parser


def _deployment_commands(commands, common: argparse.ArgumentParser) -> None:
    """`babylon models | deploy | promote | rollback | route`: the deployment state by hand."""
    storage = argparse.ArgumentParser(add_help=False)
    storage.add_argument("--storage-url", help="where deployments/current.json is published (default: "
                                                "$BABYLON_STORAGE_URL, else the embedded store)")
    storage.add_argument("--reason", default="", help="why, for the deployment history")
    commands.add_parser("models", parents=[common], help="a table of the versions, their stage and traffic share")
    deploy = commands.add_parser("deploy", parents=[common, storage], help="start an evaluated version as a canary")
    deploy.add_argument("version")
    deploy.add_argument("--fraction", type=float, default=0.1, help="share of agents on the canary (default 0.1)")
    commands.add_parser("promote", parents=[common, storage], help="the canary serves all agents")
    rollback = commands.add_parser("rollback", parents=[common, storage],
                                   help="take the canary off, or put the previous version back in service")
    rollback.add_argument("--to", help="a version that served before (default: the one the current replaced)")
    route = commands.add_parser("route", parents=[common], help="the version an agent is served")
    route.add_argument("agent_id")
    route.add_argument("--json", action="store_true", help="print one JSON object")


def _upgrade(engine, url: str) -> int:
    from babylon_pipeline.store.migrate import upgrade

    if (schema := parse_database_url(url).schema) is not None:  # as Prisma does: the named schema is made
        with engine.begin() as connection:
            connection.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
    result = upgrade(engine)
    print(f"{result.action}: {redacted(url)} at revision {result.revision}")
    return 0


def _simulate(engine, args) -> int:
    from datetime import UTC, datetime, timedelta

    from babylon_pipeline.serving.inference import InferenceError
    from babylon_pipeline.sim import AgentsAreNotUsers, AlreadySimulated, simulate
    from babylon_pipeline.store.recorder import RecorderError

    start = args.start or window_start(window_of(datetime.now(UTC) - timedelta(hours=args.hours)))
    try:
        _refuse_future(start, args.hours)
        routed = _routed(engine, args) if args.routed else None
        policy = None if routed else _policy(engine, args)
        summary = simulate(engine, hours=args.hours, agents=args.agents, seed=args.seed, start=start,
                           steps_per_window=args.steps,
                           policy_for=routed or (None if policy is None else lambda agent: policy),
                           create_users=args.create_users)
    except (AlreadySimulated, AgentsAreNotUsers, RecorderError, ValueError, FileNotFoundError, InferenceError) as error:
        print(f"babylon: {error}", file=sys.stderr)
        return 2
    print(summary.describe())
    if routed:
        print(f"agents routed by the deployment: {routed.describe()}")
    return 0


def _routed(engine, args):
    """`--routed`: a policy per version, each agent answered by the version the deployment routes it to."""
    from babylon_pipeline.serving.routed_policy import RoutedPolicies
    from babylon_pipeline.serving.state import read_deployment

    if args.policy not in ("local", "openai") or args.model_version:
        raise ValueError("--routed needs --policy local or openai and no --model-version: the deployment picks "
                         "each agent's version")
    if args.policy == "openai":
        from babylon_pipeline.serving.inference import ServerInference

        server = ServerInference.from_env()
        return RoutedPolicies(read_deployment(engine), lambda v: server.policy(v, temperature=args.temperature))
    from babylon_pipeline.resources.object_store import embedded_storage_url
    from babylon_pipeline.serving.embedded import EmbeddedInference
    from babylon_pipeline.storage import open_object_store

    store = open_object_store(args.storage_url or os.environ.get("BABYLON_STORAGE_URL") or embedded_storage_url())
    local = EmbeddedInference(store, temperature=args.temperature, seed=args.seed)
    return RoutedPolicies(read_deployment(engine), local.policy)


def _refuse_future(start, hours: int) -> None:
    """Only hours that are over are windows (Dagster's partitions end at the last complete hour)."""
    from datetime import UTC, datetime

    from babylon_pipeline.windows import WINDOW

    end = start + WINDOW * hours
    if end > to_utc_naive(datetime.now(UTC)):
        raise ValueError(f"--start {window_of(start)} with --hours {hours} ends at {window_of(end)}, which is not over "
                         f"yet: simulate past hours only")


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


def _evaluate(engine, args) -> int:
    from dataclasses import replace

    from babylon_pipeline.evaluation import (
        EvaluationSettings,
        SuiteChanged,
        comparison_table,
        eval_metrics,
        evaluate_version,
    )
    from babylon_pipeline.model.base_record import BaseModelMissing
    import dagster as dg

    from babylon_pipeline.resources.inference import inference_resource_from_env
    from babylon_pipeline.resources.object_store import embedded_storage_url
    from babylon_pipeline.storage import open_object_store
    from babylon_pipeline.store.evaluations import UnknownVersion

    chosen = {"suite": args.suite, "scenarios": args.scenarios, "agents": args.agents, "ticks": args.ticks,
              "max_new_tokens": args.max_new_tokens}
    store = open_object_store(args.storage_url or os.environ.get("BABYLON_STORAGE_URL") or embedded_storage_url())
    progress = (lambda message: print(message, file=sys.stderr)) if args.json else print
    try:
        settings = replace(EvaluationSettings(), **{k: v for k, v in chosen.items() if v is not None})
        with inference_resource_from_env().process_config_and_initialize_cm() as inference:
            server = inference.policy_server()
        evaluation = evaluate_version(engine, store, args.version, settings, server=server, log=progress)
    except (UnknownVersion, BaseModelMissing, SuiteChanged, ValueError, FileNotFoundError) as error:
        print(f"babylon: {error}", file=sys.stderr)
        return 2
    except dg.Failure as unusable:  # a half-configured inference server
        print(f"babylon: {unusable.description}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(eval_metrics(evaluation)))
        return 0
    interval = evaluation.interval
    print(comparison_table(evaluation))
    print(f"{args.version}: {evaluation.verdict} against {evaluation.champion or 'the base'} (reward difference "
          f"{interval.mean:+.4f}, {interval.confidence:.0%} interval [{interval.low:+.4f}, {interval.high:+.4f}]); "
          f"guardrails {'held' if evaluation.guardrails_passed else 'breached'}")
    return 0


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
        print(_figures_table(report))
    return 0


def _figures_table(report: dict) -> str:
    """One figure a line, nested figures under dotted names (`quarantined.by_reason.invalid_json`)."""
    import pandas as pd

    def flat(prefix: str, value) -> dict:
        if isinstance(value, dict):
            return {k: v for key, inner in value.items()
                    for k, v in flat(f"{prefix}.{key}" if prefix else key, inner).items()}
        return {prefix: value}

    figures = {name: str(value) for name, value in flat("", report).items()}
    table = pd.DataFrame({"figure": list(figures), "value": list(figures.values())})
    left = {column: f"{{:<{max(map(len, table[column]))}}}".format for column in table}  # pandas right-aligns text
    return table.to_string(index=False, justify="left", formatters=left)


class _StoreUnusable(Exception):
    """The database refused a command's queries; the message names the store by its redacted URL."""


def _run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    url = database_url(args.database_url)
    engine = make_engine(url)
    try:
        if args.command == "db":
            return _upgrade(engine, url)
        if args.command == "simulate":
            return _simulate(engine, args)
        if args.command == "windows":
            return _windows(engine, args)
        if args.command in ("models", "deploy", "promote", "rollback", "route"):
            from babylon_pipeline.serving.commands import run_deployment_command

            return run_deployment_command(engine, args)
        if args.command == "evaluate":
            return _evaluate(engine, args)
        return _window_report(engine, args)
    except (sa.exc.OperationalError, sa.exc.ProgrammingError) as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else type(error).__name__
        hint = " (run `babylon db upgrade`?)" if "table" in reason or "relation" in reason else ""
        raise _StoreUnusable(f"the trajectory store at {redacted(url)} cannot be used: {reason}{hint}") from None
    finally:
        engine.dispose()


def _user_error(error: Exception) -> str | None:
    """The one line to show for a user's mistake (bad URL, missing bucket or credentials, a schema that
    cannot be adopted...); None for a bug, which keeps its traceback. Never a password or a key."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    from babylon_pipeline.serving.inference import InferenceError
    from babylon_pipeline.serving.state import DeploymentRefused
    from babylon_pipeline.store.migrate import SchemaMismatch

    if isinstance(error, (_StoreUnusable, InvalidDatabaseUrl, StoreWithoutTables)):
        return str(error)
    if isinstance(error, DeploymentRefused):
        return f"refused, nothing was changed: {error}"
    if isinstance(error, InferenceError):
        return f"nothing was changed, the adapter failed: {error}"
    if isinstance(error, SchemaMismatch):
        return f"db upgrade refused, nothing was changed: {error}"
    if isinstance(error, NoCredentialsError):
        return ("no AWS credentials for the object store: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or run with an instance role)")
    if isinstance(error, EndpointConnectionError):
        return f"the object store cannot be reached: {error}"
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        if details.get("Code") == "NoSuchBucket":
            bucket = details.get("BucketName", "")
            return f"the object store's bucket {bucket!r} does not exist: create it, or fix the URL"
        return f"the object store refused {error.operation_name}: {details.get('Code')} ({details.get('Message', '')})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """`babylon`: a user's mistake ends in one `babylon: ...` line on stderr and exit code 2, not a traceback."""
    try:
        code = _run(argv)
        sys.stdout.flush()  # a reader gone shows here, not as an "Exception ignored" at exit
        return code
    except BrokenPipeError:  # `babylon windows | head`: the reader has gone, so has the rest of the output
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as error:
        if (message := _user_error(error)) is None:
            raise
        print(f"babylon: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
