"""Text, JSON, CSV and HTML of what the ledger holds: a submission, a history, a diff, statistics."""

from __future__ import annotations

import html
import json
from typing import Any

from rtqa.ledger.diff import Diff
from rtqa.ledger.review import SubmissionView
from rtqa.ledger.stats import CATEGORIES, GroupStats, Stats
from rtqa.report.csv_cells import csv_text
from rtqa.report.render import clean
from rtqa.report.text_cells import clean_lines

LABEL = {
    "ineligible": "INELIGIBLE",
    "per_protocol": "PER PROTOCOL",
    "variation_acceptable": "VARIATION ACCEPTABLE",
    "deviation_unacceptable": "DEVIATION UNACCEPTABLE",
    "not_evaluable": "NOT EVALUABLE",
    "incomplete": "INCOMPLETE",
}
COLOUR = {
    "ineligible": "#4a0d0d",
    "per_protocol": "#2e7d32",
    "variation_acceptable": "#f9a825",
    "deviation_unacceptable": "#c62828",
    "incomplete": "#6a1b9a",
}


def _when(iso: str) -> str:
    return iso[:16].replace("T", " ") + " UTC"


def _value(v: Any, unit: str) -> str:
    return "-" if v is None else f"{v:g} {unit}".strip()


def _final(v: SubmissionView) -> str:
    """The final grade as ``rtqa check`` heads a plan: an incomplete plan is never shown as a
    bare pass, but as ``INCOMPLETE (best case ...)``; an ineligible patient's plan is
    ``INELIGIBLE`` first, then the plan's grade."""
    g = v.final_grade
    text = LABEL[g]
    if not v.complete and g not in ("deviation_unacceptable", "not_evaluable"):
        text = f"INCOMPLETE (best case {LABEL[g]})"
    if v.eligibility == "ineligible":
        return f"INELIGIBLE (plan: {text})"
    return text


def submission_text(v: SubmissionView) -> str:
    """The report of a submission as recorded, with reviewed grades and the decision trail."""
    plan = v.plan
    state = "complete" if v.complete else "INCOMPLETE"
    lines = [
        f"Submission {v.id}: patient {v.patient_id}, version {v.version}, {v.institution or 'institution unknown'}",
        f"  plan {v.plan_label}; submitted {_when(v.submitted_at)} by {v.os_user}; protocol "
        f"{v.document['protocol']['id']} v{v.document['protocol']['version']}; rtqa {v.document['rtqa_version']}",
    ]
    if v.supersedes:
        lines.append(f"  supersedes submission {v.supersedes}")
    if v.superseded_by:
        lines.append(f"  SUPERSEDED by submission {v.superseded_by}")
    lines.append(f"  Automatic grade: {LABEL[v.auto_grade]}   Final grade: {_final(v)}   {state}")
    rules = f" ({', '.join(v.ineligible_rules)}: a protocol violation)" if v.eligibility == "ineligible" else ""
    lines.append(f"  Eligibility: {v.eligibility}{rules}")
    lines.append(f"  Plan decision: {v.status}" + (f" ({v.plan_decision.text()})" if v.plan_decision else ""))
    lines.append(f"  {'rule':<22} {'ROI':<16} {'value':>12}  {'automatic':<24} reviewed")
    for f in v.findings:
        fj = f.finding
        roi = fj.get("matched_roi") or fj.get("structure") or ""
        mark = "" if f.decision is None else f"{LABEL[f.grade]} (decision {f.decision.id})"
        lines.append(
            f"  {fj['rule']:<22} {roi[:16]:<16} {_value(fj.get('value'), fj.get('unit', '')):>12}  "
            f"{LABEL[f.auto_grade]:<24} {mark}"
        )
    if v.decisions:
        lines.append("  Decision trail:")
        lines.extend(f"    #{d.id} {d.text()}" for d in v.decisions)
    if v.earlier:
        lines.append("  Decided on earlier versions, to confirm (not applied to this version):")
        lines.extend(f"    decided on version {n}: {d.text()}" for n, d in v.earlier)
    for e in plan.get("errors") or []:
        lines.append(f"  ERROR: {e.get('message')}")
    lines.append("  Input files:")
    lines.extend(f"    {i['modality']:<8} {i['sha256'][:16]}  {i['path']}" for i in plan["inputs"])
    return clean_lines(lines) + "\n"


