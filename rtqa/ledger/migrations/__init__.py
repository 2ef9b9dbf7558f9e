"""Alembic migrations of the ledger schema (run by :func:`rtqa.ledger.db.upgrade`)."""
