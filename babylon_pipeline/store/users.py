"""Agents as the app's `User` rows: in the Babylon database trajectories."agentId" references "User"("id").

The app owns the `User` table (with many more columns than these); the pipeline never creates it.
Where it exists, a trajectory's agent must be a row of it before the trajectory can be written.
The embedded store and a database made by `babylon db upgrade` alone have no such table and need
nothing. Only the columns the contract names are written: `id`, `username`, `isAgent` and
`updatedAt` (which has no database default); every other column keeps its default.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

USER_TABLE = "User"
FOREIGN_KEY = 'trajectories."agentId" references "User"("id")'

users = sa.table(
    USER_TABLE,
    sa.column("id", sa.Text),
    sa.column("username", sa.Text),
    sa.column("isAgent", sa.Boolean),
    sa.column("updatedAt", sa.DateTime),
)


@dataclass(frozen=True)
class AgentUser:
    """One agent as the `User` row that makes it a valid `trajectories.agentId`."""

    id: str
    username: str | None = None


@dataclass(frozen=True)
class AgentLink:
    """Whether this database has the app's `User` table, and the foreign key that ties trajectories to it."""

    has_user_table: bool
    constraint: str | None = None  # the foreign key's name; None when trajectories."agentId" references nothing

    @property
    def requires_users(self) -> bool:
        return self.constraint is not None

    def describe(self) -> str:
        return f"{FOREIGN_KEY} (constraint {self.constraint})"


def agent_link(connection: sa.Connection) -> AgentLink:
    inspector = sa.inspect(connection)
    if not inspector.has_table(USER_TABLE):
        return AgentLink(False)
    if not inspector.has_table("trajectories"):
        return AgentLink(True)
    constraint = next((fk.get("name") or "unnamed" for fk in inspector.get_foreign_keys("trajectories")
                       if fk["referred_table"] == USER_TABLE and fk["constrained_columns"] == ["agentId"]), None)
    return AgentLink(True, constraint)


def missing_agents(connection: sa.Connection, agent_ids: Iterable[str]) -> list[str]:
    """The agents that are not `User` rows, sorted; none when the database has no `User` table."""
    wanted = sorted(set(agent_ids))
    if not wanted or not sa.inspect(connection).has_table(USER_TABLE):
        return []
    found = set(connection.scalars(sa.select(users.c.id).where(users.c.id.in_(wanted))))
    return [agent_id for agent_id in wanted if agent_id not in found]


def create_agent_users(connection: sa.Connection, agents: Sequence[AgentUser], now: datetime) -> None:
    """Insert the agents that are not users yet (`isAgent` true); existing rows are left as they are."""
    if not agents:
        return
    rows = [{"id": a.id, "username": a.username, "isAgent": True, "updatedAt": now} for a in agents]
    insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    connection.execute(insert(users).on_conflict_do_nothing(), rows)


def named(agent_ids: Sequence[str], limit: int = 10) -> str:
    """Agent ids for a one-line message: all of a few, else the first `limit` and how many in all."""
    if len(agent_ids) <= limit:
        return ", ".join(agent_ids)
    return f"{', '.join(agent_ids[:limit])} … ({len(agent_ids)} in all)"
