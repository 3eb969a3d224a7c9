"""The pipeline's own alerts, written from plain facts: what failed, where, and what to do.

Keys name the incident, so a sensor that sees it again (a retried tick, a second process) sends
nothing new: a run fails once, a check evaluation fails once, a window goes stale once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from babylon_pipeline.alerts.alert import Alert, FieldValue

MAX_ERROR_CHARS = 600
MAX_FIELDS = 12
MAX_PARTITIONS_NAMED = 5

CHECK_HINTS = {
    "data_quality": "look at `quarantine_by_reason` in the window's `window_trajectories` materialization, fix "
                    "what the app records (or lower `min_valid_fraction` if the rows are fine)",
    "scored_fraction": "the judge is failing: check the judge endpoint (BABYLON_JUDGE_BASE_URL), its logs "
                       "and `judge_failed` in the run",
    "ready_to_train": "fix the base_model config (base model id, context length) and materialize base_model again",
    "not_worse_than_service": "the version is not deployed; read the evaluation report "
                              "(evaluations/{version}/report.json) before deploying it by hand",
}


@dataclass(frozen=True)
class FailedRun:
    job: str
    run_id: str
    message: str
    """Dagster's failure message for the run."""
    step_errors: Mapping[str, str] = field(default_factory=dict)
    """Failed step → its error's first lines."""
    tags: Mapping[str, str] = field(default_factory=dict)
    url: str | None = None


def run_failure_alert(run: FailedRun, *, batch_tag: str, version_tag: str,
                      partition_tags: tuple[str, str, str]) -> Alert:
    """`partition_tags`: the single-partition tag and the range start and end tags."""
    single, start, end = partition_tags
    partition = run.tags.get(single) or (
        f"{run.tags[start]}…{run.tags[end]}" if start in run.tags and end in run.tags else None)
    batch, version = run.tags.get(batch_tag), run.tags.get(version_tag)
    where = f"run {run.run_id}" + (f" (partition {partition})" if partition else "")
    steps = "\n".join(f"- {step}: {_clip(error)}" for step, error in run.step_errors.items())
    lines = [f"{run.job} failed: {where}.", steps or _clip(run.message)]
    if batch or version:
        lines.append(f"Training batch {batch or '?'} for version {version or '?'}: the batch is marked failed "
                     f"and no version was registered.")
        todo = ("read the step error in the run; once fixed, the readiness sensor trains again when new data "
                "changes the candidate set, or materialize lora_checkpoint by hand.")
    elif partition:
        todo = f"fix the cause, then re-execute the run from failure (or materialize partition {partition} again)."
    else:
        todo = "read the failed step's error in the run, fix the cause, then re-execute the run from failure."
    lines.append(f"What to do: {todo}")
    fields: dict[str, FieldValue] = {"job": run.job, "run_id": run.run_id, "partition": partition,
                                     "training_batch": batch, "model_version": version, "run": run.url}
    return Alert(key=f"run-failure:{run.run_id}", title=f"{run.job} failed" + (f" ({partition})" if partition else ""),
                 text="\n".join(lines), severity="error", fields=_present(fields))


@dataclass(frozen=True)
class FailedCheck:
    asset: str
    check: str
    partitions: tuple[str, ...]
    """The windows (or versions) it failed for in this run; empty for an unpartitioned asset."""
    run_id: str
    blocking: bool
    severity: str
    """Dagster's check severity: `ERROR` or `WARN`."""
    description: str | None = None
    metadata: Mapping[str, FieldValue] = field(default_factory=dict)
    url: str | None = None


def check_failure_alert(check: FailedCheck) -> Alert:
    named = _partitions(check.partitions)
    where = check.asset + (f" {named}" if named else "")
    effect = " It is blocking: the assets downstream of it did not run." if check.blocking else ""
    hint = CHECK_HINTS.get(check.check, "read the check's metadata on the asset's page and fix the cause")
    lines = [f"Check {check.check} on {where} failed in run {check.run_id}.{effect}"]
    if check.description:
        lines.append(_clip(check.description))
    lines.append(f"What to do: {hint}; then materialize {where} again.")
    figures = dict(list(check.metadata.items())[:MAX_FIELDS])
    fields: dict[str, FieldValue] = {"asset": check.asset, "check": check.check, "partitions": named or None,
                                     "run_id": check.run_id, **figures, "run": check.url}
    short = check.partitions[0] if len(check.partitions) == 1 else \
        (f"{len(check.partitions)} partitions" if check.partitions else "")
    return Alert(
        key=f"check-failed:{check.asset}:{check.check}:{check.run_id}",
        title=f"check {check.asset}.{check.check} failed" + (f" ({short})" if short else ""),
        text="\n".join(lines), severity="error" if check.severity == "ERROR" else "warning", fields=_present(fields),
    )


def stale_window_alert(window_id: str, partition: str, delay_minutes: float, newest: str | None) -> Alert:
    newest_text = f"the newest materialized partition is {newest}" if newest else "no window was ever materialized"
    text = (f"No window_trajectories materialization for window {window_id} (partition {partition}), "
            f"{delay_minutes:g} min after the hour ended; {newest_text}.\n"
            f"What to do: check that the Dagster daemon runs and window_job_schedule is on (Overview → Schedules), "
            f"look for a failed or queued window_job run of {partition}, then launch window_job for partition "
            f"{partition} (the job's Partitions tab).")
    return Alert(key=f"stale-window:{window_id}", title=f"window {window_id} is missing", text=text,
                 severity="warning",
                 fields={"asset": "window_trajectories", "partition": partition, "newest_partition": newest or "none"})


def _partitions(partitions: tuple[str, ...]) -> str:
    if not partitions:
        return ""
    if len(partitions) == 1:
        return f"partition {partitions[0]}"
    shown = ", ".join(partitions[:MAX_PARTITIONS_NAMED])
    more = len(partitions) - MAX_PARTITIONS_NAMED
    return f"{len(partitions)} partitions ({shown}{f' and {more} more' if more > 0 else ''})"


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS] + "…"


def _present(fields: Mapping[str, FieldValue]) -> dict[str, FieldValue]:
    return {name: value for name, value in fields.items() if value is not None}
