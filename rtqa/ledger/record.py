"""Writing a check result into the ledger: one submission per plan, idempotent and versioned.

The same inputs again (the same file checksums, plan UIDs and protocol checksum) are not a new
submission. A new plan for a patient already in the ledger is the next version of that patient's
case and names the version it supersedes; nothing is ever deleted or updated.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select

from rtqa.ledger.chain import canonical, read_tail, sha256_text
from rtqa.ledger.db import Ledger, writing
from rtqa.ledger.schema import findings, submissions
from rtqa.report.model import CheckResult
from rtqa.report.render import as_json


@dataclass(frozen=True)
class Recorded:
    """What happened to one plan: a new submission, or the one it already was."""

    submission_id: int
    patient_id: str
    version: int
    supersedes: int | None
    new: bool


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a container: say so rather than guess
        return "unknown"


def input_key(plan: dict[str, Any], protocol_sha256: str) -> str:
    """What makes two submissions the same: patient, plan UIDs, input checksums, protocol, and
    the verdict they gave. The same files checked with other clinical facts (a corrected
    Child-Pugh class in the case-report form) can grade differently: that is a new version,
    never dropped as a repeat."""
    verdict = [
        (f.get("rule"), f.get("matched_roi"), f.get("value"), f.get("value_text"), f.get("grade"))
        for f in (*plan.get("findings", ()), *plan.get("eligibility", {}).get("items", ()))
    ]
    return sha256_text(
        canonical(
            {
                "patient_id": plan["patient_id"],
                "plan_uids": sorted(plan["plan_uids"]),
                "inputs": sorted(i["sha256"] for i in plan["inputs"]),
                "protocol_sha256": protocol_sha256,
                "verdict": sorted(verdict, key=repr),
            }
        )
    )


def record_result(
    ledger: Ledger, result: CheckResult, *, submitted_at: str | None = None, user: str | None = None
) -> list[Recorded]:
    """Record every plan of ``result``, in one transaction, in the order of the report.

    Parameters
    ----------
    ledger
        An open ledger (:func:`rtqa.ledger.db.open_ledger`).
    result
        The check result, as the report renderers receive it.
    submitted_at
        ISO 8601 time in UTC (default: now); for imports of past submissions and for tests.
    user
        The OS user recorded (default: the login name).

    Returns
    -------
    list of Recorded
        One per plan, in the order of ``result.reports``.
    """
    doc = as_json(result)
    head = {k: doc[k] for k in ("schema_version", "rtqa_version", "protocol", "settings")}
    when = submitted_at or now_utc()
    who = user or os_user()
    out: list[Recorded] = []
    with writing(ledger) as conn:
        tail = read_tail(conn, ledger)
        latest: dict[str, tuple[int, int]] = {}
        for plan in doc["plans"]:
            key = input_key(plan, doc["protocol"]["sha256"])
            pid = plan["patient_id"]
            same = conn.execute(
                select(submissions.c.id, submissions.c.version).where(submissions.c.input_key == key)
            ).first()
            if same is not None:
                out.append(Recorded(same.id, pid, same.version, None, False))
                continue
            if pid not in latest:
                last = conn.execute(
                    select(submissions.c.id, submissions.c.version)
                    .where(submissions.c.patient_id == pid)
                    .order_by(submissions.c.version.desc())
                    .limit(1)
                ).first()
                latest[pid] = (last.id, last.version) if last is not None else (0, 0)
            prev_id, prev_version = latest[pid]
            sub_id = tail.next_submission
            tail.next_submission += 1
            row: dict[str, Any] = {
                "id": sub_id,
                "patient_id": pid,
                "institution": plan.get("institution") or "",
                "plan_uid": plan["plan_uid"],
                "plan_label": plan["plan_label"] or "",
                "protocol_id": doc["protocol"]["id"],
                "protocol_version": doc["protocol"]["version"],
                "protocol_sha256": doc["protocol"]["sha256"],
                "rtqa_version": doc["rtqa_version"],
                "input_key": key,
                "version": prev_version + 1,
                "supersedes": prev_id or None,
                "grade": plan["grade"],
                "complete": bool(plan["complete"]),
                "submitted_at": when,
                "os_user": who,
                "report": canonical({**head, "plan": plan}),
            }
            conn.execute(insert(submissions), tail.link(submissions, row))
            rows = [finding_row(sub_id, i, f) for i, f in enumerate(plan["findings"])]
            if rows:
                conn.execute(insert(findings), rows)
            latest[pid] = (sub_id, prev_version + 1)
            out.append(Recorded(sub_id, pid, prev_version + 1, prev_id or None, True))
    return out


def finding_row(submission_id: int, idx: int, f: dict[str, Any]) -> dict[str, Any]:
    """The queryable columns of a finding; the whole finding JSON rides along, new fields included."""
    return {
        "submission_id": submission_id,
        "idx": idx,
        "rule": f["rule"],
        "structure": f.get("structure"),
        "matched_roi": f.get("matched_roi"),
        "metric": f.get("metric") or "",
        "value": f.get("value"),
        "unit": f.get("unit") or "",
        "grade": f["grade"],
        "limits": canonical(f.get("limits") or {}),
        "finding": canonical(f),
    }