def submission_json(v: SubmissionView) -> dict[str, Any]:
    """The JSON report (schema_version 1) as recorded, with additive ``review`` objects."""
    doc = dict(v.document)
    plan = v.plan
    findings = []
    for f in v.findings:
        out = dict(f.finding)
        out["review"] = {
            "automatic_grade": f.auto_grade,
            "grade": f.grade,
            "decisions": [d.as_json() for d in f.trail],
        }
        findings.append(out)
    plan["findings"] = findings
    plan["review"] = {
        "submission": v.id,
        "version": v.version,
        "submitted_at": v.submitted_at,
        "os_user": v.os_user,
        "supersedes": v.supersedes,
        "superseded_by": v.superseded_by,
        "kind": v.kind,
        "evaluates": v.evaluates,
        "automatic_grade": v.auto_grade,
        "final_grade": v.final_grade,
        "complete": v.complete,
        "eligibility": v.eligibility,
        "plan_decision": v.status,
        "decisions": [d.as_json() for d in v.decisions],
        "earlier_decisions": [{"version": n, **d.as_json()} for n, d in v.earlier],
    }
    return {
        "schema_version": doc["schema_version"],
        "rtqa_version": doc["rtqa_version"],
        "protocol": doc["protocol"],
        "settings": doc["settings"],
        "plans": [plan],
        "unassigned_files": [],
    }


def submission_html(v: SubmissionView) -> str:
    e = html.escape
    rows = []
    for f in v.findings:
        fj = f.finding
        trail = "<br>".join(e(d.text()) for d in f.trail)
        rows.append(
            f"<tr><td>{e(fj['rule'])}</td><td>{e(fj.get('matched_roi') or fj.get('structure') or '')}</td>"
            f"<td>{e(_value(fj.get('value'), fj.get('unit', '')))}</td><td>{LABEL[f.auto_grade]}</td>"
            f"<td>{LABEL[f.grade]}</td><td>{trail}</td></tr>"
        )
    earlier = "".join(f"<li>decided on version {n}: {e(d.text())}</li>" for n, d in v.earlier)
    plan_trail = "".join(f"<li>{e(d.text())}</li>" for d in v.decisions if d.action != "grade")
    errors = "".join(f"<li>{e(str(err.get('message', '')))}</li>" for err in v.plan.get("errors", ()))
    inputs = "".join(
        f"<tr><td>{e(str(i.get('modality', '')))}</td><td>{e(str(i.get('path', '')))}</td>"
        f"<td>{e(str(i.get('sop_instance_uid', '')))}</td><td>{e(str(i.get('sha256', '')))}</td></tr>"
        for i in v.plan.get("inputs", ())
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Submission {v.id} - {e(v.patient_id)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:2px 6px}</style></head><body>"
        f"<h1>Submission {v.id}: {e(v.patient_id)}, version {v.version}</h1>"
        f"<p>{e(v.institution)}; plan {e(v.plan_label)}; submitted {e(_when(v.submitted_at))} by {e(v.os_user)}</p>"
        f"<p>Automatic grade: <b>{LABEL[v.auto_grade]}</b>; final grade: <b>{e(_final(v))}</b>; "
        f"{'complete' if v.complete else 'INCOMPLETE'}; eligibility: <b>{e(v.eligibility)}</b>; "
        f"plan decision: {v.status}</p>"
        f"<ul>{plan_trail}</ul>"
        + (f"<h2>Decided on earlier versions, to confirm</h2><ul>{earlier}</ul>" if earlier else "")
        + (f"<h2>Why it could not be checked</h2><ul id='errors'>{errors}</ul>" if errors else "")
        + "<table><tr><th>rule</th><th>ROI</th><th>value</th><th>automatic</th><th>reviewed</th>"
        "<th>decisions</th></tr>"
        + "".join(rows)
        + "</table>"
        + "<h2>Input files</h2><table id='inputs'><tr><th>modality</th><th>file</th><th>SOP Instance UID</th>"
        "<th>SHA-256</th></tr>" + inputs + "</table></body></html>\n"
    )


