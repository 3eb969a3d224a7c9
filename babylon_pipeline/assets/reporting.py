"""Per-window metadata for assets that materialise a range of windows in one run.

A single-run backfill gives the asset many partitions at once, but one `MaterializeResult`. So the
run's result carries the check results and a summary, and each window then gets its own
materialization event with its own figures: the newest event of every partition holds that
window's numbers, under the same names, which is what the UI plots across partitions.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import dagster as dg

from babylon_pipeline.partitions import partition_key_of, window_id_of


def run_windows(context: dg.AssetExecutionContext) -> list[str]:
    return [window_id_of(key) for key in context.partition_keys]


def report_windows(
    context: dg.AssetExecutionContext,
    per_window: Mapping[str, Mapping[str, Any]],
    check_results: Sequence[dg.AssetCheckResult] = (),
) -> Iterator[dg.MaterializeResult]:
    if len(per_window) == 1:
        yield dg.MaterializeResult(metadata=dict(next(iter(per_window.values()))), check_results=list(check_results))
        return
    windows = sorted(per_window)
    summary = {"windows": len(windows), "first_window": windows[0] if windows else "", "last_window": windows[-1] if windows else ""}
    yield dg.MaterializeResult(metadata=summary, check_results=list(check_results))
    for window_id in windows:
        context.log_event(
            dg.AssetMaterialization(
                asset_key=context.asset_key, partition=partition_key_of(window_id), metadata=dict(per_window[window_id])
            )
        )
