"""The office's statistics over the current version of each patient's case.

Definitions (also printed with every report):

- a *plan* is a case's current record: a case is one patient of one institution (the same
  PatientID at two centres is two cases), its current record the latest record of its highest
  version; earlier versions count as resubmissions (additions to a course and re-evaluations of
  a version do not);
- its *final grade* uses the reviewed grades (the automatic grade where no decision stands);
- an ineligible patient's plan (an eligibility rule failed) counts only as ineligible, whatever
  its grade, so never as a pass; the eligibility columns count eligible, ineligible and unknown
  (eligibility unknown is not ineligible: those plans keep their grade column);
- an incomplete plan (a rule not evaluable after review, or a file error) counts only as
  incomplete, never under a grade, so never as a pass;
- *deviations per rule*: plans whose reviewed grade of that rule is a deviation;
- *days to acceptance*: from the patient's first submission to the plan-acceptance decision
  standing on the current version;
- ``--since DATE`` keeps the submissions made on or after that day (UTC); ``--by month`` groups
  by the month of a patient's first submission.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ColumnElement, cast, select, type_coerce

from rtqa.ledger.db import Ledger, reading
from rtqa.ledger.review import ACCEPTS, GRADE_DECISION, Decision, _decision, apply_decisions, plan_grade
from rtqa.ledger.schema import decisions, findings, submissions
from rtqa.protocol.limits import Grade

BY = ("institution", "rule", "month")
CATEGORIES = ("ineligible", "per_protocol", "variation_acceptable", "deviation_unacceptable", "incomplete")
ELIGIBILITY = ("eligible", "ineligible", "unknown")
_CHUNK = 5000  # ids per IN list (SQLite's default limit of bound parameters is 32766)


@dataclass
class GroupStats:
    key: str
    plans: int = 0
    submissions: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    eligibility: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ELIGIBILITY, 0))
    accepted: int = 0
    rejected: int = 0
    days_to_acceptance: list[float] = field(default_factory=list)

    @property
    def resubmissions(self) -> int:
        return self.submissions - self.plans

    @property
    def median_days(self) -> float | None:
        return round(statistics.median(self.days_to_acceptance), 2) if self.days_to_acceptance else None

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "plans": self.plans,
            "submissions": self.submissions,
            "resubmissions": self.resubmissions,
            "resubmissions_per_patient": round(self.resubmissions / self.plans, 3) if self.plans else None,
            **self.counts,
            "eligible": self.eligibility["eligible"],
            "eligibility_unknown": self.eligibility["unknown"],
            "accepted": self.accepted,
            "rejected": self.rejected,
            "pending": self.plans - self.accepted - self.rejected,
            "median_days_to_acceptance": self.median_days,
        }


@dataclass
class RuleStats:
    rule: str
    deviation_unacceptable: int = 0
    variation_acceptable: int = 0
    not_evaluable: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "deviation_unacceptable": self.deviation_unacceptable,
            "variation_acceptable": self.variation_acceptable,
            "not_evaluable": self.not_evaluable,
        }


@dataclass
class Stats:
    by: str
    since: str | None
    total: GroupStats
    groups: list[GroupStats]
    rules: list[RuleStats]

    def as_json(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "since": self.since,
            "total": self.total.as_json(),
            "groups": [g.as_json() for g in self.groups],
            "rules": [r.as_json() for r in self.rules],
        }


def _days(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds() / 86400.0


def eligibility_status(dialect: str) -> ColumnElement[str]:
    """The recorded report's eligibility status, read by the database (no report is parsed here)."""
    path = ("plan", "eligibility", "status")
    if dialect == "postgresql":  # the report is TEXT: cast it to JSON for the path operator
        document: ColumnElement[Any] = cast(submissions.c.report, JSON)
    else:  # SQLite: JSON_EXTRACT
        document = type_coerce(submissions.c.report, JSON)
    out: ColumnElement[str] = document[path].as_string()
    return out


