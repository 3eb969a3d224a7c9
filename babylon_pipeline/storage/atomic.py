"""Writing a local file so that no reader ever sees it half-written, and a crash leaves no object.

The content goes to a hidden temporary file in the target's own folder (so the rename cannot cross
file systems), is fsynced, then `os.replace`d over the target: POSIX makes the rename atomic, so a
reader opens either the old file or the new one. The folder is fsynced too, so the rename survives
a power cut. On any error the temporary file is removed and the target is untouched.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = "."  # keys never start with a dot (see `keys`), so a temporary file is never an object


def atomic_write(target: Path, fill: Callable[[BinaryIO], object]) -> None:
    """Create or replace `target` with what `fill` writes to the handle it is given."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f"{TEMP_PREFIX}{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            fill(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(target.parent)


def durable_rename(source: Path, target: Path) -> None:
    """Move a finished file over `target` atomically and durably; `OSError(EXDEV)` across file systems."""
    fd = os.open(source, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(source, target)
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
