"""Where the window partitions start: production at `BABYLON_START`, the embedded profile where its data does,
read as the UI reads it (the code location's partitions, loaded in a fresh process as `dagster dev` loads it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from babylon_pipeline.partitions import DEFAULT_START, partition_key_of, partitions_start
from babylon_pipeline.store import tables
from babylon_pipeline.store.db import make_engine
from babylon_pipeline.store.migrate import upgrade
from babylon_pipeline.windows import window_of
from tests.window_data import record_window

NOW = datetime(2026, 12, 5, 7, 30, tzinfo=UTC)
PROFILE_SETTINGS = ("DATABASE_URL", "BABYLON_START", "BABYLON_STORAGE_URL", "BABYLON_JUDGE_BASE_URL", "BASE_MODEL",
                    "BABYLON_TRAINER")


def _stray_rows(engine: sa.Engine, window_ids: list[str]) -> None:
    """Rows whose `windowId` no window partition should start at: too old, not a window, in the future."""
    moment = datetime(2025, 6, 1)
    if not window_ids:
        return
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.trajectories), [
            {"id": f"stray-{i}", "trajectoryId": f"stray-{i}", "agentId": "a", "startTime": moment, "endTime": moment,
             "durationMs": 0, "windowId": window_id, "stepsJson": "[]", "rewardComponentsJson": "{}", "metricsJson": "{}",
             "metadataJson": "{}", "totalReward": 0.0, "episodeLength": 0, "finalStatus": "completed", "updatedAt": moment}
            for i, window_id in enumerate(window_ids)
        ])


def _embedded_home(tmp_path: Path, windows: list[str], stray: list[str] = ()) -> Path:
    home = tmp_path / "home"
    home.mkdir()
    engine = make_engine(f"sqlite:///{home / 'babylon.db'}")
    upgrade(engine)
    for window in windows:
        record_window(engine, window, scenarios=1, agents=1)
    _stray_rows(engine, list(stray))
    engine.dispose()
    return home


def test_production_keeps_babylon_start() -> None:
    assert partitions_start({"DATABASE_URL": "postgresql://db/babylon"}, NOW) == DEFAULT_START
    assert partitions_start({"DATABASE_URL": "postgresql://db/babylon", "BABYLON_START": "2024-06-01-00:00"}, NOW) == \
        "2024-06-01-00:00"


def test_the_embedded_profile_starts_where_its_data_starts(tmp_path, monkeypatch) -> None:
    home = _embedded_home(tmp_path, ["2026-12-05T03:00", "2026-12-05T01:00"],
                          stray=["1970-01-01T00:00", "2025-02-30T10:00", "2026-12-05T00:3０", "2099-01-01T00:00", "zzz"])
    monkeypatch.setenv("BABYLON_HOME", str(home))
    # 2025-02-30 is no date, 1970 is before any Babylon window, 2099 is in the future: the first real window wins
    assert partitions_start({}, NOW) == partition_key_of("2026-12-05T01:00")
    assert partitions_start({"BABYLON_START": "2026-12-01-00:00"}, NOW) == "2026-12-01-00:00"  # an explicit start wins


def test_with_no_data_yet_the_embedded_profile_starts_a_week_back(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("BABYLON_HOME", str(tmp_path / "nowhere"))
    assert partitions_start({}, NOW) == "2026-11-28-00:00"
    assert not (tmp_path / "nowhere").exists()  # looking does not create the store
    (tmp_path / "nowhere").mkdir()
    (tmp_path / "nowhere" / "babylon.db").write_bytes(b"")  # a store with no tables yet
    assert partitions_start({}, NOW) == "2026-11-28-00:00"


def test_the_code_location_of_the_embedded_profile_shows_only_the_hours_since_its_data(tmp_path) -> None:
    now = datetime.now(UTC)
    first = window_of(now - timedelta(hours=7))
    home = _embedded_home(tmp_path, [first, window_of(now - timedelta(hours=3))])
    env = {k: v for k, v in os.environ.items() if k not in PROFILE_SETTINGS} | {"BABYLON_HOME": str(home)}
    program = (
        "import json; from babylon_pipeline.definitions import defs\n"
        "p = defs.resolve_assets_def('window_trajectories').partitions_def\n"
        "print(json.dumps([p.get_first_partition_key(), len(p.get_partition_keys())]))\n"
    )
    done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    first_key, count = json.loads(done.stdout.strip().splitlines()[-1])
    assert first_key == partition_key_of(first)
    assert count in (7, 8)  # the complete hours since the first window (8 if the hour turned meanwhile)
