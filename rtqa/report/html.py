"""HTML reports: one self-contained page per plan (inline styles, the DVH as inline SVG, the image
views as embedded PNG, no network), and an index page for a batch with a summary per institution
and filters. They only render.

The plan page prints on A4 portrait: the patient, plan, protocol and grade head every printed
page (the head of a layout table, which browsers repeat on each page), the findings table drops
its source column into the finding's detail line, and deviations and not-evaluable findings
come first.
"""

from __future__ import annotations

import html
import re
from collections import Counter, defaultdict
from collections.abc import Callable

from rtqa import __version__
from rtqa.protocol.limits import Grade
from rtqa.report.model import CheckResult, Finding, PlanReport
from rtqa.report.palette import assign_colours
from rtqa.report.render import GRADE_LABEL, VERDICT_LABEL, ineligible_rules, review_sentence

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:1.5em;color:#1b1b1b;max-width:1100px}
h1{font-size:1.3em;margin:.1em 0} h2{font-size:1.1em;margin-top:1.4em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;width:100%;font-size:.85em}
th,td{border:1px solid #ccc;padding:3px 5px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f0f0f0} td.num{text-align:right;white-space:nowrap}
.g{font-weight:600;padding:1px 5px;border-radius:3px;display:inline-block}
.per_protocol{background:#dff3e0;color:#17561f} .variation_acceptable{background:#fff2c6;color:#6b4e00}
.deviation_unacceptable{background:#f8d4d4;color:#7d1313} .not_evaluable{background:#e9ddf2;color:#4b2466}
.ineligible{background:#7d1313;color:#fff}
.review{background:#fff2c6;border-left:4px solid #b58900;padding:.3em .8em} .cs{font-size:.85em;color:#6b4e00}
.facts td:first-child{width:14em;font-weight:600} tr.detail td{border-top:none;font-size:.95em;color:#333}
.warn li{margin:.15em 0} .muted{color:#666;font-size:.85em} #inputs td:first-child{white-space:nowrap}
svg{max-width:100%;height:auto;border:1px solid #ddd}
table.layout{font-size:1em} table.layout>thead>tr>td,table.layout>tbody>tr>td{border:none;padding:0}
.runhead{border-bottom:2px solid #444;padding:.2em 0 .4em;margin-bottom:.4em;font-size:.9em}
.runhead b.who{font-size:1.2em}
#findings{table-layout:fixed}
#findings col.c-rule{width:16%} #findings col.c-roi{width:16%} #findings col.c-metric{width:13%}
#findings col.c-value{width:10%} #findings col.c-lim{width:10%} #findings col.c-grade{width:15%}
#findings col.c-src{width:10%}
.views{display:flex;flex-wrap:wrap;gap:8px} figure.view{margin:0;width:32%;min-width:240px;break-inside:avoid}
figure.view img{width:100%;height:auto;border:1px solid #ccc} figure.view figcaption{font-size:.75em}
.legend .sw{display:inline-block;width:1.4em;height:0;border-top:3px solid;vertical-align:middle;margin-right:.2em}
.legend .iso{border-top-style:dashed} .legend .item{margin-right:.7em;white-space:nowrap}
ol.limits{font-size:.85em;columns:2;column-gap:2em;margin-top:.3em}
.reason{background:#fbeaea;border-left:4px solid #b22;padding:.5em .8em}
.filters{margin:.5em 0} .filters label{margin-right:1.2em}
@media (max-width:900px){#findings .src{display:none} #findings col.c-src{width:0}}
@page{size:A4 portrait;margin:12mm 10mm}
@media print{body{margin:0;max-width:none;font-size:9pt} h2{break-after:avoid}
 svg,figure.view,tr{break-inside:avoid} #findings .src{display:none} #findings col.c-src{width:0}
 figure.view{width:48%} .filters{display:none}}
"""
# findings shown first: what a reviewer must act on (then the rest in protocol order)
_FIRST = (Grade.DEVIATION_UNACCEPTABLE, Grade.NOT_EVALUABLE)


def _e(text: object) -> str:
    return html.escape("" if text is None else str(text))


def _grade(g: Grade) -> str:
    return f'<span class="g {g.value}">{_e(GRADE_LABEL[g])}</span>'


def page_name(report: PlanReport, index: int) -> str:
    """A file name for the page of one plan: patient and label, made safe."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{report.patient_id}_{report.plan_label}")[:80]
    return f"{index:03d}_{stem}.html"


def ordered_findings(report: PlanReport) -> list[Finding]:
    """Deviations and not-evaluable findings first, then the others; protocol order within each.
    An ineligible patient's failed eligibility rules come before everything (the verdict)."""
    every = [*report.findings, *report.eligibility]
    lead = (
        [f for f in report.eligibility if f.grade is Grade.DEVIATION_UNACCEPTABLE]
        if report.verdict == "ineligible"
        else []
    )
    rest = [f for f in every if f not in lead]
    return lead + [f for f in rest if f.grade in _FIRST] + [f for f in rest if f.grade not in _FIRST]


def render_plan_html(result: CheckResult, report: PlanReport, *, include_names: bool = False) -> str:
    p = result.protocol
    title = f"rtqa report - {report.patient_id} - {report.plan_label}"
    unreadable = bool(report.errors) and not report.findings
    patient = report.patient_id + (f" ({report.patient_name})" if include_names and report.patient_name else "")
    facts = [
        ("Patient", patient),
        ("Plan", f"{report.plan_label} ({report.plan_uid or 'no plan UID'})"),
        ("Plan date / approval", f"{report.plan_date or 'not known'} / {report.approval_status or 'not known'}"),
        ("Institution", report.institution or "not known"),
        ("Prescription", _prescription_text(report)),
        ("Dose", report.dose_source or "not known"),
        ("Protocol", f"{p.id} v{p.version} (sha256 {p.sha256})"),
        ("DVH settings", f"end cap {p.end_cap.value}; bins 0.01 Gy; partial-volume scan lines"),
        (
            "Completeness",
            "complete"
            if report.complete
            else "INCOMPLETE - not evaluable: " + (", ".join(report.not_evaluable) or "the plan could not be read"),
        ),
        ("Eligibility", report.eligibility_status),
        ("Checked", result.checked_at or "-"),
    ]
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in facts)
    files_head = "<tr><th>modality</th><th>file</th><th>SOP Instance UID</th><th>sha256</th></tr>"
    files = "".join(
        f"<tr><td>{_e(i.modality)}</td><td>{_e(i.path)}</td><td class='muted'>{_e(i.sop_instance_uid)}</td>"
        f"<td class='muted'>{_e(i.sha256)}</td></tr>"
        for i in report.inputs
    )
    reasons = "".join(f"<p class='reason'>{_e(e['message'])}</p>" for e in report.errors)
    warnings = "".join(f"<li>{_e(w)}</li>" for w in report.warnings)
    # a grade that depends on the end-cap convention: said under the title and in the head that
    # every printed page repeats, never only in a hover title
    review = report.convention_sensitive
    head = (
        f"<div class='runhead'><b class='who'>{_e(patient)}</b> &middot; plan {_e(report.plan_label)} &middot; "
        f"protocol {_e(p.id)} v{_e(p.version)} &middot; grade {_verdict(report)}"
        + (f" &middot; <b class='cs'>review: {_e(', '.join(review))} depend(s) on the end cap</b>" if review else "")
        + "</div>"
    )
    body = f"""<h1>{_e(report.patient_id)} - {_e(report.plan_label)}</h1>
<p class="muted">rtqa {_e(__version__)}; † marks a threshold the protocol owner has not confirmed</p>
{f"<p class='review' id='review'><b>Review:</b> {_e(review_sentence(report))}</p>" if review else ""}
{f"<h2>Why this plan could not be checked</h2>{reasons}" if reasons else ""}
<h2>Plan facts</h2><table class="facts">{rows}</table>
{"" if unreadable else f"<h2>Findings</h2>{_findings_table(report)}"}
{_not_applicable_html(report)}
{"" if unreadable else f"<h2 id='images'>Images</h2>{_views_html(report)}"}
{"" if unreadable else f"<h2>Cumulative DVH</h2>{_dvh_svg(report)}"}
<h2>Warnings</h2>{f'<ul class="warn">{warnings}</ul>' if warnings else "<p>None.</p>"}
<h2>Input files</h2>{
        f"<table id='inputs'>{files_head}{files}</table>"
        if files
        else "<p>No input file could be attributed to this plan.</p>"
    }"""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title><style>{_CSS}</style></head>
<body>
<table class="layout"><thead><tr><td>{head}</td></tr></thead><tbody><tr><td>
{body}
</td></tr></tbody></table>
</body></html>
"""


def _prescription_text(report: PlanReport) -> str:
    rx = report.prescription
    if not rx or rx.get("total_gy") is None:
        return "not known" + (" (the plan could not be read)" if report.errors else "")
    per = rx.get("per_fraction_gy")
    text = f"{rx['total_gy']:.2f} Gy in {rx.get('fractions') or '?'} fractions"
    if per:
        text += f" ({per:.2f} Gy per fraction)"
    text += f", from {rx.get('source') or 'unknown source'}"
    targets = ", ".join(f"{t['name']} {t['total_gy']:.2f} Gy" for t in rx.get("targets", []))
    return text + (f"; targets: {targets}" if targets else "")


def _findings_table(report: PlanReport) -> str:
    """Rule, structure and ROI, metric, value, limits, grade, source; deviations and not-evaluable
    findings first. Below every finding that is not per protocol or whose grade depends on the
    end-cap convention, its sentence (and the source, which print and narrow screens drop from
    the row) on a line of its own."""
    head = (
        "<table id='findings'><colgroup><col class='c-rule'><col class='c-roi'><col class='c-metric'>"
        "<col class='c-value'><col class='c-lim'><col class='c-lim'><col class='c-grade'><col class='c-src'>"
        "</colgroup><thead><tr><th>rule</th><th>structure → ROI</th><th>metric</th><th>value</th>"
        "<th>per protocol</th><th>variation acceptable</th><th class='grade'>grade</th><th class='src'>source</th>"
        "</tr></thead><tbody>"
    )
    body = []
    for f in ordered_findings(report):
        roi = _e(f.structure or "")
        if f.matched_roi and f.matched_roi != f.structure:
            roi += (" → " if roi else "") + _e(f.matched_roi)
            roi += f" <span class='muted'>({_e(f.match.replace('_', ' '))})</span>" if f.match else ""
        dagger = " †" if f.unconfirmed else ""
        sensitive = " data-convention-sensitive='true'" if f.convention_sensitive else ""
        mark = "<br><span class='cs'>convention-sensitive</span>" if f.convention_sensitive else ""
        body.append(
            f"<tr class='finding' data-grade='{f.grade.value}'{sensitive} title='{_e(f.message)}'><td>{_e(f.rule)}</td>"
            f"<td>{roi}</td><td>{_e(f.metric)}</td><td class='num'>{_e(f.shown_value)}</td>"
            f"<td>{_e(f.per_protocol.text(f.unit) if f.per_protocol else '')}</td>"
            f"<td>{_e(f.variation.text(f.unit) if f.variation else '')}</td><td class='grade'>{_grade(f.grade)}"
            f"{dagger}{mark}</td><td class='muted src'>{_e(f.source)}</td></tr>"
        )
        # the sentence of a finding whose grade depends on the end cap holds each convention's
        # value and grade: shown on screen and in print, as the text report does
        if f.grade is not Grade.PER_PROTOCOL or f.convention_sensitive:
            where = ""
            if f.location_mm is not None:
                x, y, z = f.location_mm
                where = f" Hottest point at x {x:.1f}, y {y:.1f}, z {z:.1f} mm (patient coordinates)."
            body.append(
                f"<tr class='detail'><td></td><td colspan='7'>{_e(f.message)}{_e(where)}"
                f"{' <span class=muted>Source: ' + _e(f.source) + '</span>' if f.source else ''}</td></tr>"
            )
    return head + "".join(body) + "</tbody></table>"


def _not_applicable_html(report: PlanReport) -> str:
    """The rules that do not apply to this patient, with the reason: a rule never vanishes."""
    if not report.not_applicable:
        return ""
    rows = "".join(
        f"<tr data-grade='not_applicable'><td>{_e(n.rule)}</td><td>{_e(n.structure or '')}</td>"
        f"<td>NOT APPLICABLE: {_e(n.reason)}</td></tr>"
        for n in report.not_applicable
    )
    return (
        "<h2>Rules that do not apply</h2><table id='not-applicable'>"
        f"<tr><th>rule</th><th>structure</th><th>why</th></tr>{rows}</table>"
    )


def _views_html(report: PlanReport) -> str:
    if not report.views:
        return "<p>No images (no dose or no contours to show).</p>"
    from rtqa.report.images import ISODOSE_STYLE, view_data_uri

    figures = []
    for v in report.views:
        x, y, z = v.point_mm
        legend = "".join(
            f"<span class='item'><span class='sw iso' style='border-color:{ISODOSE_STYLE[i % len(ISODOSE_STYLE)]}'>"
            f"</span>isodose {_e(label)}</span>"
            for i, (label, _) in enumerate(v.isodoses)
        ) + "".join(
            f"<span class='item'><span class='sw' style='border-color:{c.colour}'></span>{_e(c.name)}</span>"
            for c in v.contours
        )
        left, right, top, bottom = v.letters
        figures.append(
            f"<figure class='view' data-subject='{_e(v.subject)}' data-plane='{v.plane}'>"
            f"<img alt='{_e(v.subject)} {v.plane} view' src='{view_data_uri(v)}'>"
            f"<figcaption><b>{_e(v.subject)}</b>, {v.plane} through ({x:.1f}, {y:.1f}, {z:.1f}) mm: "
            f"{_e(v.reason)}. {'CT W400/L40' if v.ct_hu is not None else 'Dose alone (no CT)'}; "
            f"{left}/{right} left/right, {top}/{bottom} top/bottom; bar 5 cm."
            f"<div class='legend'>{legend}</div></figcaption></figure>"
        )
    return f"<div class='views'>{''.join(figures)}</div>"


def _dvh_svg(report: PlanReport) -> str:
    curves = report.curves
    if not curves:
        return "<p>No DVH (no dose, or no structure could be evaluated).</p>"
    width, height, left, bottom, top, right = 860, 440, 55, 40, 15, 170
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
    styles = assign_colours(list(curves))
    colours = {name: colour for name, (colour, _) in styles.items()}
    for n, (name, (dose, volume)) in enumerate(curves.items()):
        colour, dash = styles[name]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        points = " ".join(f"{sx(d):.1f},{sy(v):.1f}" for d, v in zip(dose, volume, strict=True))
        parts.append(
            f'<polyline class="curve" data-structure="{_e(name)}" fill="none" stroke="{colour}"{dash_attr} '
            f'stroke-width="1.6" points="{points}"/>'
        )
        ly = top + 12 + 14 * n
        parts.append(
            f'<line x1="{width - right + 10}" y1="{ly - 4}" x2="{width - right + 28}" y2="{ly - 4}" '
            f'stroke="{colour}"{dash_attr} stroke-width="2.5"/><text x="{width - right + 32}" y="{ly}" '
            f'font-size="10">{_e(name)}</text>'
        )
    legend: list[str] = []
    for f in report.findings:
        mark = _limit_mark(f, colours, sx, sy, dmax, len(legend) + 1)
        if mark:
            parts.append(mark)
            lim = f.per_protocol.text(f.unit) if f.per_protocol else ""
            legend.append(
                f"<li class='limit-legend' style='color:{colours[f.structure or '']}'><span style='color:#1b1b1b'>"
                f"{_e(f.rule)}: {_e(f.structure)} {_e(f.metric)} {_e(lim)} "
                f"({_e(GRADE_LABEL[f.grade].lower())})</span></li>"
            )
    parts.append("</svg>")
    note = (
        "<p class='muted'>Numbered marks: the per-protocol limit of each dose-volume rule of a plotted structure "
        "(a tick at a dose limit, a cross at a volume limit).</p>"
    )
    hot_only = [
        f"{_e(name)} (its DVH was computed from {s.dvh_from_gy:.2f} Gy up only: its rules ask for nothing else)"
        for name, s in report.structures.items()
        if s.dvh_from_gy is not None
    ]
    not_drawn = f"<p class='muted' id='not-drawn'>Not drawn: {'; '.join(hot_only)}.</p>" if hot_only else ""
    limits = f"{note}<ol class='limits' id='limits'>{''.join(legend)}</ol>" if legend else ""
    return "".join(parts) + not_drawn + limits


def _limit_mark(
    f: Finding,
    colours: dict[str, str],
    sx: Callable[[float], float],
    sy: Callable[[float], float],
    dmax: float,
    number: int,
) -> str | None:
    """The mark of one constraint's per-protocol limit, labelled with its number on the plot:
    a vertical tick at a dose limit, a cross at a volume limit; None when it cannot be drawn."""
    if f.structure not in colours or f.per_protocol is None or f.per_protocol.value is None:
        return None
    colour = colours[f.structure]
    limit = f.per_protocol.value
    metric = f.metric
    title = f"<title>{_e(f.rule)}: {_e(metric)} {_e(f.per_protocol.text(f.unit))}</title>"
    label = f"{number}"
    if metric.startswith(("D", "Mean", "Max")) and not metric.startswith("DC") and f.unit in ("Gy", "%"):
        dose = limit if f.unit == "Gy" else (limit / 100 * (f.reference_gy or 0))
        if not 0 < dose <= dmax:
            return None
        m = re.match(r"^D(\d+(?:\.\d+)?)%", metric)
        y = sy(100 - float(m.group(1))) if m else sy(50)
        x = sx(dose)
        return (
            f'<g class="limit" data-rule="{_e(f.rule)}">{title}<line x1="{x:.1f}" y1="{y - 8:.1f}" x2="{x:.1f}" '
            f'y2="{y + 8:.1f}" stroke="{colour}" stroke-width="2.5"/>'
            f'<text class="limit-label" x="{x + 3:.1f}" y="{y - 9:.1f}" font-size="10" font-weight="bold" '
            f'fill="{colour}">{label}</text></g>'
        )
    m = re.match(r"^V(\d+(?:\.\d+)?)(Gy|%)\[%\]$", metric)
    if m:
        dose = float(m.group(1)) if m.group(2) == "Gy" else float(m.group(1)) / 100 * (f.reference_gy or 0)
        if not 0 < dose <= dmax:
            return None
        x, y = sx(dose), sy(limit)
        return (
            f'<g class="limit" data-rule="{_e(f.rule)}">{title}<path d="M{x - 5:.1f},{y - 5:.1f} '
            f'L{x + 5:.1f},{y + 5:.1f} M{x - 5:.1f},{y + 5:.1f} L{x + 5:.1f},{y - 5:.1f}" stroke="{colour}" '
            f'stroke-width="2"/><text class="limit-label" x="{x + 6:.1f}" y="{y - 6:.1f}" font-size="10" '
            f'font-weight="bold" fill="{colour}">{label}</text></g>'
        )
    return None


# filters of the index: plain HTML selects and a few lines of script (offline); a link may preset
# them, e.g. index.html#grade=deviation_unacceptable&institution=Site%20A
_FILTER_SCRIPT = """
var fg=document.getElementById('f-grade'),fs=document.getElementById('f-site');
function applyFilters(){document.querySelectorAll('#plans tbody tr').forEach(function(r){
r.style.display=((!fg.value||r.dataset.grade===fg.value)&&(!fs.value||r.dataset.institution===fs.value))?'':'none';});}
var preset=new URLSearchParams(location.hash.slice(1));
if(preset.get('grade'))fg.value=preset.get('grade');
if(preset.get('institution'))fs.value=preset.get('institution');
fg.addEventListener('change',applyFilters);fs.addEventListener('change',applyFilters);applyFilters();
"""


def _verdict(r: PlanReport) -> str:
    """The grade as the headline of the text report gives it: an incomplete plan is never shown
    as a plain pass, but as ``INCOMPLETE (best case ...)``; an ineligible patient's plan is
    ``INELIGIBLE`` first, then the plan's own grade."""
    if r.verdict == "ineligible":
        rules = ", ".join(ineligible_rules(r))
        plan = _grade(r.grade) + ("" if r.complete else " <b>incomplete</b>")
        return f"<span class='g ineligible'>INELIGIBLE</span> ({_e(rules)}; plan {plan})"
    if r.verdict == "incomplete":
        return f"<span class='g not_evaluable'>INCOMPLETE</span> (best case {_grade(r.grade)})"
    return _grade(r.grade) + ("" if r.complete else " <b>incomplete</b>")


def _failed_rules(r: PlanReport) -> list[str]:
    """The index's failed rules of a plan: failed eligibility rules, deviations and variations,
    then the rules not evaluable (what keeps an incomplete plan from a verdict), each once."""
    out: list[str] = []
    seen: set[tuple[str, str]] = set()
    eligibility = [f for f in r.eligibility if f.grade is Grade.DEVIATION_UNACCEPTABLE]
    graded = [f for f in r.findings if f.grade in (Grade.DEVIATION_UNACCEPTABLE, Grade.VARIATION_ACCEPTABLE)]
    missing = [f for f in r.findings if f.grade is Grade.NOT_EVALUABLE]
    for f, cls, title in (
        *((f, "ineligible", "INELIGIBLE") for f in eligibility),
        *((f, f.grade.value, GRADE_LABEL[f.grade]) for f in graded),
        *((f, "not_evaluable", f"NOT EVALUABLE ({f.category.replace('_', ' ')})") for f in missing),
    ):
        if (f.rule, cls) in seen:
            continue
        seen.add((f.rule, cls))
        out.append(f"<span class='g {cls}' title='{_e(title)}'>{_e(f.rule)}</span>")
    if r.errors and not r.findings:
        out.append("<span class='g not_evaluable' title='the plan could not be read'>(unreadable)</span>")
    return out


def render_index_html(result: CheckResult, pages: list[str]) -> str:
    counts = Counter(r.verdict for r in result.reports)
    sensitive = sum(1 for r in result.reports if r.convention_sensitive)
    marked = (
        f" <b class='cs'>{sensitive} plan(s) marked ⚑ have a grade that depends on the DVH end-cap convention: "
        "a reviewer must look.</b>"
        if sensitive
        else ""
    )
    by_site: dict[str, Counter[str]] = defaultdict(Counter)
    for r in result.reports:
        by_site[r.institution or "(unknown institution)"][r.verdict] += 1
    rows = []
    for r, page in zip(result.reports, pages, strict=True):
        failed = " ".join(_failed_rules(r))
        site = r.institution or "(unknown institution)"
        review = ""
        if r.convention_sensitive:
            rules = ", ".join(r.convention_sensitive)
            review = (
                f"<br><span class='cs review-mark' title='{_e(review_sentence(r))}'>⚑ depends on the end cap: "
                f"{_e(rules)}</span>"
            )
        rows.append(
            f"<tr data-grade='{r.verdict}' data-institution='{_e(site)}'"
            + (f" data-convention-sensitive='{_e(','.join(r.convention_sensitive))}'" if review else "")
            + ">"
            f"<td><a href='{_e(page)}'>{_e(r.patient_id)}</a></td><td>{_e(r.plan_label)}</td><td>{_e(site)}</td>"
            f"<td>{_verdict(r)}{review}</td>"
            f"<td class='failed'>{failed or '-'}</td><td>{'complete' if r.complete else 'incomplete'}</td>"
            f"<td>{_e(r.eligibility_status)}</td></tr>"
        )
    sites = "".join(
        f"<tr><td>{_e(site)}</td>" + "".join(f"<td class='num'>{c.get(v, 0)}</td>" for v in VERDICT_LABEL) + "</tr>"
        for site, c in sorted(by_site.items())
    )
    unassigned = "".join(f"<li>{_e(u.path)}: {_e(u.reason)}</li>" for u in result.unassigned)
    skipped = "".join(f"<li>{_e(f)}: {_e(why)}</li>" for f, why in result.skipped)
    head = "".join(f"<th>{_e(label)}</th>" for label in VERDICT_LABEL.values())
    grade_options = "".join(f"<option value='{v}'>{_e(label)}</option>" for v, label in VERDICT_LABEL.items())
    site_options = "".join(f"<option value='{_e(s)}'>{_e(s)}</option>" for s in sorted(by_site))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>rtqa audit - {_e(result.protocol.id)}</title>
<style>{_CSS}</style></head><body>
<h1>Audit against {_e(result.protocol.id)} v{_e(result.protocol.version)}</h1>
<p>{len(result.reports)} plan(s): {", ".join(f"{counts.get(v, 0)} {label}" for v, label in VERDICT_LABEL.items())}
(each plan in one column: an incomplete plan is never counted as a pass).{marked}
<span class="muted">rtqa {_e(__version__)}; checked {_e(result.checked_at or "-")}</span></p>
<h2>Per institution</h2><table id="institutions"><tr><th>institution</th>{head}</tr>{sites}</table>
<h2>Plans</h2>
<div class="filters"><label>grade <select id="f-grade"><option value="">all</option>{grade_options}</select></label>
<label>institution <select id="f-site"><option value="">all</option>{site_options}</select></label></div>
<table id="plans"><thead><tr><th>patient</th><th>plan</th><th>institution</th><th>grade</th>
<th>failed rules</th><th>completeness</th><th>eligibility</th></tr></thead><tbody>{"".join(rows)}</tbody></table>
{f"<h2>Unassigned files</h2><ul>{unassigned}</ul>" if unassigned else ""}
{f"<h2>Not graded</h2><ul>{skipped}</ul>" if skipped else ""}
<script>{_FILTER_SCRIPT}</script>
</body></html>
"""
