"""Fetch the next batch of a result in a thread while the caller parses the current one.

A server-side cursor fetches on demand: without this, the database waits while Python parses, and
Python waits while the database sends. The drivers release the GIL while they wait on the socket,
so a thread overlaps the two. At most `depth` batches wait in between, so memory stays bounded.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(source: Iterable[T], depth: int = 2) -> Iterator[T]:
    """`source`'s items, in order, fetched ahead by a thread that alone advances `source`.

    An error in `source` is raised here, at the item it stopped at. Closing the iterator early
    stops the thread before this returns, so the caller may close what `source` reads from."""
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stopping = threading.Event()

    def produce() -> None:
        try:
            for item in source:
                handoff.put(item)
                if stopping.is_set():
                    return
            handoff.put(_END)
        except BaseException as error:  # handed to the consumer, which raises it
            handoff.put(_Failed(error))

    worker = threading.Thread(target=produce, name="babylon-prefetch", daemon=True)
    worker.start()
    try:
        while (item := handoff.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stopping.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            try:
                handoff.get(timeout=0.05)
            except queue.Empty:
                pass
        worker.join()
