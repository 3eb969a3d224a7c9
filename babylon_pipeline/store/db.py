"""Engines for the trajectory store: Postgres in production, SQLite in the embedded profile."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

# SQLite does not check that TEXT is UTF-8; sqlite3 then raises on the row and stops the whole read.
# Bad bytes are read as U+FFFD instead (the reader refuses ids that hold one: see reader._is_text_id).
_SQLITE_TEXT = partial(str, encoding="utf-8", errors="replace")


def normalise_url(url: str) -> str:
    """Babylon's `postgresql://` URLs name no driver; we read them with psycopg2."""
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    return parsed.render_as_string(hide_password=False)


def make_engine(url: str) -> sa.Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # WAL: readers never block the recorder
            dbapi_connection.text_factory = _SQLITE_TEXT
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def redacted(url: str) -> str:
    """A URL fit for logs: never the password."""
    return make_url(url).render_as_string(hide_password=True)
