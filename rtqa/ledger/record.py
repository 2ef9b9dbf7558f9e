"""Writing a check result into the ledger: one submission per course, idempotent and versioned.

A *case* is one patient of one institution (InstitutionName, or the clinical CSV's institution,
+ PatientID): the same PatientID at two centres is two cases. Each report (a course: every plan
of the patient in one frame of reference) is recorded as one of:

- a *repeat*: the same input files, plans, protocol and verdict as a submission already
  recorded: not recorded again;
- a *re-evaluation* of a version: the same input files (checksums) and plans, checked with other
  clinical facts or another protocol: recorded, with the version number of the submission it
  re-evaluates, never a new version;
- an *addition* to the current version: its plans are every plan of the case's current version
  and more (a boost added to the course): recorded with the current version number;
- a new *version* otherwise (a plan of the current version is missing: it was replaced, or the
  same plans come with other files, a corrected export): the next version number, superseding
  the current one. ``force_version`` (``rtqa check --resubmission``) records every report as a
  new version whatever its plans.

The current state of a case is its highest version's latest record. Nothing is ever deleted or
updated.
"""

from __future__ import annotations

import getpass
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, insert, select

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
    kind: str = "version"  # version | addition | re-evaluation
    evaluates: int | None = None  # the submission an addition extends or a re-evaluation re-evaluates
    institution: str = ""


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


def files_key(plan: dict[str, Any]) -> str:
    """What makes two submissions the same inputs: the plan UIDs and the input checksums."""
    return sha256_text(
        canonical({"plan_uids": sorted(plan["plan_uids"]), "inputs": sorted(i["sha256"] for i in plan["inputs"])})
    )


def record_result(
    ledger: Ledger,
    result: CheckResult,
    *,
    submitted_at: str | None = None,
    user: str | None = None,
    force_version: bool = False,
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
    force_version
        Record every report as a new version of its case (``rtqa check --resubmission``).

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
        for plan in doc["plans"]:
            key = input_key(plan, doc["protocol"]["sha256"])
            pid = plan["patient_id"]
            institution = plan.get("institution") or ""
            same = conn.execute(
                select(submissions.c.id, submissions.c.version).where(submissions.c.input_key == key)
            ).first()
            if same is not None:
                out.append(Recorded(same.id, pid, same.version, None, False, institution=institution))
                continue
            kind, version, supersedes, evaluates = _place(conn, plan, institution, force_version)
            sub_id = tail.next_submission
            tail.next_submission += 1
            row: dict[str, Any] = {
                "id": sub_id,
                "patient_id": pid,
                "institution": institution,
                "plan_uid": plan["plan_uid"],
                "plan_label": plan["plan_label"] or "",
                "protocol_id": doc["protocol"]["id"],
                "protocol_version": doc["protocol"]["version"],
                "protocol_sha256": doc["protocol"]["sha256"],
                "rtqa_version": doc["rtqa_version"],
                "input_key": key,
                "version": version,
                "supersedes": supersedes,
                "grade": plan["grade"],
                "complete": bool(plan["complete"]),
                "submitted_at": when,
                "os_user": who,
                "report": canonical({**head, "plan": plan}),
                "kind": kind,
                "evaluates": evaluates,
            }
            conn.execute(insert(submissions), tail.link(submissions, row))
            rows = [finding_row(sub_id, i, f) for i, f in enumerate(plan["findings"])]
            if rows:
                conn.execute(insert(findings), rows)
            out.append(Recorded(sub_id, pid, version, supersedes, True, kind, evaluates, institution))
    return out


def _place(
    conn: Connection, plan: dict[str, Any], institution: str, force_version: bool
) -> tuple[str, int, int | None, int | None]:
    """Where a new report goes in its case: ``(kind, version, supersedes, evaluates)``."""
    s = submissions.c
    rows = conn.execute(
        select(s.id, s.version, s.report)
        .where(s.patient_id == plan["patient_id"], s.institution == institution)
        .order_by(s.version.desc(), s.id.desc())
    ).all()
    if not rows:
        return VERSION, 1, None, None
    current = rows[0]
    if not force_version:
        mine = files_key(plan)
        for r in rows:  # the same files and plans, graded again: a re-evaluation of that version
            if files_key(json.loads(r.report)["plan"]) == mine:
                return RE_EVALUATION, r.version, None, r.id
        before = set(json.loads(current.report)["plan"]["plan_uids"])
        now = set(plan["plan_uids"])
        if before and before < now:  # every plan of the current version, and more: the course grew
            return ADDITION, current.version, None, current.id
    return VERSION, current.version + 1, current.id, None


VERSION, ADDITION, RE_EVALUATION = "version", "addition", "re-evaluation"


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
