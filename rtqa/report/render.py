"""Renderers of check reports: text, JSON (schema_version 1) and CSV. They only render."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from rtqa import __version__
from rtqa.protocol.limits import Grade, format_value
from rtqa.report.csv_cells import csv_text
from rtqa.report.model import SCHEMA_VERSION, CheckResult, Finding

GRADE_LABEL = {
    Grade.PER_PROTOCOL: "PER PROTOCOL",
    Grade.VARIATION_ACCEPTABLE: "VARIATION ACCEPTABLE",
    Grade.DEVIATION_UNACCEPTABLE: "DEVIATION UNACCEPTABLE",
    Grade.NOT_EVALUABLE: "NOT EVALUABLE",
}
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
        who = f"{r.patient_id}" + (f" ({r.patient_name})" if include_names and r.patient_name else "")
        lines.append(f"Patient {who} - plan {r.plan_label}")
        status = "complete" if r.complete else f"INCOMPLETE: not evaluable {', '.join(r.not_evaluable) or '(error)'}"
        lines.append(f"  Grade: {paint(GRADE_LABEL[r.grade], r.grade)}   {status}")
        lines.append(f"  Eligibility: {r.eligibility_status}")
        for e in r.errors:
            lines.append(f"  ERROR {e['type']}: {e['message']}")
        if r.prescription:
            rx = r.prescription
            per = f"{rx['per_fraction_gy']:.2f} Gy x {rx['fractions']}" if rx.get("per_fraction_gy") else "?"
            total = "?" if rx.get("total_gy") is None else f"{rx['total_gy']:.2f}"
            lines.append(f"  Prescription: {total} Gy ({per}) from {rx['source']}; dose: {r.dose_source}")
        if r.findings or r.eligibility:
            lines.append(f"  {'rule':<20} {'structure -> ROI':<30} {'metric':<24} {'value':>10}  {'limits':<22} grade")
            for f in (*r.findings, *r.eligibility):
                roi = f.structure or ""
                if f.matched_roi and f.matched_roi != f.structure:
                    roi += f" -> {f.matched_roi}"
                value = format_value(f.value, f.unit)
                dagger = " †" if f.unconfirmed else ""
                lines.append(
                    f"  {f.rule:<20} {roi[:30]:<30} {f.metric[:24]:<24} {value:>10}  "
                    f"{_limits(f)[:22]:<22} {paint(GRADE_LABEL[f.grade], f.grade)}{dagger}"
                )
                if f.grade is Grade.NOT_EVALUABLE:
                    lines.append(f"  {'':<20} {f.message}")
        for w in r.warnings:
            lines.append(f"  warning: {w}")
        lines.append("")
    if len(result.reports) > 1 or result.unassigned or result.skipped:
        lines.extend(render_summary(result))
    return "\n".join(lines).rstrip() + "\n"


def render_summary(result: CheckResult) -> list[str]:
    counts = Counter(r.grade for r in result.reports)
    incomplete = sum(1 for r in result.reports if not r.complete)
    lines = [
        f"Summary: {len(result.reports)} plan(s): "
        + ", ".join(f"{counts.get(g, 0)} {GRADE_LABEL[g].lower()}" for g in Grade)
        + f"; {incomplete} incomplete"
    ]
    for r in result.reports:
        lines.append(
            f"  {r.patient_id:<20} {r.plan_label[:30]:<30} {GRADE_LABEL[r.grade]:<24} "
            f"{'complete' if r.complete else 'incomplete'}"
        )
    for u in result.unassigned:
        lines.append(f"  unassigned: {u.path}: {u.reason}")
    for path, reason in result.skipped:
        lines.append(f"  not graded: {path}: {reason}")
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
    "grade",
    "complete",
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
    "unconfirmed",
    "location_mm",
    "source",
    "message",
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
                r.grade.value,
                r.complete,
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
            ]
        )
    return csv_text(PLAN_COLUMNS, rows)


def _rules_at(findings: tuple[Finding, ...], grade: Grade) -> list[str]:
    return list(dict.fromkeys(f.rule for f in findings if f.grade is grade))


def findings_csv(result: CheckResult) -> str:
    """One row per finding (``findings.csv``, and ``--format csv`` on stdout)."""
    rows = []
    for r in result.reports:
        for f in (*r.findings, *r.eligibility):
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
                    j["value"],
                    f.unit,
                    None if f.reference_gy is None else round(f.reference_gy, 2),
                    f.per_protocol.text() if f.per_protocol else None,
                    f.variation.text() if f.variation else None,
                    f.grade.value,
                    f.unconfirmed,
                    None if f.location_mm is None else " ".join(f"{v:.1f}" for v in f.location_mm),
                    f.source,
                    f.message,
                ]
            )
    return csv_text(FINDING_COLUMNS, rows)
