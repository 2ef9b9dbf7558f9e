"""Reviewer decisions, and a submission as the reviewer sees it: automatic and reviewed grades.

A decision is appended, never edited: the latest decision on a finding stands, and the trail
keeps every earlier one. Decisions belong to one submission: on a resubmission the decisions
taken on earlier versions are shown as "decided on version n", for the reviewer to confirm, and
do not touch the new version's grade.

A plan whose patient is ineligible (an eligibility rule failed) is accepted only by a decision
that says so: ``accept_override`` ("plan accepted, eligibility overridden"), which
``rtqa review --accept-plan --override-eligibility --reason ...`` records. The patient stays
counted as ineligible; the decision is the reviewer's, with its reason, in the trail.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from rtqa.ledger.chain import read_tail
from rtqa.ledger.db import Ledger, reading, writing
from rtqa.ledger.errors import LedgerError
from rtqa.ledger.record import now_utc, os_user
from rtqa.ledger.schema import decisions, submissions
from rtqa.protocol.limits import Grade

GRADE_DECISION = "grade"
ACCEPT = "accept_plan"
ACCEPT_INELIGIBLE = "accept_override"  # accepted although the patient is ineligible (<= 16 characters)
REJECT = "reject_plan"
ACCEPTS = (ACCEPT, ACCEPT_INELIGIBLE)


@dataclass(frozen=True)
class Decision:
    id: int
    submission_id: int
    action: str
    rule: str | None
    roi: str | None
    grade: str | None
    reason: str
    reviewer: str
    decided_at: str

    def applies_to(self, finding: dict[str, Any]) -> bool:
        """A rule decision covers the rule's findings, or only the one ROI (or structure) it names."""
        return (
            self.action == GRADE_DECISION
            and self.rule == finding["rule"]
            and (self.roi is None or self.roi in (finding.get("matched_roi"), finding.get("structure")))
        )

    @property
    def key(self) -> tuple[str | None, str | None]:
        """What a later decision replaces: the same rule and ROI, or the plan decision."""
        return (None, None) if self.action != GRADE_DECISION else (self.rule, self.roi)

    def as_json(self) -> dict[str, Any]:
        return {
            "decision": self.id,
            "submission": self.submission_id,
            "action": self.action,
            "rule": self.rule,
            "roi": self.roi,
            "grade": self.grade,
            "reason": self.reason,
            "reviewer": self.reviewer,
            "decided_at": self.decided_at,
        }

    def text(self) -> str:
        what = {
            ACCEPT: "plan accepted",
            ACCEPT_INELIGIBLE: "plan accepted, eligibility overridden",
            REJECT: "plan rejected",
        }.get(self.action)
        if what is None:
            what = f"{self.rule}{'@' + self.roi if self.roi else ''} -> {self.grade}"
        return f"{what} by {self.reviewer} at {self.decided_at[:16].replace('T', ' ')}: {self.reason}"


def _decision(row: Row[Any]) -> Decision:
    return Decision(
        row.id, row.submission_id, row.action, row.rule, row.roi, row.grade, row.reason, row.reviewer, row.decided_at
    )


@dataclass(frozen=True)
class ReviewedFinding:
    finding: dict[str, Any]
    grade: str
    decision: Decision | None
    trail: tuple[Decision, ...]

    @property
    def auto_grade(self) -> str:
        return str(self.finding["grade"])


@dataclass(frozen=True)
class SubmissionView:
    """One submission with its decisions applied."""

    id: int
    version: int
    patient_id: str
    institution: str
    plan_label: str
    submitted_at: str
    os_user: str
    supersedes: int | None
    superseded_by: int | None
    document: dict[str, Any]
    findings: tuple[ReviewedFinding, ...]
    decisions: tuple[Decision, ...]
    earlier: tuple[tuple[int, Decision], ...]  # (version decided on, decision) to confirm
    kind: str = "version"  # version | addition | re-evaluation (rtqa.ledger.record)
    evaluates: int | None = None  # the submission an addition extends or a re-evaluation re-evaluates

    @property
    def plan(self) -> dict[str, Any]:
        return dict(self.document["plan"])

    @property
    def auto_grade(self) -> str:
        return str(self.plan["grade"])

    @property
    def final_grade(self) -> str:
        return plan_grade(f.grade for f in self.findings)

    @property
    def complete(self) -> bool:
        return not self.plan.get("errors") and all(f.grade != Grade.NOT_EVALUABLE.value for f in self.findings)

    @property
    def eligibility(self) -> str:
        """The recorded eligibility status: eligible, ineligible or unknown."""
        return str((self.plan.get("eligibility") or {}).get("status") or "unknown")

    @property
    def ineligible_rules(self) -> list[str]:
        items = (self.plan.get("eligibility") or {}).get("items") or []
        return [str(f["rule"]) for f in items if f.get("grade") == Grade.DEVIATION_UNACCEPTABLE.value]

    @property
    def plan_decision(self) -> Decision | None:
        plan = [d for d in self.decisions if d.action != GRADE_DECISION]
        return plan[-1] if plan else None

    @property
    def status(self) -> str:
        d = self.plan_decision
        return "pending" if d is None else ("accepted" if d.action in ACCEPTS else "rejected")