def compute_stats(ledger: Ledger, *, by: str = "institution", since: str | None = None) -> Stats:
    """Statistics over the ledger (see the module docstring for the definitions)."""
    s = submissions.c
    status = eligibility_status(ledger.engine.dialect.name).label("eligibility")
    query = select(s.id, s.patient_id, s.institution, s.version, s.grade, s.complete, s.submitted_at, s.kind)
    if since:
        query = query.where(s.submitted_at >= since)
    with reading(ledger) as conn:
        rows = conn.execute(query).all()
        # a case is one patient of one institution; its current record is the latest record of
        # its highest version (an addition or re-evaluation of that version included)
        current: dict[tuple[str, str], Any] = {}
        first: dict[tuple[str, str], str] = {}
        versions: dict[tuple[str, str], set[int]] = defaultdict(set)
        for row in rows:
            case = (row.institution, row.patient_id)
            versions[case].add(row.version)
            if case not in current or (row.version, row.id) > (current[case].version, current[case].id):
                current[case] = row
            if case not in first or row.submitted_at < first[case]:
                first[case] = row.submitted_at
        count = {case: len(v) for case, v in versions.items()}
        current_ids = {r.id for r in current.values()}
        # the eligibility of the current versions only, from the hashed report itself (never a
        # copy that could disagree with it); the database reads it, in chunks of ids
        eligibility: dict[int, str] = {}
        ids = sorted(current_ids)
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            for row in conn.execute(select(s.id, status).where(s.id.in_(chunk))):
                eligibility[row.id] = row.eligibility
        trail: dict[int, list[Decision]] = defaultdict(list)
        for d in conn.execute(select(decisions).order_by(decisions.c.seq)):
            if d.submission_id in current_ids:
                trail[d.submission_id].append(_decision(d))
        reviewed = {sid for sid, ds in trail.items() if any(d.action == GRADE_DECISION for d in ds)}
        off: dict[int, list[tuple[str, str]]] = defaultdict(list)
        for f in conn.execute(
            # IN rather than != so that the grade index is used: off-protocol findings are few
            select(findings.c.submission_id, findings.c.rule, findings.c.grade).where(
                findings.c.grade.in_([g.value for g in Grade if g is not Grade.PER_PROTOCOL])
            )
        ):
            if f.submission_id in current_ids and f.submission_id not in reviewed:
                off[f.submission_id].append((f.rule, f.grade))
        final: dict[int, tuple[str, bool]] = {}
        if reviewed:
            for rep in conn.execute(select(s.id, s.report).where(s.id.in_(sorted(reviewed)))):
                plan = json.loads(rep.report)["plan"]
                looked = apply_decisions(plan["findings"], trail[rep.id])
                off[rep.id] = [(x.finding["rule"], x.grade) for x in looked if x.grade != Grade.PER_PROTOCOL.value]
                complete = not plan.get("errors") and all(x.grade != Grade.NOT_EVALUABLE.value for x in looked)
                final[rep.id] = (plan_grade(x.grade for x in looked), complete)

    total = GroupStats("all")
    groups: dict[str, GroupStats] = {}
    rules: dict[str, RuleStats] = {}
    for case, r in sorted(current.items()):
        grade, complete = final.get(r.id, (r.grade, bool(r.complete)))
        key = r.institution if by != "month" else first[case][:7]
        targets = [total] + ([groups.setdefault(key, GroupStats(key))] if by != "rule" else [])
        plan_ds = [d for d in trail.get(r.id, []) if d.action != GRADE_DECISION]
        for g in targets:
            g.plans += 1
            g.submissions += count[case]
            status_r = eligibility.get(r.id)
            status_r = status_r if status_r in ELIGIBILITY else "unknown"
            g.eligibility[status_r] += 1
            if status_r == "ineligible":
                g.counts["ineligible"] += 1
            else:
                g.counts["incomplete" if not complete or grade == Grade.NOT_EVALUABLE.value else grade] += 1
            if plan_ds:
                if plan_ds[-1].action in ACCEPTS:
                    g.accepted += 1
                    g.days_to_acceptance.append(_days(first[case], plan_ds[-1].decided_at))
                else:
                    g.rejected += 1
        for rule in sorted({rule for rule, _ in off.get(r.id, [])}):
            grades = {g for ru, g in off[r.id] if ru == rule}
            rs = rules.setdefault(rule, RuleStats(rule))
            rs.deviation_unacceptable += Grade.DEVIATION_UNACCEPTABLE.value in grades
            rs.variation_acceptable += Grade.VARIATION_ACCEPTABLE.value in grades
            rs.not_evaluable += Grade.NOT_EVALUABLE.value in grades
    ordered_rules = sorted(
        rules.values(), key=lambda x: (-x.deviation_unacceptable, -x.variation_acceptable, -x.not_evaluable, x.rule)
    )
    return Stats(by, since, total, [groups[k] for k in sorted(groups)], ordered_rules)
