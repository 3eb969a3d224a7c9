"""The `babylon` command, run as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import sqlalchemy as sa

from babylon_pipeline.cli import main
from babylon_pipeline.partitions import window_id_of
from babylon_pipeline.resources.trajectory_store import TrajectoryStore
from babylon_pipeline.sim.world import SimulationSummary
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import InvalidDatabaseUrl, StoreWithoutTables, make_engine, parse_database_url
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.store.recorder import TrajectoryRecorder
from babylon_pipeline.store.report import window_index
from babylon_pipeline.windows import InvalidWindowId, window_of
from tests.window_data import add_malformed_rows, record_window

W = "2025-11-15T10:00"


def test_window_report_json_has_the_documented_keys(empty_db, capsys) -> None:
    upgrade(empty_db)
    record_window(empty_db, W, scenarios=2, agents=3)
    add_malformed_rows(empty_db, W, 2)
    url = empty_db.url.render_as_string(hide_password=False)

    assert main(["window-report", W, "--json", "--database-url", url]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"window", "trajectories", "valid", "quarantined", "agents", "scenarios", "steps",
            "steps_with_llm_calls", "llm_calls"} <= set(report)
    assert (report["window"], report["trajectories"], report["valid"]) == (W, 8, 6)
    assert report["quarantined"] == {"count": 2, "by_reason": {"invalid_json": 2}}
    assert (report["agents"], report["scenarios"], report["steps"], report["steps_with_llm_calls"], report["llm_calls"]) == (3, 2, 18, 18, 18)

    assert main(["windows", "--database-url", url]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["window", "trajectories", "agents", "scenarios", "quarantined"]
    assert table[1].split() == [W, "8", "3", "2", "2"]
    assert main(["windows", "--since", "2025-11-15T11:00", "--database-url", url]) == 0
    assert W not in capsys.readouterr().out


def test_bad_input_is_a_clear_error(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["window-report", "2025-11-15T10:30"])
    assert exit_info.value.code == 2 and "not a window id" in capsys.readouterr().err

    assert main(["windows"]) == 2  # the embedded store exists but has no tables yet
    assert "babylon db upgrade" in capsys.readouterr().err

    assert main(["windows", "--database-url", "postgresql://postgres:hunter2@127.0.0.1:1/x"]) == 2
    error = capsys.readouterr().err
    assert "cannot be used" in error and "hunter2" not in error


# --- issue 19: Prisma URLs, one-line errors, configuration traps, small things ---------------------


def _url(engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def test_prisma_schema_option_is_the_search_path(empty_postgres, capsys) -> None:
    """The app's `DATABASE_URL` ends in `?schema=...`: the tables live in that schema, not in public."""
    url = f"{_url(empty_postgres)}?schema=babylon_app"
    assert main(["db", "upgrade", "--database-url", url]) == 0
    assert "?schema=babylon_app" in capsys.readouterr().out
    assert main(["simulate", "--hours", "1", "--agents", "2", "--start", W, "--database-url", url]) == 0
    assert main(["--database-url", url, "windows"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[0] == W
    inspector = sa.inspect(empty_postgres)
    assert "trajectories" in inspector.get_table_names(schema="babylon_app")
    assert "trajectories" not in inspector.get_table_names(schema="public")

    assert window_index(TrajectoryStore(database_url=url).engine()).windows == [W]  # and so does the resource

    recorder = TrajectoryRecorder(make_engine(url))  # the recorder SDK reads the same URL the same way
    with recorder.trajectory("agent-x", window_id=W) as t:
        t.start_step({"agentBalance": 1.0})
        t.complete_step({"actionType": "WAIT", "success": True}, reward=0.0)
    with empty_postgres.connect() as conn:
        written = conn.execute(sa.text("""SELECT count(*) FROM babylon_app.trajectories WHERE "agentId" = 'agent-x'"""))
        assert written.scalar() == 1


def test_database_urls_that_cannot_be_read_are_refused_clearly() -> None:
    assert parse_database_url("postgresql://u:p@h/db?schema=app&sslmode=disable").schema == "app"
    assert "schema" not in str(parse_database_url("postgresql://u:p@h/db?schema=app").url)
    for bad, reason in [("postgress://u:hunter2@h/db", "unknown database URL scheme 'postgress'"),
                        ("hunter2 is no url", "not a database URL"),
                        ("sqlite:////tmp/x.db?schema=app", "?schema= is a Postgres option"),
                        ("postgresql://u:hunter2@h/db?schema=a&schema=b", "one ?schema=")]:
        with pytest.raises(InvalidDatabaseUrl) as refused:
            parse_database_url(bad)
        assert reason in str(refused.value) and "hunter2" not in str(refused.value)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("babylon: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_user_mistakes_are_one_line_and_exit_code_2(tmp_path, empty_sqlite, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    assert main(["windows", "--database-url", "postgress://postgres:hunter2@127.0.0.1/x"]) == 2
    error = _one_line_error(capsys)
    assert "postgress" in error and "hunter2" not in error

    tables.metadata.create_all(empty_sqlite)  # the app's tables, one column short
    with empty_sqlite.begin() as conn:
        conn.exec_driver_sql('ALTER TABLE trajectories DROP COLUMN "aiJudgeReasoning"')
    assert main(["db", "upgrade", "--database-url", _url(empty_sqlite)]) == 2
    assert "aiJudgeReasoning" in _one_line_error(capsys)


def test_object_store_mistakes_are_one_line(tmp_path, s3_endpoint, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    local = ["simulate", "--hours", "1", "--agents", "2", "--start", W, "--policy", "local", "--storage-url"]
    assert main([*local, "s3://no-such-bucket-here"]) == 2
    assert "bucket 'no-such-bucket-here' does not exist" in _one_line_error(capsys)

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)  # boto3 keeps the first session's credentials
    assert main([*local, "s3://no-such-bucket-here"]) == 2
    assert "no AWS credentials" in _one_line_error(capsys)


def test_a_closed_pipe_ends_quietly(tmp_path) -> None:
    """`babylon windows | head`: the reader leaves early; no BrokenPipeError traceback, exit code 0."""
    env = {**os.environ, "BABYLON_HOME": str(tmp_path), "PYTHONPATH": os.getcwd()}
    env.pop("DATABASE_URL", None)
    db_upgrade = [sys.executable, "-m", "babylon_pipeline.cli", "db", "upgrade"]
    subprocess.run(db_upgrade, env=env, check=True, capture_output=True)
    child = subprocess.Popen([sys.executable, "-m", "babylon_pipeline.cli", "windows"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # before the child writes: its first write meets a pipe with no reader
    err = child.stderr.read().decode()
    assert child.wait() == 0 and err == ""


def test_recorder_on_a_store_without_tables_is_one_clear_error(empty_db) -> None:
    recorder = TrajectoryRecorder(empty_db)
    with pytest.raises(StoreWithoutTables, match="run `babylon db upgrade` first") as refused:
        with recorder.trajectory("agent-7", window_id=W) as t:
            t.start_step({"agentBalance": 1.0})
            t.complete_step({"actionType": "WAIT", "success": True}, reward=0.0)
            t.finish()
    assert refused.value.__suppress_context__  # one error, not the driver's chained under it
    assert refused.value.__context__ is None or isinstance(refused.value.__context__, sa.exc.DBAPIError)
    assert "trajectories" in str(refused.value)


def test_database_url_before_the_subcommand(empty_sqlite, capsys) -> None:
    upgrade(empty_sqlite)
    record_window(empty_sqlite, W, scenarios=1, agents=1)
    assert main(["--database-url", _url(empty_sqlite), "windows"]) == 0
    assert W in capsys.readouterr().out


def test_small_input_mistakes_say_what_is_wrong(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path))
    for argv, said in [(["simulate", "--hours", "abc"], "not a positive whole number: 'abc'"),
                       (["simulate", "--agents", "0"], "not a positive whole number: '0'"),
                       (["simulate", "--start", "2025-11-15T09:30"], "not on the hour: '2025-11-15T09:30'"),
                       (["simulate", "--start", "09:30"], "not a date and time")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and said in err and "_positive" not in err, err

    future = window_of(datetime.now(UTC) + timedelta(hours=2))
    assert main(["simulate", "--hours", "1", "--start", future]) == 2
    assert "not over yet" in _one_line_error(capsys)
    this_hour = window_of(datetime.now(UTC))
    assert main(["simulate", "--hours", "1", "--start", this_hour]) == 2
    _one_line_error(capsys)


def test_window_report_without_json_is_a_table(empty_sqlite, capsys) -> None:
    upgrade(empty_sqlite)
    record_window(empty_sqlite, W, scenarios=2, agents=3)
    add_malformed_rows(empty_sqlite, W, 2)
    assert main(["window-report", W, "--database-url", _url(empty_sqlite)]) == 0
    out = capsys.readouterr().out
    assert "{" not in out
    assert out.splitlines()[0].split() == ["figure", "value"]
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines()[1:]}
    assert rows["trajectories"] == "8" and rows["quarantined.count"] == "2"
    assert rows["quarantined.by_reason.invalid_json"] == "2"


def test_counts_are_spelled_in_the_singular_for_one() -> None:
    summary = SimulationSummary(windows=[W], trajectories=1, steps=2, llm_calls=1, failed_actions=0, market_outcomes=1)
    said = summary.describe()
    assert said.startswith(f"simulated 1 window ({W} .. {W}): 1 trajectory, 2 steps, 1 LLM call, 0 failed actions, "
                           "1 market outcome"), said


def test_a_window_id_given_as_partition_key_gets_a_hint() -> None:
    with pytest.raises(InvalidWindowId, match="its partition key is '2025-11-15-10:00'"):
        window_id_of(W)


REPO = Path(__file__).resolve().parent.parent


def _documented_recorder_snippet(url: str) -> str:
    """The recorder example of docs/store.md, its `...` placeholders filled in."""
    text = (REPO / "docs" / "store.md").read_text()
    snippet = text.split("## The recorder SDK", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert "window_id=" in snippet and "babylon db upgrade" in snippet
    return (snippet.replace('"postgresql://..."', repr(url)).replace("{...}", "{}")
            .replace("system_prompt=...", "system_prompt='s'").replace("user_prompt=...", "user_prompt='u'")
            .replace("response=...", "response='BUY'"))


def test_the_documented_recorder_snippet_needs_db_upgrade_and_says_so_once(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'babylon.db'}"
    (tmp_path / "snippet.py").write_text(_documented_recorder_snippet(url))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    before = subprocess.run([sys.executable, str(tmp_path / "snippet.py")], env=env, capture_output=True, text=True)
    assert before.returncode == 1 and before.stderr.count("Traceback") == 1, before.stderr
    assert "StoreWithoutTables" in before.stderr and "run `babylon db upgrade` first" in before.stderr

    assert main(["db", "upgrade", "--database-url", url]) == 0
    after = subprocess.run([sys.executable, str(tmp_path / "snippet.py")], env=env, capture_output=True, text=True)
    assert after.returncode == 0, after.stderr
    with make_engine(url).connect() as conn:
        assert conn.execute(sa.text('SELECT "windowId" FROM trajectories')).scalars().all() == [W]


def test_make_help_tells_what_make_demo_does() -> None:
    said = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    demo = said.split("make demo", 1)[1].split("make dev", 1)[0]
    assert "window_job" in demo and "base model" in demo and "LoRA" in demo


def test_trust_auth_needs_an_empty_dagster_pg_password_and_it_is_documented() -> None:
    """Dagster refuses an unset `env:` variable; empty is what trust auth wants (the production instance
    test in test_definitions.py opens the committed dagster.yaml on this machine's trust-auth Postgres so)."""
    assert "export DAGSTER_PG_PASSWORD=" in (REPO / "dagster.yaml").read_text()
    assert "`DAGSTER_PG_PASSWORD=` empty for trust auth" in (REPO / "docs" / "configuration.md").read_text()
