"""`index.jsonl`: for each line of `trajectories.jsonl`, where it lies and its `TradeRecord`.

Stage 1 writes it beside the trajectories, so the later stages learn a line's group (art_groups)
or its actions and P&L (outcome_rewards) from a small file of small records, instead of parsing
every 10 KB line into 26 objects again. Each line is `[offset, length, trade record]`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, NamedTuple

from pydantic import TypeAdapter

from babylon_pipeline.storage.base import ObjectStore
from babylon_pipeline.store.records import TradeRecord, Trajectory
from babylon_pipeline.windowing.files import INDEX, TRAJECTORIES, open_listed_files, read_manifest


class IndexEntry(NamedTuple):
    offset: int
    length: int
    trades: TradeRecord


_ENTRY = TypeAdapter(IndexEntry)


class IndexWriter:
    """Notes each trajectory line as it is written, at the offset it was written at."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._offset = 0

    def add(self, trajectory: Trajectory, line: bytes) -> None:
        entry = IndexEntry(self._offset, len(line), TradeRecord.of(trajectory))
        self._out.write(_ENTRY.dump_json(entry, by_alias=True) + b"\n")
        self._offset += len(line)


def read_index(lines: IO[bytes]) -> Iterator[IndexEntry]:
    for line in lines:
        yield _ENTRY.validate_json(line)


def index_of_trajectories(lines: IO[bytes]) -> Iterator[IndexEntry]:
    """The index of a `trajectories.jsonl` exported before stage 1 wrote one, by parsing its lines."""
    offset = 0
    for line in lines:
        yield IndexEntry(offset, len(line), TradeRecord.of(Trajectory.model_validate_json(line)))
        offset += len(line)


def iter_window_trades(store: ObjectStore, window_id: str) -> Iterator[TradeRecord]:
    """The trade records of the window's stored trajectories, in file order."""
    with _opened_index(store, window_id, with_lines=False) as (index, _):
        for entry in index:
            yield entry.trades


@contextmanager
def open_indexed_trajectories(store: ObjectStore, window_id: str) -> Iterator[tuple[Iterator[IndexEntry], IO[bytes]]]:
    """The window's index entries (streamed) and its `trajectories.jsonl`, of one publish."""
    with _opened_index(store, window_id, with_lines=True) as (index, lines):
        assert lines is not None
        yield index, lines


@contextmanager
def _opened_index(
    store: ObjectStore, window_id: str, *, with_lines: bool
) -> Iterator[tuple[Iterator[IndexEntry], IO[bytes] | None]]:
    """One reading of the manifest decides whether stage 1 wrote an index and vouches for what is opened;
    without an index, the trajectories are parsed to make one."""
    listed = read_manifest(store, window_id)["files"]
    if INDEX in listed:
        names = (INDEX, TRAJECTORIES) if with_lines else (INDEX,)
        with open_listed_files(store, window_id, listed, *names) as handles:
            yield read_index(handles[0]), handles[1] if with_lines else None
    else:
        with open_listed_files(store, window_id, listed, TRAJECTORIES) as (lines,):
            yield index_of_trajectories(lines), lines
