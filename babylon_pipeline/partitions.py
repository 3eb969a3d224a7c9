"""Hourly window partitions, and the one place window ids and partition keys are converted.

A partition key is Dagster's spelling of a window: `2025-11-15-10:00` is window `2025-11-15T10:00`.
Only complete hours exist as partitions (Dagster's default end offset), so an hour is processed
once it is over. The first window is `BABYLON_START` when set (UTC). Otherwise production
(`DATABASE_URL` set) starts at `2025-01-01-00:00`, and the embedded profile where its data starts:
the first window of its store, or, with no data yet, midnight UTC a week ago. (A laptop's few hours
of data would otherwise sit among 16,000 empty partitions in the UI.) Read when the code location
loads, so a restarted `make dev` follows the data.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from babylon_pipeline.profile import babylon_home
from babylon_pipeline.windows import InvalidWindowId, is_window_id, window_of, window_start

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_START = "2025-01-01-00:00"
EMBEDDED_LOOKBACK = timedelta(days=7)
"""With no data yet, the embedded profile's partitions start this long before today (midnight UTC)."""


def partitions_start(environ: Mapping[str, str] = os.environ, now: datetime | None = None) -> str:
    """The first partition key, as the module docstring says; never earlier than `DEFAULT_START`."""
    if environ.get("BABYLON_START"):
        return environ["BABYLON_START"]
    if environ.get("DATABASE_URL"):
        return DEFAULT_START
    now = now or datetime.now(UTC)
    first = first_embedded_window(babylon_home() / "babylon.db", now)
    if first is not None:
        return partition_key_of(first)
    today = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    return (today - EMBEDDED_LOOKBACK).strftime(PARTITION_FORMAT)


def first_embedded_window(path: Path, now: datetime) -> str | None:
    """The earliest window id in the embedded store between `DEFAULT_START` and `now`; None without one.

    Read-only (a missing file is not created); bounded on both sides so that no stray row can bring
    back thousands of empty partitions or start them in the future; ids that are not windows skipped.
    """
    if not path.is_file():
        return None
    bounds = (window_of(datetime.strptime(DEFAULT_START, PARTITION_FORMAT)), window_of(now))
    try:
        with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as conn:
            rows = conn.execute(
                'SELECT DISTINCT "windowId" FROM trajectories'
                ' WHERE "windowId" BETWEEN ? AND ? ORDER BY "windowId" LIMIT 100',
                bounds,
            ).fetchall()
    except sqlite3.Error:  # not a store yet (no table), locked, or not SQLite: the default serves
        return None
    return next((window for (window,) in rows if is_window_id(window)), None)


def window_id_of(partition_key: str) -> str:
    try:
        moment = datetime.strptime(partition_key, PARTITION_FORMAT)
    except ValueError:
        moment = None
    if moment is None or moment.minute:
        hint = ""
        if is_window_id(partition_key):
            hint = f" (a window id; its partition key is {partition_key_of(partition_key)!r})"
        raise InvalidWindowId(f"not a window partition key (want YYYY-MM-DD-HH:00): {partition_key!r}{hint}")
    return window_of(moment)


def partition_key_of(window_id: str) -> str:
    return window_start(window_id).strftime(PARTITION_FORMAT)


# After the helpers it calls: the start is read when the code location loads.
window_partitions = dg.HourlyPartitionsDefinition(start_date=partitions_start(), timezone="UTC", fmt=PARTITION_FORMAT)

model_version_partitions = dg.DynamicPartitionsDefinition(name="model_versions")
"""One partition per registered model version (`v1.0.0`, …), added when `lora_checkpoint` registers it,
so evaluations and deployments of every version sit side by side in the UI."""
