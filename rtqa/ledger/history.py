"""The versions of one patient's case, oldest first, each with its grades and decisions."""

from __future__ import annotations

from sqlalchemy import select

from rtqa.ledger.db import Ledger, reading
from rtqa.ledger.errors import LedgerError
from rtqa.ledger.review import SubmissionView, load_view
from rtqa.ledger.schema import submissions


def history(ledger: Ledger, patient_id: str, *, institution: str | None = None) -> list[SubmissionView]:
    """Every submission of ``patient_id`` (of every institution, or of ``institution``), by
    institution, version and time: versions, additions to a course and re-evaluations.

    Raises
    ------
    LedgerError
        The patient has no submission in the ledger.
    """
    with reading(ledger) as conn:
        s = submissions.c
        query = select(s.id).where(s.patient_id == patient_id)
        if institution is not None:
            query = query.where(s.institution == institution)
        ids = conn.execute(query.order_by(s.institution, s.version, s.id)).scalars()
        views = [v for v in (load_view(conn, i) for i in list(ids)) if v is not None]
    if not views:
        raise LedgerError(f"{ledger.shown_url}: no submission for patient {patient_id}")
    return views
