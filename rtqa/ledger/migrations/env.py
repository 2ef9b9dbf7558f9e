"""Alembic environment: always run on the connection that :mod:`rtqa.ledger.db` hands over."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes["connection"]
# render_as_batch lets later ALTERs work on SQLite too, through Alembic rather than our own code
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
