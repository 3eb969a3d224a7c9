"""What a window asset reports, one window at a time, whether its run covers one window or a range.

A single-run backfill hands the asset many partitions but lets it yield one `MaterializeResult`,
which Dagster turns into one materialization per partition. So each window's figures are attached
to its own partition (`add_asset_metadata(partition_key=...)`): one event per window, with that
window's numbers under stable names, which is what the UI plots across partitions. Each window's
check results are reported for its partition too (the check specs are partitioned), carrying the
measured value beside the threshold.

A window that raises does not take the others with it: the remaining windows still run, those that
finished are reported as materialized, and the step then fails naming every failed window, so
only those are left to retry. (Dagster 1.13's `MaterializeResult` has no partition, and the one it
yields covers the whole range, so a run with a failed window reports the finished ones with one
`AssetMaterialization` each instead.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (  # not exported by `dagster`
    AssetCheckEvaluationTargetMaterializationData,
)

from babylon_pipeline.partitions import partition_key_of, window_id_of

SIGNIFICANT_DIGITS = 6
"""Floats are shown with this many significant digits (2.82088, not 2.8208779500000003)."""
ERROR_CHARS = 300
"""A failed window's error, as named in the step's failure, is cut to this length."""


@dataclass(frozen=True)
class WindowResult:
    """One window's figures (the materialization's metadata) and its check results."""

    metadata: Mapping[str, Any]
    checks: Sequence[dg.AssetCheckResult] = field(default_factory=tuple)


class WindowsFailed(dg.Failure):
    """Some windows of the run raised; the others were reported as materialized."""


def run_windows(context: dg.AssetExecutionContext) -> list[str]:
    return [window_id_of(key) for key in context.partition_keys]


def for_display(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Floats (plain or already `FloatMetadataValue`) rounded to `SIGNIFICANT_DIGITS`; the rest unchanged."""
    return {k: _rounded(v) for k, v in metadata.items()}


def _rounded(value: Any) -> Any:
    if isinstance(value, dg.FloatMetadataValue) and value.value is not None:
        return dg.MetadataValue.float(_rounded(value.value))
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}") if type(value) is float else value


def materialize_windows(
    context: dg.AssetExecutionContext, process: Callable[[str], WindowResult]
) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | dg.AssetCheckEvaluation | dg.Output]:
    """Run `process` on every window of the run and report each window under its own partition."""
    done: dict[str, WindowResult] = {}
    failed: dict[str, Exception] = {}
    for window_id in run_windows(context):
        try:
            done[window_id] = process(window_id)
        except Exception as error:  # one window's failure is reported after the others, not instead of them
            context.log.exception(f"{window_id}: failed; the run's other windows go on")
            failed[window_id] = error

    if failed:
        for window_id, result in done.items():
            yield dg.AssetMaterialization(
                asset_key=context.asset_key, partition=partition_key_of(window_id), metadata=for_display(result.metadata),
            )
    else:
        for window_id, result in done.items():
            context.add_asset_metadata(for_display(result.metadata), partition_key=partition_key_of(window_id))
        yield dg.MaterializeResult()

    yield from _check_evaluations(context, done)

    if failed:
        named = {w: f"{type(e).__name__}: {e}"[:ERROR_CHARS] for w, e in failed.items()}
        raise WindowsFailed(
            description=f"{len(failed)} of {len(failed) + len(done)} windows failed: "
            + "; ".join(f"{w} ({why})" for w, why in named.items()),
            metadata={"failed_windows": dg.MetadataValue.json(named), "materialized_windows": len(done)},
        ) from next(iter(failed.values()))


def _check_evaluations(
    context: dg.AssetExecutionContext, done: Mapping[str, WindowResult]
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """Each window's check results under its partition, then each selected check's (empty) output.

    Yielded as evaluations rather than `AssetCheckResult`s because a result takes the step's
    partition, and a range run has none; yielded rather than logged so that a failed blocking
    check still stops the run's downstream steps.
    """
    selected = context.selected_asset_check_keys
    assets_def = context.assets_def
    for window_id, result in done.items():
        partition = partition_key_of(window_id)
        target = _newest_materialization(context, partition)
        for check in result.checks:
            key = dg.AssetCheckKey(context.asset_key, check.check_name or "")
            if key not in selected:
                continue
            yield dg.AssetCheckEvaluation(
                asset_key=key.asset_key, check_name=key.name, passed=check.passed,
                metadata=for_display(check.metadata), severity=check.severity, description=check.description,
                blocking=assets_def.get_spec_for_check_key(key).blocking, partition=partition,
                target_materialization_data=target,
            )
    for key in sorted(selected, key=lambda k: k.name):
        yield dg.Output(None, output_name=assets_def.get_output_name_for_asset_check_key(key))


def _newest_materialization(
    context: dg.AssetExecutionContext, partition: str
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The window's materialization the check results are about (the one just reported), for the UI's link."""
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    record = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        run_id=record.run_id, storage_id=record.storage_id, timestamp=record.timestamp
    )
