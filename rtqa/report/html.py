"""HTML reports: one self-contained page per plan (inline styles, the DVH as inline SVG, no
network), and an index page for a batch with a summary per institution. They only render."""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict

from rtqa import __version__
from rtqa.protocol.limits import Grade, format_value
from rtqa.report.model import CheckResult, Finding, PlanReport
from rtqa.report.render import GRADE_LABEL

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#1b1b1b;max-width:1100px}
h1{font-size:1.4em;margin-bottom:.2em} h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;font-size:.85em} th,td{border:1px solid #ccc;padding:3px 6px;
text-align:left;vertical-align:top} th{background:#f0f0f0} td.num{text-align:right;white-space:nowrap}
.g{font-weight:600;padding:1px 6px;border-radius:3px;white-space:nowrap}
.per_protocol{background:#dff3e0;color:#17561f} .variation_acceptable{background:#fff2c6;color:#6b4e00}
.deviation_unacceptable{background:#f8d4d4;color:#7d1313} .not_evaluable{background:#e9ddf2;color:#4b2466}
.facts td:first-child{width:14em;font-weight:600} tr.detail td{border-top:none;font-size:.95em;color:#333}
td.src{max-width:16em;font-size:.8em} .warn li{margin:.15em 0} .muted{color:#666;font-size:.85em}
svg{max-width:100%;height:auto;border:1px solid #ddd}
@media print{body{margin:0;max-width:none} h2{page-break-after:avoid} table,svg{page-break-inside:avoid}}
"""
_PALETTE = [
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
    "#393b79",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
]


def _e(text: object) -> str:
    return html.escape("" if text is None else str(text))


def _grade(g: Grade) -> str:
    return f'<span class="g {g.value}">{_e(GRADE_LABEL[g])}</span>'


def page_name(report: PlanReport, index: int) -> str:
    """A file name for the page of one plan: patient and label, made safe."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{report.patient_id}_{report.plan_label}")[:80]
    return f"{index:03d}_{stem}.html"


def render_plan_html(result: CheckResult, report: PlanReport, *, include_names: bool = False) -> str:
    p = result.protocol
    title = f"rtqa report - {report.patient_id} - {report.plan_label}"
    rx = report.prescription or {}
    facts = [
        ("Patient", report.patient_id + (f" ({report.patient_name})" if include_names and report.patient_name else "")),
        ("Plan", f"{report.plan_label} ({report.plan_uid})"),
        ("Plan date / approval", f"{report.plan_date or '-'} / {report.approval_status or '-'}"),
        ("Institution", report.institution or "-"),
        (
            "Prescription",
            f"{rx.get('total_gy', '-')} Gy in {rx.get('fractions', '-')} fractions "
            f"({rx.get('per_fraction_gy', '-')} Gy per fraction), from {rx.get('source', '-')}",
        ),
        (
            "Target prescriptions",
            ", ".join(f"{t['name']} {t['total_gy']} Gy ({t.get('source', '')})" for t in rx.get("targets", [])) or "-",
        ),
        ("Dose", report.dose_source or "-"),
        ("Protocol", f"{p.id} v{p.version} (sha256 {p.sha256[:16]}...)"),
        ("DVH settings", f"end cap {p.end_cap.value}; bins 0.01 Gy; partial-volume scan lines"),
        (
            "Completeness",
            "complete"
            if report.complete
            else "INCOMPLETE - not evaluable: " + (", ".join(report.not_evaluable) or "see errors"),
        ),
        ("Eligibility", report.eligibility_status),
    ]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in facts)
    files = "".join(
        f"<tr><td>{_e(i.modality)}</td><td>{_e(i.path)}</td><td class='muted'>{_e(i.sha256)}</td></tr>"
        for i in report.inputs
    )
    errors = "".join(f"<li><b>{_e(e['type'])}</b>: {_e(e['message'])}</li>" for e in report.errors)
    warnings = "".join(f"<li>{_e(w)}</li>" for w in report.warnings)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<h1>{_e(report.patient_id)} - {_e(report.plan_label)}</h1>
<p>Overall grade: {_grade(report.grade)} &nbsp; {"complete" if report.complete else "<b>incomplete</b>"}
&nbsp; <span class="muted">rtqa {_e(__version__)}; † marks a threshold the protocol owner has not confirmed</span></p>
{f"<h2>Errors</h2><ul>{errors}</ul>" if errors else ""}
<h2>Plan facts</h2><table class="facts">{rows}</table>
<h2>Findings</h2>{_findings_table(report)}
<h2>Cumulative DVH</h2>{_dvh_svg(report)}
<h2>Warnings</h2>{f'<ul class="warn">{warnings}</ul>' if warnings else "<p>None.</p>"}
<h2>Input files</h2><table><tr><th>modality</th><th>file</th><th>sha256</th></tr>{files}</table>
</body></html>
"""


def _findings_table(report: PlanReport) -> str:
    """Rule, structure and ROI, metric, value, limits, grade, source; the sentence of every finding
    that is not per protocol on a line of its own (all sentences are in the rows' tooltips)."""
    head = (
        "<table id='findings'><tr><th>rule</th><th>structure → ROI</th><th>metric</th><th>value</th>"
        "<th>per protocol</th><th>variation acceptable</th><th>grade</th><th>source</th></tr>"
    )
    body = []
    for f in (*report.findings, *report.eligibility):
        roi = _e(f.structure or "")
        if f.matched_roi and f.matched_roi != f.structure:
            roi += f" → {_e(f.matched_roi)}" + (f" <span class='muted'>({_e(f.match)})</span>" if f.match else "")
        value = format_value(f.value, f.unit)
        dagger = " †" if f.unconfirmed else ""
        body.append(
            f"<tr title='{_e(f.message)}'><td>{_e(f.rule)}</td><td>{roi}</td><td>{_e(f.metric)}</td>"
            f"<td class='num'>{_e(value)}</td><td>{_e(f.per_protocol.text(f.unit) if f.per_protocol else '')}</td>"
            f"<td>{_e(f.variation.text(f.unit) if f.variation else '')}</td><td>{_grade(f.grade)}{dagger}</td>"
            f"<td class='muted src'>{_e(f.source)}</td></tr>"
        )
        if f.grade is not Grade.PER_PROTOCOL:
            body.append(f"<tr class='detail'><td></td><td colspan='7'>{_e(f.message)}</td></tr>")
    return head + "".join(body) + "</table>"


def _dvh_svg(report: PlanReport) -> str:
    curves = report.curves
    if not curves:
        return "<p>No DVH (no dose, or no structure could be evaluated).</p>"
    width, height, left, bottom, top, right = 860, 420, 55, 40, 15, 170
    dmax = max((c[0][-1] for c in curves.values() if c[0]), default=1.0) or 1.0
    dmax = float(int(dmax / 10 + 1) * 10)
    pw, ph = width - left - right, height - top - bottom

    def sx(d: float) -> float:
        return left + pw * d / dmax

    def sy(v: float) -> float:
        return top + ph * (1 - v / 100.0)

    parts = [
        f'<svg id="dvh" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="cumulative DVH">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>',
    ]
    for i in range(11):
        d = dmax * i / 10
        parts.append(
            f'<line x1="{sx(d):.1f}" y1="{top}" x2="{sx(d):.1f}" y2="{top + ph}" stroke="#eee"/>'
            f'<text x="{sx(d):.1f}" y="{height - bottom + 15}" font-size="10" text-anchor="middle">'
            f"{d:g}</text>"
        )
        v = 10 * i
        parts.append(
            f'<line x1="{left}" y1="{sy(v):.1f}" x2="{left + pw}" y2="{sy(v):.1f}" stroke="#eee"/>'
            f'<text x="{left - 5}" y="{sy(v) + 3:.1f}" font-size="10" text-anchor="end">{v}</text>'
        )
    parts.append(
        f'<text x="{left + pw / 2}" y="{height - 5}" font-size="11" text-anchor="middle">dose (Gy)</text>'
        f'<text x="12" y="{top + ph / 2}" font-size="11" transform="rotate(-90 12 {top + ph / 2})" '
        f'text-anchor="middle">volume (%)</text>'
    )
    colours = {}
    for n, (name, (dose, volume)) in enumerate(sorted(curves.items())):
        colour = _PALETTE[n % len(_PALETTE)]
        colours[name] = colour
        points = " ".join(f"{sx(d):.1f},{sy(v):.1f}" for d, v in zip(dose, volume, strict=True))
        parts.append(
            f'<polyline class="curve" data-structure="{_e(name)}" fill="none" stroke="{colour}" '
            f'stroke-width="1.5" points="{points}"/>'
        )
        ly = top + 12 + 14 * n
        parts.append(
            f'<line x1="{width - right + 10}" y1="{ly - 4}" x2="{width - right + 28}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"/><text x="{width - right + 32}" y="{ly}" '
            f'font-size="10">{_e(name)}</text>'
        )
    for f in report.findings:
        parts.extend(_limit_marks(f, colours, sx, sy, dmax))
    parts.append("</svg>")
    return "".join(parts)


def _limit_marks(f: Finding, colours: dict[str, str], sx, sy, dmax: float) -> list[str]:  # type: ignore[no-untyped-def]
    """A mark per constraint limit: a vertical tick at a dose limit, a cross at a volume limit."""
    if f.structure not in colours or f.per_protocol is None or f.per_protocol.value is None:
        return []
    colour = colours[f.structure]
    limit = f.per_protocol.value
    metric = f.metric
    title = f"<title>{_e(f.rule)}: {_e(metric)} {_e(f.per_protocol.text(f.unit))}</title>"
    if metric.startswith(("D", "Mean", "Max")) and f.unit in ("Gy", "%"):
        dose = limit if f.unit == "Gy" else (limit / 100 * (f.reference_gy or 0))
        if not 0 < dose <= dmax:
            return []
        m = re.match(r"^D(\d+(?:\.\d+)?)%", metric)
        y = sy(100 - float(m.group(1))) if m and not metric.startswith("DC") else sy(50)
        return [
            f'<g class="limit">{title}<line x1="{sx(dose):.1f}" y1="{y - 8:.1f}" x2="{sx(dose):.1f}" '
            f'y2="{y + 8:.1f}" stroke="{colour}" stroke-width="2.5"/></g>'
        ]
    m = re.match(r"^V(\d+(?:\.\d+)?)(Gy|%)\[%\]$", metric)
    if m:
        dose = float(m.group(1)) if m.group(2) == "Gy" else float(m.group(1)) / 100 * (f.reference_gy or 0)
        x, y = sx(dose), sy(limit)
        return [
            f'<g class="limit">{title}<path d="M{x - 5:.1f},{y - 5:.1f} L{x + 5:.1f},{y + 5:.1f} '
            f'M{x - 5:.1f},{y + 5:.1f} L{x + 5:.1f},{y - 5:.1f}" stroke="{colour}" stroke-width="2"/></g>'
        ]
    return []


def render_index_html(result: CheckResult, pages: list[str]) -> str:
    counts = Counter(r.grade for r in result.reports)
    by_site: dict[str, Counter[Grade]] = defaultdict(Counter)
    for r in result.reports:
        by_site[r.institution or "(unknown institution)"][r.grade] += 1
    rows = "".join(
        f"<tr><td><a href='{_e(page)}'>{_e(r.patient_id)}</a></td><td>{_e(r.plan_label)}</td><td>{_e(r.institution)}"
        f"</td><td>{_grade(r.grade)}</td><td>{'complete' if r.complete else 'incomplete'}</td>"
        f"<td>{_e(r.eligibility_status)}</td></tr>"
        for r, page in zip(result.reports, pages, strict=True)
    )
    sites = "".join(
        f"<tr><td>{_e(site)}</td>" + "".join(f"<td class='num'>{c.get(g, 0)}</td>" for g in Grade) + "</tr>"
        for site, c in sorted(by_site.items())
    )
    unassigned = "".join(f"<li>{_e(u.path)}: {_e(u.reason)}</li>" for u in result.unassigned)
    skipped = "".join(f"<li>{_e(f)}: {_e(why)}</li>" for f, why in result.skipped)
    head = "".join(f"<th>{_e(GRADE_LABEL[g].lower())}</th>" for g in Grade)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rtqa audit - {_e(result.protocol.id)}</title>
<style>{_CSS}</style></head><body>
<h1>Audit against {_e(result.protocol.id)} v{_e(result.protocol.version)}</h1>
<p>{len(result.reports)} plan(s): {", ".join(f"{counts.get(g, 0)} {GRADE_LABEL[g].lower()}" for g in Grade)};
{sum(1 for r in result.reports if not r.complete)} incomplete. <span class="muted">rtqa {_e(__version__)}</span></p>
<h2>Per institution</h2><table id="institutions"><tr><th>institution</th>{head}</tr>{sites}</table>
<h2>Plans</h2><table id="plans"><tr><th>patient</th><th>plan</th><th>institution</th><th>grade</th>
<th>completeness</th><th>eligibility</th></tr>{rows}</table>
{f"<h2>Unassigned files</h2><ul>{unassigned}</ul>" if unassigned else ""}
{f"<h2>Not graded</h2><ul>{skipped}</ul>" if skipped else ""}
</body></html>
"""
