"""Alembic environment: runs on the connection handed over in ``config.attributes``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from auditrelay.store.db import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations through auditrelay.store.migrations.upgrade(engine)")

# The caller's transaction (which holds the upgrade lock) is Alembic's: it commits
# nothing itself, and the whole upgrade commits or rolls back as one.
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
context.run_migrations()