def plan_grade(grades: Iterable[str]) -> str:
    """The worst evaluated grade, as :attr:`rtqa.report.model.PlanReport.grade` grades a plan."""
    evaluated = [Grade(g) for g in grades if g != Grade.NOT_EVALUABLE.value]
    if not evaluated:
        return Grade.NOT_EVALUABLE.value
    return max(evaluated, key=lambda g: g.severity).value


def apply_decisions(plan_findings: Sequence[dict[str, Any]], trail: Sequence[Decision]) -> tuple[ReviewedFinding, ...]:
    """Each finding with its reviewed grade: the latest decision that covers it, else its own grade."""
    out = []
    for f in plan_findings:
        mine = tuple(d for d in trail if d.applies_to(f))
        last = mine[-1] if mine else None
        out.append(ReviewedFinding(f, last.grade if last and last.grade else str(f["grade"]), last, mine))
    return tuple(out)


def add_decision(
    ledger: Ledger,
    submission_id: int,
    *,
    action: str,
    reason: str,
    reviewer: str,
    rule: str | None = None,
    roi: str | None = None,
    grade: str | None = None,
    decided_at: str | None = None,
    user: str | None = None,
    override_eligibility: bool = False,
) -> Decision:
    """Append a reviewer decision on a submission.

    ``override_eligibility`` is needed to accept the plan of an ineligible patient (recorded
    as ``accept_override``); it is refused on any other decision.

    Raises
    ------
    LedgerError
        No reason or reviewer, an unknown submission, grade or rule, a rule decision without
        a grade, an ineligible patient's plan accepted without ``override_eligibility``, or
        ``override_eligibility`` where there is nothing to override.
    """
    if not reason.strip():
        raise LedgerError("a decision needs a reason (--reason)")
    if not reviewer.strip():
        raise LedgerError("a decision needs the reviewer's name (--reviewer)")
    if action not in (GRADE_DECISION, ACCEPT, REJECT):
        raise LedgerError(f"unknown decision {action!r}; expected {GRADE_DECISION}, {ACCEPT} or {REJECT}")
    if override_eligibility and action != ACCEPT:
        raise LedgerError("--override-eligibility goes with --accept-plan only")
    if action == GRADE_DECISION:
        if not rule or not grade:
            raise LedgerError("a finding decision needs --rule and --grade")
        if grade not in {g.value for g in Grade}:
            raise LedgerError(f"unknown grade {grade!r}; expected one of {', '.join(g.value for g in Grade)}")
    else:
        rule = roi = grade = None
    with writing(ledger) as conn:
        sub = conn.execute(select(submissions.c.report).where(submissions.c.id == submission_id)).first()
        if sub is None:
            raise LedgerError(f"{ledger.shown_url}: no submission {submission_id}")
        if action == ACCEPT:
            current = load_view(conn, submission_id)
            if current is not None and not current.complete:
                missing = sorted({f.finding["rule"] for f in current.findings if f.grade == Grade.NOT_EVALUABLE.value})
                raise LedgerError(
                    f"submission {submission_id} is incomplete (not evaluable: {', '.join(missing) or 'its files'}): "
                    "a plan that was not fully checked cannot be accepted; decide each not-evaluable finding "
                    "with --rule first, or reject the plan"
                )
            ineligible = current is not None and current.eligibility == "ineligible"
            if ineligible and not override_eligibility:
                assert current is not None
                raise LedgerError(
                    f"submission {submission_id}: patient {current.patient_id} is INELIGIBLE "
                    f"({', '.join(current.ineligible_rules)}), a protocol violation; accept the plan only with "
                    "--override-eligibility and a --reason that says why (the patient stays counted as ineligible)"
                )
            if override_eligibility and not ineligible:
                status = current.eligibility if current is not None else "unknown"
                raise LedgerError(
                    f"submission {submission_id}: the patient's eligibility is {status}, not ineligible: "
                    "there is nothing to override (accept without --override-eligibility)"
                )
            if override_eligibility:
                action = ACCEPT_INELIGIBLE
        if action == GRADE_DECISION:
            plan_findings = json.loads(sub.report)["plan"]["findings"]
            probe = Decision(0, submission_id, action, rule, roi, grade, reason, reviewer, "")
            hits = [f for f in plan_findings if probe.applies_to(f)]
            if roi is None and len(hits) > 1:
                rois = ", ".join(str(f.get("matched_roi") or f.get("structure")) for f in hits)
                raise LedgerError(
                    f"rule {rule} has {len(hits)} findings on submission {submission_id} ({rois}): "
                    "name the one decided with --roi"
                )
            if not hits:
                rules = sorted({f["rule"] for f in plan_findings})
                where = f" on ROI {roi}" if roi else ""
                raise LedgerError(
                    f"submission {submission_id} has no finding of rule {rule}{where}; its rules: {', '.join(rules)}"
                )
        tail = read_tail(conn, ledger)
        row: dict[str, Any] = {
            "id": tail.next_decision,
            "submission_id": submission_id,
            "action": action,
            "rule": rule,
            "roi": roi,
            "grade": grade,
            "reason": reason.strip(),
            "reviewer": reviewer.strip(),
            "decided_at": decided_at or now_utc(),
            "os_user": user or os_user(),
        }
        conn.execute(insert(decisions), tail.link(decisions, row))
    return Decision(
        row["id"], submission_id, action, rule, roi, grade, row["reason"], row["reviewer"], row["decided_at"]
    )


