"""Indexes for the office's queries: history by patient, statistics by rule and grade, trails.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

INDEXES = (
    ("ix_submissions_patient_id", "submissions", "patient_id"),
    ("ix_findings_rule", "findings", "rule"),
    ("ix_findings_grade", "findings", "grade"),
    ("ix_decisions_submission_id", "decisions", "submission_id"),
)


def upgrade() -> None:
    for name, table, column in INDEXES:
        op.create_index(name, table, [column])


def downgrade() -> None:
    for name, table, _ in INDEXES:
        op.drop_index(name, table_name=table)
