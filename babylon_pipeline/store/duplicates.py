"""Which rows of a window repeat an earlier one, remembering only the rows of one start time.

`trajectoryId` is unique in the Babylon schema, so the repeat that happens is the same tick recorded
twice under new ids (the app's duplicate fault): same agent, start time, steps and reward. The
reader streams a window ordered by start time, so the rows that can repeat each other arrive one
after another: only the current start time's rows are remembered, and a row's tick is worked out
only once a second row of its start time arrives. A window of a million distinct ticks remembers
one row; no query runs before the window streams.
"""

from __future__ import annotations

from typing import Any

from babylon_pipeline.store.records import Trajectory

_NOTHING_YET = object()


class RepeatedTicks:
    """Fed the valid rows of one window in start-time order (the raw `startTime` the query sorted by)."""

    def __init__(self) -> None:
        self._start: Any = _NOTHING_YET
        self._first: Trajectory | None = None  # the start time's only row so far, its tick not worked out
        self._ticks: set[tuple] = set()

    def seen_before(self, start: Any, trajectory: Trajectory) -> bool:
        """Whether the row repeats one read earlier; either way, it is remembered until the start time changes."""
        if start != self._start:
            self._start, self._first = start, trajectory
            self._ticks.clear()
            return False
        if self._first is not None:
            self._ticks.add(_tick(self._first))
            self._first = None
        tick = _tick(trajectory)
        if tick in self._ticks:
            return True
        self._ticks.add(tick)
        return False


def _tick(trajectory: Trajectory) -> tuple:
    """What makes two rows the same tick recorded twice, ids aside."""
    steps = trajectory.steps
    return (trajectory.agent_id, trajectory.start_time, len(steps), steps[0].timestamp, steps[-1].timestamp,
            trajectory.total_reward)
