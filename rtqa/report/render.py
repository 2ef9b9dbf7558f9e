"""Renderers of check reports: text, JSON (schema_version 1) and CSV. They only render."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from rtqa import __version__
from rtqa.protocol.limits import Grade, format_value
from rtqa.report.csv_cells import csv_text
from rtqa.report.model import SCHEMA_VERSION, CheckResult, Finding, PlanReport
from rtqa.report.text_cells import clean as clean  # the one cleaner of every text renderer

GRADE_LABEL = {
    Grade.PER_PROTOCOL: "PER PROTOCOL",
    Grade.VARIATION_ACCEPTABLE: "VARIATION ACCEPTABLE",
    Grade.DEVIATION_UNACCEPTABLE: "DEVIATION UNACCEPTABLE",
    Grade.NOT_EVALUABLE: "NOT EVALUABLE",
}
VERDICT_LABEL = {
    "ineligible": "ineligible",
    "per_protocol": "per protocol",
    "variation_acceptable": "variation acceptable",
    "deviation_unacceptable": "deviation unacceptable",
    "incomplete": "incomplete",
    "not_evaluable": "not evaluable",
}


def headline(r: PlanReport) -> str:
    """``PER PROTOCOL   complete``, ``INCOMPLETE (best case ...): not evaluable ...`` and so on;
    an ineligible patient's plan is headed ``INELIGIBLE (rules)`` before the plan's own grade."""
    plan = plan_headline(r)
    if r.verdict == "ineligible":
        return f"INELIGIBLE ({', '.join(ineligible_rules(r))}): a protocol violation; plan: {plan}"
    return plan


def ineligible_rules(r: PlanReport) -> list[str]:
    """The eligibility rules the patient fails."""
    return list(dict.fromkeys(f.rule for f in r.eligibility if f.grade is Grade.DEVIATION_UNACCEPTABLE))


def listed_findings(r: PlanReport) -> tuple[Finding, ...]:
    """Every finding of a plan in report order: the failed eligibility rules first when the
    patient is ineligible (the verdict is shown first), then the plan's findings, then the other
    eligibility items."""
    if r.verdict == "ineligible":
        failed = tuple(f for f in r.eligibility if f.grade is Grade.DEVIATION_UNACCEPTABLE)
        return (*failed, *r.findings, *(f for f in r.eligibility if f not in failed))
    return (*r.findings, *r.eligibility)


def plan_headline(r: PlanReport) -> str:
    """The plan-quality headline, eligibility aside."""
    missing = ", ".join(r.not_evaluable) or "(error)"
    if r.grade is Grade.NOT_EVALUABLE:
        return f"{GRADE_LABEL[r.grade]}   INCOMPLETE: not evaluable {missing}"
    if r.complete:
        return f"{GRADE_LABEL[r.grade]}   complete"
    if r.grade is Grade.DEVIATION_UNACCEPTABLE:
        return f"{GRADE_LABEL[r.grade]}   INCOMPLETE: not evaluable {missing}"
    return f"INCOMPLETE (best case {GRADE_LABEL[r.grade]}): not evaluable {missing}"


COLOUR = {
    Grade.PER_PROTOCOL: "green",
    Grade.VARIATION_ACCEPTABLE: "yellow",
    Grade.DEVIATION_UNACCEPTABLE: "red",
    Grade.NOT_EVALUABLE: "magenta",
}


def _limits(f: Finding) -> str:
    parts = []
    sym = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}
    for name, lim in (("", f.per_protocol), ("var ", f.variation)):
        if lim is None:
            continue
        if lim.op == "between":
            parts.append(f"{name}{lim.low:g}–{lim.high:g}")
        else:
            parts.append(f"{name}{sym[lim.op]}{lim.value:g}")
    return "; ".join(parts)


def course_lines(course: dict[str, Any] | None) -> list[str]:
    """The course of a report in text: its plans with their fraction groups, how they were joined
    and how the composite dose was formed (nothing for a course of one plan of one group)."""
    if not course:
        return []
    plans = course.get("plans", [])
    groups = sum(len(p.get("fraction_groups", [])) for p in plans)
    if len(plans) < 2 and groups < 2:
        return []
    lines = [f"  Course: {len(plans)} plan(s) of {clean(course.get('institution') or '(no institution)')} / "
             f"{clean(course.get('patient_id', ''))}"]  # fmt: skip
    for p in plans:
        total = "?" if p.get("total_gy") is None else f"{p['total_gy']:.2f} Gy"
        lines.append(
            f"    plan {clean(p.get('plan_label') or p.get('plan_uid', ''))}: {total} in {p.get('fractions') or '?'} "
            f"fractions; dose: {clean(p.get('dose_source') or 'none')}"
        )
        for g in p.get("fraction_groups", []):
            per = "?" if g.get("per_fraction_gy") is None else f"{g['per_fraction_gy']:.2f} Gy"
            lines.append(f"      fraction group {g['number']}: {g.get('fractions') or '?'} x {per} (BeamDose)")
    for link in course.get("links", []):
        lines.append(f"    joined: {clean(link)}")
    if course.get("composite"):
        lines.append(f"    composite dose: {clean(course['composite'])}")
    return lines


def equivalent_lines(r: PlanReport) -> list[str]:
    """Why EQD2 values are shown and how they were converted, and each α/β with its source,
    once per plan (the rows show the values)."""
    eqs = [(f.structure or "", f.equivalent) for f in r.findings if f.equivalent is not None]
    if not eqs:
        return []
    graded_only = all(e.graded for _, e in eqs)
    head = "graded where a rule is stated in it" if graded_only else "beside the physical values, for information"
    lines = [f"  EQD2/BED ({head}):"]
    for basis in dict.fromkeys(e.basis for _, e in eqs if e.basis):
        lines.append(f"    {clean(basis)}")
    by_ab: dict[tuple[float | None, str, bool], list[str]] = {}
    for structure, e in eqs:
        names = by_ab.setdefault((e.alpha_beta_gy, e.source, e.unconfirmed), [])
        if structure not in names:
            names.append(structure)
    for (ab, source, unconfirmed), names in by_ab.items():
        dagger = " †" if unconfirmed else ""
        lines.append(f"    α/β {ab:g} Gy{dagger} for {', '.join(clean(n) for n in names)}: {clean(source)}")
    return lines


def _equivalent_row(f: Finding) -> str | None:
    e = f.equivalent
    if e is None:
        return None
    dagger = " †" if e.unconfirmed else ""
    ab = f"α/β {e.alpha_beta_gy:g} Gy{dagger}"
    if e.graded:
        physical = "-" if e.physical_value is None else format_value(e.physical_value, e.physical_unit)
        return f"  {'':<20} graded in {e.label} ({ab}): {e.shown}; physical {physical}"
    if e.value is None and e.interval is None:
        return f"  {'':<20} {e.label} ({ab}): {clean(e.note)}"
    return f"  {'':<20} {e.label} {e.metric} ({ab}): {e.shown} (informational; physical {f.shown_value})"


def review_sentence(r: PlanReport) -> str:
    """What the reports say of a plan whose grade depends on the DVH end-cap convention (the
    text report's and the HTML page's "Review:" line)."""
    return (
        "the grade of " + ", ".join(r.convention_sensitive) + " depends on the DVH end-cap convention (the "
        "structure's ends); graded with the protocol's, see the findings"
    )


def render_text(
    result: CheckResult, *, paint: Callable[[str, Grade], str] | None = None, include_names: bool = False
) -> str:
    """The text report; ``paint`` colours a grade label (the CLI passes one on a terminal)."""
    if paint is None:

        def paint(text: str, g: Grade) -> str:
            return text

    lines = [
        f"rtqa {__version__} - protocol {result.protocol.id} v{result.protocol.version} "
        f"(DVH end cap {result.protocol.end_cap.value}); † = threshold unconfirmed by the protocol owner",
        "",
    ]
    for r in result.reports:
        who = clean(r.patient_id) + (f" ({clean(r.patient_name)})" if include_names and r.patient_name else "")
        lines.append(f"Patient {who} - plan {clean(r.plan_label)}")
        head = headline(r)
        label = GRADE_LABEL[r.grade]
        if head.startswith("INELIGIBLE"):
            head = paint("INELIGIBLE", Grade.DEVIATION_UNACCEPTABLE) + head[len("INELIGIBLE") :]
        lines.append("  Grade: " + head.replace(label, paint(label, r.grade), 1))
        if r.resubmit:
            lines.append("  Resubmit: the export must be redone (see the findings of category resubmit)")
        if any(f.category == "query" for f in r.findings):
            lines.append("  Query: a question to the centre (see the findings of category query)")
        if r.convention_sensitive:
            lines.append("  Review: " + review_sentence(r))
        lines.append(f"  Eligibility: {r.eligibility_status}")
        for e in r.errors:
            lines.append(f"  ERROR: {clean(e['message'])}")
        if r.prescription:
            rx = r.prescription
            per = f"{rx['per_fraction_gy']:.2f} Gy x {rx['fractions']}" if rx.get("per_fraction_gy") else "?"
            total = "?" if rx.get("total_gy") is None else f"{rx['total_gy']:.2f}"
            lines.append(f"  Prescription: {total} Gy ({per}) from {rx['source']}; dose: {r.dose_source}")
        lines.extend(course_lines(r.course))
        lines.extend(equivalent_lines(r))
        if r.findings or r.eligibility:
            lines.append(f"  {'rule':<20} {'structure -> ROI':<30} {'metric':<24} {'value':>10}  {'limits':<22} grade")
            for f in listed_findings(r):
                roi = f.structure or ""
                if f.matched_roi and f.matched_roi != f.structure:
                    roi = f"{roi} -> {f.matched_roi}" if roi else f.matched_roi
                if f.match and f.match != "exact":
                    # where the column is too narrow, a protocol name (alias, tg263, pattern) shows
                    # the ROI names whole; a placement from outside the names shortens them instead
                    kind = f" ({f.match.replace('_', ' ')})"
                    if len(roi) + len(kind) <= 30:
                        roi += kind
                    elif f.match in ("name_map", "dose_reference", "interpreted_type"):
                        roi = roi[: 29 - len(kind)] + "…" + kind
                dagger = " †" if f.unconfirmed else ""
                tag = f" [{f.category}]" if f.category in ("resubmit", "query") else ""
                if f.category == "eligibility" and f.grade is Grade.DEVIATION_UNACCEPTABLE:
                    tag = " [ineligible]"
                lines.append(
                    f"  {f.rule:<20} {clean(roi)[:30]:<30} {f.metric[:24]:<24} {clean(f.shown_value)[:16]:>10}  "
                    f"{_limits(f)[:22]:<22} {paint(GRADE_LABEL[f.grade], f.grade)}{dagger}{tag}"
                )
                if (
                    f.grade is not Grade.PER_PROTOCOL
                    or f.possible_grades
                    or f.interval is not None
                    or f.convention_sensitive
                ):
                    lines.append(f"  {'':<20} {clean(f.message)}")
                if (row := _equivalent_row(f)) is not None:
                    lines.append(row)
        for n in r.not_applicable:
            lines.append(f"  {n.rule:<20} {clean(n.structure or ''):<30} NOT APPLICABLE: {clean(n.reason)}")
        if r.unmatched_rois:
            listed = ", ".join(repr(clean(n)) for n in r.unmatched_rois)
            lines.append(f"  ROIs the protocol does not recognise (not graded): {listed}")
        for w in r.warnings:
            lines.append(f"  warning: {clean(w)}")
        for w in r.stored_dvh:
            lines.append(f"  stored DVH: {clean(w)}")
        lines.append("")
    for w in result.warnings:
        lines.append(f"warning: {clean(w)}")
    if len(result.reports) > 1 or result.unassigned or result.skipped or result.skipped_files:
        lines.extend(render_summary(result))
    return "\n".join(lines).rstrip() + "\n"


def verdict_counts(result: CheckResult) -> dict[str, int]:
    """Plans per verdict, each plan in one column (an incomplete plan is never a pass)."""
    counts = Counter(r.verdict for r in result.reports)
    return {v: counts.get(v, 0) for v in VERDICT_LABEL}


def render_summary(result: CheckResult) -> list[str]:
    counts = verdict_counts(result)
    lines = [
        f"Summary: {len(result.reports)} plan(s): " + ", ".join(f"{n} {VERDICT_LABEL[v]}" for v, n in counts.items())
    ]
    for r in result.reports:
        review = f"  review: {', '.join(r.convention_sensitive)} depend(s) on the end cap"
        lines.append(
            f"  {clean(r.patient_id)[:20]:<20} {clean(r.plan_label)[:30]:<30} {VERDICT_LABEL[r.verdict].upper():<24} "
            f"{'complete' if r.complete else 'incomplete'}{review if r.convention_sensitive else ''}"
        )
    for u in result.unassigned:
        lines.append(f"  unassigned: {clean(u.path)}: {clean(u.reason)}")
    for path, reason in result.skipped:
        lines.append(f"  not graded: {clean(path)}: {clean(reason)}")
    for path, reason in result.skipped_files:
        lines.append(f"  skipped (never opened): {clean(path)}: {clean(reason)}")
    return lines


def as_json(result: CheckResult, *, include_names: bool = False) -> dict[str, Any]:
    p = result.protocol
    return {
        "schema_version": SCHEMA_VERSION,
        "rtqa_version": __version__,
        "protocol": {"id": p.id, "version": p.version, "sha256": p.sha256},
        "settings": {
            "dvh": {
                "end_cap": p.end_cap.value,
                "bin_width_gy": 0.01,
                "supersampling": "scan lines at 1/10 pixel (finer for small structures), exact along "
                "x; sub-slabs no thicker than the dose z spacing",
            }
        },
        "plans": [r.as_json(include_names=include_names) for r in result.reports],
        "unassigned_files": [{"file": u.path, "reason": u.reason} for u in result.unassigned],
        "not_graded": [{"file": f, "reason": why} for f, why in result.skipped],
        "warnings": list(result.warnings),
        "summary": verdict_counts(result),
        "skipped_files": [{"file": f, "reason": why} for f, why in result.skipped_files],
    }


def render_json(result: CheckResult, *, include_names: bool = False) -> str:
    return (
        json.dumps(as_json(result, include_names=include_names), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
    )


PLAN_COLUMNS = [
    "patient_id",
    "plan_uid",
    "plan_label",
    "plan_date",
    "approval_status",
    "institution",
    "verdict",
    "grade",
    "complete",
    "resubmit",
    "deviations",
    "deviation_rules",
    "variations",
    "variation_rules",
    "not_evaluable",
    "eligibility",
    "total_gy",
    "fractions",
    "per_fraction_gy",
    "prescription_source",
    "dose_source",
    "protocol_id",
    "protocol_version",
    "protocol_sha256",
    "checked_at",
    "errors",
    "warnings",
    "convention_sensitive",
]
FINDING_COLUMNS = [
    "patient_id",
    "plan_uid",
    "rule",
    "structure",
    "matched_roi",
    "match",
    "metric",
    "value",
    "unit",
    "reference_gy",
    "per_protocol",
    "variation_acceptable",
    "grade",
    "category",
    "unconfirmed",
    "location_mm",
    "source",
    "message",
    "convention_sensitive",
    "by_end_cap",
]


def plans_csv(result: CheckResult) -> str:
    """One row per plan (``plans.csv``): grade, the rules at each grade, prescription, protocol
    identity and the time of the check. Text cells are neutralised against formula injection."""
    p = result.protocol
    rows = []
    for r in result.reports:
        rx = r.prescription or {}
        deviations = _rules_at(r.findings, Grade.DEVIATION_UNACCEPTABLE)
        variations = _rules_at(r.findings, Grade.VARIATION_ACCEPTABLE)
        rows.append(
            [
                r.patient_id,
                r.plan_uid,
                r.plan_label,
                r.plan_date,
                r.approval_status,
                r.institution,
                r.verdict,
                r.grade.value,
                r.complete,
                r.resubmit,
                len(deviations),
                ";".join(deviations),
                len(variations),
                ";".join(variations),
                ";".join(r.not_evaluable),
                r.eligibility_status,
                rx.get("total_gy"),
                rx.get("fractions"),
                rx.get("per_fraction_gy"),
                rx.get("source"),
                r.dose_source,
                p.id,
                p.version,
                p.sha256,
                result.checked_at,
                " | ".join(e["message"] for e in r.errors),
                " | ".join(r.warnings),
                ";".join(r.convention_sensitive),
            ]
        )
    return csv_text(PLAN_COLUMNS, rows)


def _rules_at(findings: tuple[Finding, ...], grade: Grade) -> list[str]:
    return list(dict.fromkeys(f.rule for f in findings if f.grade is grade))


def findings_csv(result: CheckResult) -> str:
    """One row per finding (``findings.csv``, and ``--format csv`` on stdout)."""
    rows = []
    for r in result.reports:
        for f in listed_findings(r):
            j = f.as_json()
            rows.append(
                [
                    r.patient_id,
                    r.plan_uid,
                    f.rule,
                    f.structure,
                    f.matched_roi,
                    f.match,
                    f.metric,
                    _csv_value(f, j["value"]),
                    f.unit,
                    None if f.reference_gy is None else round(f.reference_gy, 2),
                    f.per_protocol.text() if f.per_protocol else None,
                    f.variation.text() if f.variation else None,
                    f.grade.value,
                    f.category,
                    f.unconfirmed,
                    None if f.location_mm is None else " ".join(f"{v:.1f}" for v in f.location_mm),
                    f.source,
                    f.message,
                    f.convention_sensitive,
                    "; ".join(
                        f"{e.end_cap} {e.shown(f.unit)} {e.grade.value}"
                        + (f" ({'/'.join(dict.fromkeys(g.value for g, _ in e.possible))})" if e.possible else "")
                        for e in f.by_end_cap
                    ),
                ]
            )
        # a rule never vanishes: the rules that do not apply, with the reason, as in text and JSON
        for n in r.not_applicable:
            row: list[str | float | None] = [None] * len(FINDING_COLUMNS)
            row[:5] = [r.patient_id, r.plan_uid, n.rule, n.structure, None]
            row[FINDING_COLUMNS.index("grade")] = "not_applicable"
            row[FINDING_COLUMNS.index("message")] = n.reason
            rows.append(row)
    return csv_text(FINDING_COLUMNS, rows)


def _csv_value(f: Finding, rounded: float | None) -> str | float | None:
    """The number, else the text value or the interval: every finding shows its value."""
    if rounded is not None:
        return rounded
    if f.value_text is not None:
        return f.value_text
    if f.interval is not None:
        return f"{f.interval[0]}–{f.interval[1]}"
    return ""
