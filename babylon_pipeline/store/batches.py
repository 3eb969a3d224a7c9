"""Fetch a streamed result in batches sized to its rows, so a batch's memory stays near a budget.

A fixed number of rows is a fixed amount of memory only while the rows are alike, and one window
can hold 10 KB ticks and a 10 MB one. Each batch asks the server-side cursor for as many rows as
the budget holds at the size of the largest row of the batch before, and grows at most twofold,
so a run of large rows is met with small batches from its second batch on. (Row sizes are known
only once rows arrive: the batch that meets the first large row is as long as the one before.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

FIRST_BATCH = 16


class _Fetching(Protocol):
    def fetchmany(self, size: int) -> list[Any]: ...


def sized_batches(
    result: _Fetching, *, max_rows: int, budget_bytes: int, size_of: Callable[[Any], int]
) -> Iterator[list[Any]]:
    """`result`'s rows in batches of at most `max_rows`, each about `budget_bytes` or one row."""
    size = min(max_rows, FIRST_BATCH)
    while batch := result.fetchmany(size):
        yield batch
        largest = max(map(size_of, batch))
        size = max(1, min(max_rows, 2 * size, budget_bytes // max(largest, 1)))
