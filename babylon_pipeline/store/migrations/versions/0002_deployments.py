"""The deployment state: which version serves, which runs as a canary, and every change with its reason.

The pipeline's own tables (`babylon_` prefix), never the app's. Written out column by column, so this
revision keeps creating what it created even when `tables.py` moves on; tables that already exist (made
from `tables.pipeline_metadata`, as the tests' `db` fixture does) are left as they are.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from babylon_pipeline.store.tables import Timestamp

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "babylon_deployment" not in existing:
        _create_deployment()
    if "babylon_deployment_history" not in existing:
        _create_history()


def _create_deployment() -> None:
    op.create_table(
        "babylon_deployment",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("in_service", sa.Text),
        sa.Column("canary", sa.Text),
        sa.Column("canary_fraction", sa.Double, nullable=False, server_default=sa.text("0")),
        sa.Column("stage", sa.Integer, nullable=False, server_default=sa.text("0")),
        sa.Column("salt", sa.Text, nullable=False, server_default=sa.text("''")),
        sa.Column("canary_started_at", Timestamp),
        sa.Column("changed_at", Timestamp),
        sa.CheckConstraint("id = 1", name="babylon_deployment_one_row"),
    )


def _create_history() -> None:
    op.create_table(
        "babylon_deployment_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", Timestamp, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("version", sa.Text),
        sa.Column("from_version", sa.Text),
        sa.Column("fraction", sa.Double),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_index("babylon_deployment_history_at_idx", "babylon_deployment_history", ["at"])


def downgrade() -> None:
    op.drop_table("babylon_deployment_history")
    op.drop_table("babylon_deployment")