def load_view(conn: Connection, submission_id: int) -> SubmissionView | None:
    """The submission with its decisions and the earlier versions' decisions to confirm."""
    sub = conn.execute(select(submissions).where(submissions.c.id == submission_id)).first()
    if sub is None:
        return None
    versions = conn.execute(
        select(submissions.c.id, submissions.c.version, submissions.c.supersedes)
        .where(submissions.c.patient_id == sub.patient_id, submissions.c.institution == sub.institution)
        .order_by(submissions.c.version, submissions.c.id)
    ).all()
    version_of = {v.id: v.version for v in versions}
    # a record is superseded by the first record of a later version of its case
    superseded_by = next((v.id for v in versions if v.version > sub.version), None)
    trail = [
        _decision(r)
        for r in conn.execute(
            select(decisions).where(decisions.c.submission_id.in_(list(version_of))).order_by(decisions.c.seq)
        )
    ]
    mine = tuple(d for d in trail if d.submission_id == sub.id)
    decided_here = {d.key for d in mine}
    earlier: dict[tuple[str | None, str | None], tuple[int, Decision]] = {}
    for d in trail:
        # decisions on an earlier version, or on an earlier record of this version (before a boost
        # was added or the facts corrected), are shown to confirm, never applied
        earlier_record = version_of[d.submission_id] == sub.version and d.submission_id < sub.id
        if (version_of[d.submission_id] < sub.version or earlier_record) and d.key not in decided_here:
            earlier[d.key] = (version_of[d.submission_id], d)
    document = json.loads(sub.report)
    return SubmissionView(
        id=sub.id,
        version=sub.version,
        patient_id=sub.patient_id,
        institution=sub.institution,
        plan_label=sub.plan_label,
        submitted_at=sub.submitted_at,
        os_user=sub.os_user,
        supersedes=sub.supersedes,
        superseded_by=superseded_by,
        document=document,
        findings=apply_decisions(document["plan"]["findings"], mine),
        decisions=mine,
        earlier=tuple(earlier.values()),
        kind=sub.kind or "version",
        evaluates=sub.evaluates,
    )


def view(ledger: Ledger, submission_id: int) -> SubmissionView:
    """:func:`load_view`, raising when there is no such submission.

    Raises
    ------
    LedgerError
        No submission with that number.
    """
    with reading(ledger) as conn:
        v = load_view(conn, submission_id)
    if v is None:
        raise LedgerError(f"{ledger.shown_url}: no submission {submission_id}")
    return v
