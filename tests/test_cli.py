"""The `babylon` command, run as a user runs it."""

from __future__ import annotations

import json

import pytest

from babylon_pipeline.cli import main
from babylon_pipeline.store.migrate import upgrade
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
