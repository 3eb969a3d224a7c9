"""Engines for the trajectory store: Postgres in production, SQLite in the embedded profile.

`parse_database_url` is the one reader of a database URL (`DATABASE_URL`, `--database-url`, the
resource's setting): every engine is made from what it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

_WANT = "want postgresql://user:password@host:port/database[?schema=name] or sqlite:///path"


class InvalidDatabaseUrl(ValueError):
    """A database URL this pipeline cannot open. The message never holds the URL's password."""


class StoreWithoutTables(RuntimeError):
    """The database lacks the Babylon tables: `babylon db upgrade` creates them (or adopts the app's)."""


def without_tables(engine: sa.Engine, *names: str) -> StoreWithoutTables | None:
    """The error to raise when some of `names` are not tables of the database, else None.

    Called after a statement failed, so the caller can raise one clear error instead of the driver's."""
    try:
        inspector = sa.inspect(engine)
        missing = [name for name in names if not inspector.has_table(name)]
    except sa.exc.DBAPIError:  # the database itself is unreachable: the original error says more
        return None
    if not missing:
        return None
    return StoreWithoutTables(f"the trajectory store at {engine.url.render_as_string(hide_password=True)} has no "
                              f"{', '.join(missing)} table: run `babylon db upgrade` first")


@dataclass(frozen=True)
class DatabaseUrl:
    url: URL  # with its driver named, without Prisma's `schema` option
    schema: str | None  # Prisma's `?schema=`: the Postgres search path, None for the server's default

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()


def parse_database_url(url: str) -> DatabaseUrl:
    """Babylon's `postgresql://` URLs name no driver (we read them with psycopg2), and Prisma's carry
    `?schema=name`, which libpq does not know: it is taken out and becomes the connection's search path."""
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        raise InvalidDatabaseUrl(f"not a database URL: {_WANT}") from None
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg2")
    schema = parsed.query.get("schema")
    if isinstance(schema, tuple):
        raise InvalidDatabaseUrl("a database URL names one ?schema=, not several")
    if schema is not None and parsed.get_backend_name() != "postgresql":
        raise InvalidDatabaseUrl(f"?schema= is a Postgres option; {parsed.get_backend_name()} has none")
    if schema is not None and not schema:
        raise InvalidDatabaseUrl("?schema= is empty: name a schema, or leave the option out")
    try:
        parsed.get_dialect()
    except sa.exc.NoSuchModuleError:
        raise InvalidDatabaseUrl(f"unknown database URL scheme {parsed.drivername!r}: {_WANT}") from None
    return DatabaseUrl(parsed.difference_update_query(["schema"]), schema)


def _search_path_option(schema: str) -> str:
    """libpq's `options` value setting the search path to the one schema, quoted as an identifier."""
    identifier = '"' + schema.replace('"', '""') + '"'
    return "-c search_path=" + identifier.replace("\\", "\\\\").replace(" ", "\\ ")


def make_engine(url: str) -> sa.Engine:
    database = parse_database_url(url)
    parsed = database.url
    if database.backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # WAL: readers never block the recorder
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    connect_args = {}
    if database.schema is not None:
        options = " ".join(filter(None, [parsed.query.get("options"), _search_path_option(database.schema)]))
        parsed = parsed.difference_update_query(["options"])
        connect_args["options"] = options
    return sa.create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def redacted(url: str) -> str:
    """A URL fit for logs: never the password (and nothing at all of a URL that does not parse)."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError, TypeError):
        return "(an unparseable database URL)"
