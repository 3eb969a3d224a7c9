"""A training run's local folder (scratch files, the offline W&B run), removed when the run fails.

Each run works in `{work_dir}/runs/{batch}-{version}-XXXX/` and holds an exclusive `flock` on its
`.lock` while it lives; the kernel drops the lock when the process dies, even by SIGKILL. A run that
fails by an exception removes its folder itself; a successful one removes only `scratch/` and marks
the folder `.done` (its offline W&B run stays, to be synced). Every run starts by removing the
folders of dead runs: not `.done`, lock free.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUNS = "runs"
LOCK = ".lock"
DONE = ".done"
SCRATCH = "scratch"


def remove_dead_runs(work_dir: Path) -> list[Path]:
    """The folders of runs that died without cleaning up, removed; returned for the log."""
    removed = []
    for folder in sorted((Path(work_dir) / RUNS).glob("*")):
        if not folder.is_dir() or (folder / DONE).exists():
            continue
        try:
            with open(folder / LOCK, "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(folder, ignore_errors=True)
        except BlockingIOError:
            continue  # a live run holds it
        except FileNotFoundError:
            shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


@contextmanager
def run_folder(work_dir: Path, name: str) -> Iterator[Path]:
    runs = Path(work_dir) / RUNS
    runs.mkdir(parents=True, exist_ok=True)
    remove_dead_runs(work_dir)
    folder = Path(tempfile.mkdtemp(dir=runs, prefix=f"{name}-"))
    with open(folder / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        (folder / SCRATCH).mkdir()
        succeeded = False
        try:
            yield folder
            succeeded = True
        finally:
            if succeeded:
                shutil.rmtree(folder / SCRATCH, ignore_errors=True)
                (folder / DONE).touch()
            else:
                shutil.rmtree(folder, ignore_errors=True)
