"""Hourly window partitions, and the one place window ids and partition keys are converted.

A partition key is Dagster's spelling of a window: `2025-11-15-10:00` is window `2025-11-15T10:00`.
Only complete hours exist as partitions (Dagster's default end offset), so an hour is processed
once it is over. The first window is `BABYLON_START` (default `2025-01-01-00:00`, UTC).
"""

from __future__ import annotations

import os
from datetime import datetime

import dagster as dg

from babylon_pipeline.windows import InvalidWindowId, is_window_id, window_of, window_start

PARTITION_FORMAT = "%Y-%m-%d-%H:%M"
DEFAULT_START = "2025-01-01-00:00"

window_partitions = dg.HourlyPartitionsDefinition(
    start_date=os.environ.get("BABYLON_START") or DEFAULT_START,
    timezone="UTC",
    fmt=PARTITION_FORMAT,
)


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
