"""The cycle collector paused while a stage builds and drops millions of small objects.

Each collection walks every live container, and a stage keeps thousands of them alive at a time
(a group of exported trajectories): with the collector running, a sixth of `art_groups` went to
walking them again and again. The records built here hold no reference cycles, so reference counting
frees them all; anything cyclic is collected once the collector is back.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
