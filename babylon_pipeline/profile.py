"""Where the embedded profile keeps its state, and which database a command talks to."""

from __future__ import annotations

import os
from pathlib import Path


def babylon_home() -> Path:
    """`BABYLON_HOME`, else `.babylon/` in the working directory: the embedded profile's folder."""
    return Path(os.environ.get("BABYLON_HOME") or ".babylon").resolve()


def embedded_database_url() -> str:
    return f"sqlite:///{babylon_home() / 'babylon.db'}"


def database_url(explicit: str | None = None) -> str:
    """An explicit URL, else `DATABASE_URL`, else the embedded SQLite store."""
    return explicit or os.environ.get("DATABASE_URL") or embedded_database_url()
