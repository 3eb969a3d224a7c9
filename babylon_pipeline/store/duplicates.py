"""Which rows of a window repeat an earlier one, with memory bounded by the repeats, not the window.

`trajectoryId` is unique in the Babylon schema, so the repeat that happens is the same tick recorded
twice under new ids (the app's duplicate fault): same agent, start time, steps and reward. Such
rows share (`agentId`, `startTime`), which the database can group by: before the window streams,
one small GROUP BY names the pairs held by more than one row, and only rows with such a pair are
remembered while reading. A window of a million distinct ticks remembers nothing.
"""

from __future__ import annotations

import sqlalchemy as sa

from babylon_pipeline.store import tables
from babylon_pipeline.store.records import Trajectory

T = tables.trajectories
# the start time as the reader's query returns it, so that pairs from both queries compare equal
START_TIME = sa.type_coerce(T.c.startTime, sa.String).label("startTime")


class RepeatedTicks:
    def __init__(self, conn: sa.Connection, belongs: sa.ColumnElement[bool]) -> None:
        shared = sa.select(T.c.agentId, START_TIME).where(belongs).group_by(T.c.agentId, T.c.startTime)
        self._shared = {tuple(row) for row in conn.execute(shared.having(sa.func.count() > 1))}
        self._read: set[tuple] = set()

    def seen_before(self, row: sa.Row, trajectory: Trajectory) -> bool:
        """Whether a valid row repeats one read earlier; if not, it is remembered when it could be repeated."""
        if not self._shared or (row.agentId, row.startTime) not in self._shared:
            return False
        tick = _tick(trajectory)
        if tick in self._read:
            return True
        self._read.add(tick)
        return False


def _tick(trajectory: Trajectory) -> tuple:
    """What makes two rows the same tick recorded twice, ids aside."""
    steps = trajectory.steps
    return (trajectory.agent_id, trajectory.start_time, len(steps), steps[0].timestamp, steps[-1].timestamp,
            trajectory.total_reward)
