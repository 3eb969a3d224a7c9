"""Which rows of a window repeat an earlier one, remembering only the rows of one start time.

`trajectoryId` is unique in the Babylon schema, so the repeat that happens is the same tick recorded
twice under new ids (the app's duplicate fault): same agent, start time, steps and reward. The
reader streams a window ordered by start time, so the rows that can repeat each other arrive one
after another: only the current start time's ticks are remembered (a set only once a second row of
that start time arrives). A window of a million distinct ticks remembers one; no query runs before
the window streams. On SQLite, whose text column can hold one instant written two ways
(`10:01:00` and `T10:01:00.000`), a repeat stored under the other spelling is not found.
"""

from __future__ import annotations

from typing import Any

from babylon_pipeline.store.records import Trajectory

_NOTHING_YET = object()


class RepeatedTicks:
    """Fed the valid rows of one window in start-time order (the raw `startTime` the query sorted by)."""

    def __init__(self) -> None:
        self._start: Any = _NOTHING_YET
        self._first: tuple | None = None  # the tick of the start time's only row so far
        self._ticks: set[tuple] = set()

    def seen_before(self, start: Any, trajectory: Trajectory) -> bool:
        """Whether the row repeats one read earlier; either way, it is remembered until the start time changes.

        Ticks are taken when the row arrives, so a caller changing a yielded record cannot hide a repeat."""
        tick = _tick(trajectory)
        if start != self._start:
            self._start, self._first = start, tick
            self._ticks.clear()
            return False
        if self._first is not None:
            self._ticks.add(self._first)
            self._first = None
        if tick in self._ticks:
            return True
        self._ticks.add(tick)
        return False


def _tick(trajectory: Trajectory) -> tuple:
    """What makes two rows the same tick recorded twice, ids aside."""
    steps = trajectory.steps
    return (trajectory.agent_id, trajectory.start_time, len(steps), steps[0].timestamp, steps[-1].timestamp,
            trajectory.total_reward)
