"""Which windows an hourly tick runs: the hour that just ended, and any recent one with data no run took.

Dagster evaluates only the latest missed tick of a schedule whose job is an asset job (it has no partition
set to catch up with), so after a daemon outage of three hours the two windows before the last would never
be processed. Each tick therefore also takes every window of the last `CATCH_UP_HOURS` that is not
materialized, holds trajectories and was never the partition of a `window_job` run. A window whose run
failed has a run: it is left to a person (a re-run or a backfill), never retried in a loop by the schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

CATCH_UP_HOURS = 24


def windows_due(partitions: Sequence[str], materialized: Collection[str], missed: Callable[[str], bool],
                hours: int = CATCH_UP_HOURS) -> list[str]:
    """Partition keys to run at a tick, oldest first. `partitions`: every complete window, oldest first; the
    last (the hour that just ended) is always run, as an hourly schedule does; of the `hours` before it, those
    not `materialized` for which `missed` (asked only of those) says so."""
    if not partitions:
        return []
    *earlier, last = partitions[-hours - 1:]
    return [key for key in earlier if key not in materialized and missed(key)] + [last]
