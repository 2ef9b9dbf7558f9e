"""The first ledger schema: submissions, their findings, decisions and the append lock.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False, unique=True),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("institution", sa.String(128), nullable=False),
        sa.Column("plan_uid", sa.String(64)),
        sa.Column("plan_label", sa.String(64), nullable=False),
        sa.Column("protocol_id", sa.String(64), nullable=False),
        sa.Column("protocol_version", sa.String(64), nullable=False),
        sa.Column("protocol_sha256", sa.String(64), nullable=False),
        sa.Column("rtqa_version", sa.String(64), nullable=False),
        sa.Column("input_key", sa.String(64), nullable=False, unique=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("supersedes", sa.Integer, sa.ForeignKey("submissions.id")),
        sa.Column("grade", sa.String(32), nullable=False),
        sa.Column("complete", sa.Boolean, nullable=False),
        sa.Column("submitted_at", sa.String(32), nullable=False),
        sa.Column("os_user", sa.String(128), nullable=False),
        sa.Column("report", sa.Text, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    op.create_table(
        "findings",
        sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.id"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("rule", sa.String(128), nullable=False),
        sa.Column("structure", sa.String(128)),
        sa.Column("matched_roi", sa.String(128)),
        sa.Column("metric", sa.String(128), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("unit", sa.String(16), nullable=False),
        sa.Column("grade", sa.String(32), nullable=False),
        sa.Column("limits", sa.Text, nullable=False),
        sa.Column("finding", sa.Text, nullable=False),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.Integer, nullable=False, unique=True),
        sa.Column("submission_id", sa.Integer, sa.ForeignKey("submissions.id"), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("rule", sa.String(128)),
        sa.Column("roi", sa.String(128)),
        sa.Column("grade", sa.String(32)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("reviewer", sa.String(128), nullable=False),
        sa.Column("decided_at", sa.String(32), nullable=False),
        sa.Column("os_user", sa.String(128), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    lock = op.create_table("ledger_lock", sa.Column("id", sa.Integer, primary_key=True, autoincrement=False))
    op.bulk_insert(lock, [{"id": 1}])


def downgrade() -> None:
    for name in ("ledger_lock", "decisions", "findings", "submissions"):
        op.drop_table(name)