def history_text(views: list[SubmissionView]) -> str:
    """Each case (institution + PatientID) of the patient: its versions, the plans of each
    record's course, additions to a course and re-evaluations."""
    lines: list[str] = []
    cases: dict[str, list[SubmissionView]] = {}
    for v in views:
        cases.setdefault(v.institution, []).append(v)
    for institution, records in cases.items():
        first = records[0]
        n = len({v.version for v in records})
        lines.append(
            f"Patient {clean(first.patient_id)} of {clean(institution or '(no institution)')}: {n} version(s), "
            f"{len(records)} record(s)"
        )
        lines.append(
            f"  {'ver':>3} {'subm.':>6}  {'record':<14} {'submitted':<21} {'automatic':<23} {'final':<23} "
            f"{'':<10} decision"
        )
        for v in records:
            state = "complete" if v.complete else "incomplete"
            kind = v.kind if v.evaluates is None else f"{v.kind} of {v.evaluates}"
            lines.append(
                f"  {v.version:>3} {v.id:>6}  {kind:<14} {_when(v.submitted_at):<21} {LABEL[v.auto_grade]:<23} "
                f"{_final(v):<23} {state:<10} {v.status}" + (" (superseded)" if v.superseded_by else "")
            )
            lines.append(f"        course: {_course(v.plan)}")
            for d in v.decisions:
                lines.append(f"        #{d.id} {d.text()}")
            for n_, d in v.earlier:
                lines.append(f"        to confirm, decided on version {n_}: {d.text()}")
    return clean_lines(lines) + "\n"


def _course(plan: dict[str, Any]) -> str:
    """The plans of a recorded course with their fractions (reports before courses: the label)."""
    course = plan.get("course") or {}
    plans = course.get("plans") or []
    if not plans:
        return clean(plan.get("plan_label") or "")
    shown = []
    for p in plans:
        total = "?" if p.get("total_gy") is None else f"{p['total_gy']:g} Gy"
        fx = p.get("fractions") or "?"
        shown.append(f"{clean(p.get('plan_label') or p.get('plan_uid', ''))} ({total} / {fx} fx)")
    return " + ".join(shown)


def diff_text(d: Diff) -> str:
    lines = [
        f"Submission {d.a.id} (patient {d.a.patient_id} version {d.a.version}) -> "
        f"submission {d.b.id} (patient {d.b.patient_id} version {d.b.version})",
        f"  grade: {LABEL[d.a.auto_grade]} -> {LABEL[d.b.auto_grade]}",
    ]
    for name, changes in d.sections.items():
        lines.append(f"  {name}: {len(changes)}")
        for c in changes:
            delta = "" if c.delta is None else f" ({c.delta:+g} {c.unit})"
            lines.append(
                f"    {c.rule} {c.roi or ''}: {_value(c.value_a, c.unit)} {c.grade_a or '-'} -> "
                f"{_value(c.value_b, c.unit)} {c.grade_b or '-'}{delta}"
            )
    lines.append(f"  input files changed: {len(d.inputs_removed)} removed, {len(d.inputs_added)} added")
    lines.extend(f"    - {i['modality']:<8} {i['sha256'][:16]}  {i['path']}" for i in d.inputs_removed)
    lines.extend(f"    + {i['modality']:<8} {i['sha256'][:16]}  {i['path']}" for i in d.inputs_added)
    return clean_lines(lines) + "\n"


def diff_json(d: Diff) -> dict[str, Any]:
    return {
        "a": d.a.id,
        "b": d.b.id,
        **{k: [c.as_json() for c in v] for k, v in d.sections.items()},
        "inputs_removed": d.inputs_removed,
        "inputs_added": d.inputs_added,
    }


_GROUP_COLUMNS = (
    "plans",
    "submissions",
    "resubmissions",
    "resubmissions_per_patient",
    *CATEGORIES,
    "eligible",
    "eligibility_unknown",
    "accepted",
    "rejected",
    "pending",
    "median_days_to_acceptance",
)


