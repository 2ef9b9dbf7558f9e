"""The tables of the ledger (schema revision ``HEAD``), in SQLAlchemy Core.

Rows are only ever inserted. Submissions and decisions share one sequence (``seq``) and each row
carries the SHA-256 of its content chained to the row before it (``prev_hash``), so that an edit,
a deletion or a reordering shows in ``rtqa ledger verify``. JSON is stored as canonical text
(sorted keys, no spaces) so that the bytes hashed are the bytes stored, on every database.
Times are ISO 8601 strings in UTC for the same reason. Text from a submission, a protocol or a
reviewer is unbounded ``Text`` (PostgreSQL enforces ``VARCHAR(n)``, SQLite does not: the same
value must be accepted by both); only values rtqa makes itself, of a fixed form, are bounded.
``hmac`` is the row's HMAC under the ledger key (NULL without a key), outside the row's hash.

The migrations in ``migrations/versions`` create these tables; this module is what the code
queries. A change here needs a new migration.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

HEAD = "0005"

metadata = MetaData()

submissions = Table(
    "submissions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False, unique=True),
    Column("patient_id", Text, nullable=False, index=True),
    Column("institution", Text, nullable=False),
    Column("plan_uid", Text),
    Column("plan_label", Text, nullable=False),
    Column("protocol_id", Text, nullable=False),
    Column("protocol_version", Text, nullable=False),
    Column("protocol_sha256", String(64), nullable=False),
    Column("rtqa_version", Text, nullable=False),
    Column("input_key", String(64), nullable=False, unique=True),
    Column("version", Integer, nullable=False),
    Column("supersedes", Integer, ForeignKey("submissions.id")),
    Column("grade", String(32), nullable=False),
    Column("complete", Boolean, nullable=False),
    Column("submitted_at", String(32), nullable=False),
    Column("os_user", Text, nullable=False),
    Column("report", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("hmac", String(64)),
    # revision 0005: "version" (NULL in older rows), "addition" (a plan added to the version's
    # course) or "re-evaluation" (the same files checked again); the submission it extends or
    # re-evaluates
    Column("kind", String(16)),
    Column("evaluates", Integer, ForeignKey("submissions.id", name="fk_evaluates")),
    Index("ix_submissions_case", "institution", "patient_id"),
)

# columns added after the first rows were written, with the values that mean what an older row
# without them means (a NULL kind reads as a version): hashed only when they say something else,
# so that rows written before them (or taken back through a downgrade and upgrade) keep their
# hashes, while an edit that changes what a row is (a version made an addition) breaks its hash
LATER_COLUMNS: dict[str, tuple[object, ...]] = {"kind": (None, "version"), "evaluates": (None,)}

findings = Table(
    "findings",
    metadata,
    Column("submission_id", Integer, ForeignKey("submissions.id"), primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("rule", Text, nullable=False, index=True),
    Column("structure", Text),
    Column("matched_roi", Text),
    Column("metric", Text, nullable=False),
    Column("value", Float),
    Column("unit", Text, nullable=False),
    Column("grade", String(32), nullable=False, index=True),
    Column("limits", Text, nullable=False),
    Column("finding", Text, nullable=False),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False, unique=True),
    Column("submission_id", Integer, ForeignKey("submissions.id"), nullable=False, index=True),
    Column("action", String(16), nullable=False),
    Column("rule", Text),
    Column("roi", Text),
    Column("grade", String(32)),
    Column("reason", Text, nullable=False),
    Column("reviewer", Text, nullable=False),
    Column("decided_at", String(32), nullable=False),
    Column("os_user", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("hmac", String(64)),
)

# One row, locked by every append (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE
# already serialises writers), so that two writers never take the same place in the chain.
ledger_lock = Table("ledger_lock", metadata, Column("id", Integer, primary_key=True, autoincrement=False))
