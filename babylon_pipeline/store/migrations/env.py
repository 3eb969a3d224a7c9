"""Alembic environment: runs on the connection `babylon db upgrade` hands it."""

from alembic import context

from babylon_pipeline.store.migrate import VERSION_TABLE
from babylon_pipeline.store.tables import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