def stats_text(s: Stats) -> str:
    lines = [
        f"Ledger statistics{' since ' + s.since if s.since else ''}: current version of each patient's case; "
        "final grades after review; ineligible patients (INEL) and incomplete plans are counted apart, never as "
        "passes; elig. ? = eligibility unknown (counted under its grade as well)",
    ]
    header = f"  {'':<20} {'plans':>5} {'subm.':>5} {'resub.':>6} {'INEL':>4} {'PP':>4} {'VA':>4} {'DU':>4} "
    header += f"{'incompl.':>8} {'elig. ?':>7} {'accepted':>8} {'rejected':>8} {'median days':>11}"
    groups = [s.total] if s.by == "rule" else [*s.groups, s.total]
    if groups:
        lines.append(header)
    for g in groups:
        j = g.as_json()
        days = "-" if j["median_days_to_acceptance"] is None else f"{j['median_days_to_acceptance']:.1f}"
        lines.append(
            f"  {g.key[:20]:<20} {g.plans:>5} {g.submissions:>5} {g.resubmissions:>6} {j['ineligible']:>4} "
            f"{j['per_protocol']:>4} {j['variation_acceptable']:>4} {j['deviation_unacceptable']:>4} "
            f"{j['incomplete']:>8} {g.eligibility['unknown']:>7} {g.accepted:>8} {g.rejected:>8} {days:>11}"
        )
    rules = s.rules if s.by == "rule" else [r for r in s.rules if r.deviation_unacceptable]
    lines.append("")
    lines.append(
        "Plans per rule (deviation / variation / not evaluable):" if s.by == "rule" else "Most frequent deviations:"
    )
    for r in rules[: None if s.by == "rule" else 10]:
        lines.append(f"  {r.rule:<28} {r.deviation_unacceptable:>5} {r.variation_acceptable:>5} {r.not_evaluable:>5}")
    if not rules:
        lines.append("  none")
    return clean_lines(lines) + "\n"


def stats_csv(s: Stats) -> str:
    """Statistics as CSV; an institution name (chosen by the centre) is neutralised against
    formula injection like every CSV cell (:mod:`rtqa.report.csv_cells`)."""
    if s.by == "rule":
        return csv_text(
            ["rule", "deviation_unacceptable", "variation_acceptable", "not_evaluable"],
            ([r.rule, r.deviation_unacceptable, r.variation_acceptable, r.not_evaluable] for r in s.rules),
        )
    return csv_text(
        [s.by, *_GROUP_COLUMNS],
        ([g.key, *(g.as_json()[c] for c in _GROUP_COLUMNS)] for g in [*s.groups, s.total]),
    )


def stats_json(s: Stats) -> str:
    return json.dumps(s.as_json(), indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def _bars(g: GroupStats) -> str:
    """A horizontal stacked bar of the group's final grades, one segment per category, in SVG."""
    width, height, x = 400.0, 22, 0.0
    parts = []
    for cat in CATEGORIES:
        n = g.counts[cat]
        if not n:
            continue
        w = width * n / g.plans
        parts.append(
            f"<rect x='{x:.1f}' y='0' width='{w:.1f}' height='{height}' fill='{COLOUR[cat]}'>"
            f"<title>{LABEL[cat]}: {n}</title></rect>"
            f"<text x='{x + 3:.1f}' y='15' fill='white' font-size='12'>{n}</text>"
        )
        x += w
    label = html.escape(g.key)
    return f"<svg width='{width:.0f}' height='{height}' role='img' aria-label='{label}'>{''.join(parts)}</svg>"


def stats_html(s: Stats) -> str:
    e = html.escape
    groups = [*s.groups, s.total] if s.by != "rule" else [s.total]
    head = "".join(f"<th>{e(c)}</th>" for c in (s.by, *_GROUP_COLUMNS, "final grades"))
    body = []
    for g in groups:
        j = g.as_json()
        cells = "".join(f"<td>{'' if j[c] is None else j[c]}</td>" for c in _GROUP_COLUMNS)
        body.append(f"<tr><td>{e(g.key)}</td>{cells}<td>{_bars(g)}</td></tr>")
    legend = " ".join(f"<span style='color:{COLOUR[c]}'>&#9632; {LABEL[c]}</span>" for c in CATEGORIES)
    rules = "".join(
        f"<tr><td>{e(r.rule)}</td><td>{r.deviation_unacceptable}</td><td>{r.variation_acceptable}</td>"
        f"<td>{r.not_evaluable}</td></tr>"
        for r in s.rules
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>rtqa ledger statistics</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;"
        "padding:2px 6px}</style></head><body><h1>Ledger statistics</h1>"
        f"<p>Current version of each patient's case{', since ' + e(s.since) if s.since else ''}; final grades "
        "after review; incomplete plans are counted apart, never as passes.</p>"
        f"<p>{legend}</p><table><tr>{head}</tr>{''.join(body)}</table>"
        "<h2>Plans per rule</h2><table><tr><th>rule</th><th>deviation</th><th>variation</th><th>not evaluable</th>"
        f"</tr>{rules}</table></body></html>\n"
    )
