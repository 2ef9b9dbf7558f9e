"""Names and identifiers as unbounded text on every database; an HMAC column on chained rows.

SQLite never enforced the ``VARCHAR(n)`` lengths of revision 0001, PostgreSQL does: a
70-character PatientID or a 158-character ROI name was recorded on SQLite and refused on
PostgreSQL. Every column that holds text from a submission, a protocol or a reviewer is now
``TEXT`` on both. The columns left bounded hold only values rtqa makes itself, of a fixed form
(SHA-256 hex digests, grades, decision actions, ISO 8601 times).

``hmac`` holds the HMAC-SHA256 of the row's hash under the office's ledger key (NULL when the
ledger has no key); it is outside the row's hash, so rows written before it still verify.

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None

# (table, column, length before, nullable)
WIDENED = (
    ("submissions", "patient_id", 64, False),
    ("submissions", "institution", 128, False),
    ("submissions", "plan_uid", 64, True),
    ("submissions", "plan_label", 64, False),
    ("submissions", "protocol_id", 64, False),
    ("submissions", "protocol_version", 64, False),
    ("submissions", "rtqa_version", 64, False),
    ("submissions", "os_user", 128, False),
    ("findings", "rule", 128, False),
    ("findings", "structure", 128, True),
    ("findings", "matched_roi", 128, True),
    ("findings", "metric", 128, False),
    ("findings", "unit", 16, False),
    ("decisions", "rule", 128, True),
    ("decisions", "roi", 128, True),
    ("decisions", "reviewer", 128, False),
    ("decisions", "os_user", 128, False),
)
CHAINED = ("submissions", "decisions")


def upgrade() -> None:
    # on SQLite each batch copies the table into a new one (rtqa.ledger.db switches foreign keys
    # off for a migration and checks them before it commits)
    for table in ("submissions", "findings", "decisions"):
        with op.batch_alter_table(table) as batch:
            for t, column, length, nullable in WIDENED:
                if t == table:
                    batch.alter_column(
                        column, type_=sa.Text(), existing_type=sa.String(length), existing_nullable=nullable
                    )
            if table in CHAINED:
                batch.add_column(sa.Column("hmac", sa.String(64), nullable=True))


def downgrade() -> None:
    # fails on PostgreSQL when a value is longer than the old bound: nothing is cut short
    for table in ("decisions", "findings", "submissions"):
        with op.batch_alter_table(table) as batch:
            if table in CHAINED:
                batch.drop_column("hmac")
            for t, column, length, nullable in WIDENED:
                if t == table:
                    batch.alter_column(
                        column, type_=sa.String(length), existing_type=sa.Text(), existing_nullable=nullable
                    )
