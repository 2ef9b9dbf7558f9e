"""Courses and re-evaluations: what kind of record a submission is, and the case key.

A submission is now a new *version* of a case (the plans replaced), an *addition* to the
current version's course (a boost added, the plans before it kept), or a *re-evaluation* of a
version (the same input files checked with other clinical facts or another protocol). Cases
are keyed by institution + PatientID. Rows written before this revision have ``kind`` NULL
(read as "version") and keep their hashes: the chain hashes the new columns only when set.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("kind", sa.String(16)))
        batch.add_column(sa.Column("evaluates", sa.Integer, sa.ForeignKey("submissions.id", name="fk_evaluates")))
    op.create_index("ix_submissions_case", "submissions", ["institution", "patient_id"])


def downgrade() -> None:
    op.drop_index("ix_submissions_case", table_name="submissions")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("evaluates")
        batch.drop_column("kind")
