"""The versions of one patient's case, oldest first, each with its grades and decisions."""

from __future__ import annotations

from sqlalchemy import select

from rtqa.ledger.db import Ledger, reading
from rtqa.ledger.errors import LedgerError
from rtqa.ledger.review import SubmissionView, load_view
from rtqa.ledger.schema import submissions


def history(ledger: Ledger, patient_id: str) -> list[SubmissionView]:
    """Every submission of ``patient_id``, by version.

    Raises
    ------
    LedgerError
        The patient has no submission in the ledger.
    """
    with reading(ledger) as conn:
        ids = conn.execute(
            select(submissions.c.id).where(submissions.c.patient_id == patient_id).order_by(submissions.c.version)
        ).scalars()
        views = [v for v in (load_view(conn, i) for i in list(ids)) if v is not None]
    if not views:
        raise LedgerError(f"{ledger.shown_url}: no submission for patient {patient_id}")
    return views
