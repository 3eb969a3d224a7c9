"""The Babylon tables as the app created them when this pipeline was born.

This baseline creates from `tables.py` whatever is missing, so on a database the app already
made it changes nothing. Later schema changes are explicit `op.*` revisions on top of it.

Revision ID: 0001
Revises:
"""

from alembic import op

from babylon_pipeline.store.tables import metadata

revision = "0001"
down_revision = None


def upgrade() -> None:
    metadata.create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("the Babylon tables hold the app's data: they are never dropped by a migration")
