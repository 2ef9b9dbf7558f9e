"""The plan page without a browser (fast): distinct curve colours, deviations first, every
drawn limit labelled, and the page of a plan that could not be read."""

from __future__ import annotations

import itertools
import re

import pytest

from rtqa.protocol.limits import Grade, Limit
from rtqa.protocol.loader import load_protocol
from rtqa.report.html import render_plan_html
from rtqa.report.model import CheckResult, Finding, InputFile, PlanReport


def cie_lab(hex_colour: str) -> tuple[float, float, float]:
    """sRGB (IEC 61966-2-1) to CIE 1976 L*a*b* under D65, from the published formulas."""
    rgb = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgb)
    x = (0.4124 * r + 0.3576 * g + 0.1805 * b) / 0.95047
    y = 0.2126 * r + 0.7152 * g + 0.0722 * b
    z = (0.0193 * r + 0.1192 * g + 0.9505 * b) / 1.08883

    def f(t: float) -> float:
        return t ** (1 / 3) if t > (6 / 29) ** 3 else t / (3 * (6 / 29) ** 2) + 4 / 29

    return (116 * f(y) - 16, 500 * (f(x) - f(y)), 200 * (f(y) - f(z)))


def finding(rule: str, structure: str, grade: Grade, *, metric: str = "Mean[Gy]", value: float = 10.0) -> Finding:
    return Finding(
        rule=rule,
        structure=structure,
        matched_roi=structure,
        match="exact",
        metric=metric,
        value=value,
        unit="Gy",
        grade=grade,
        message=f"{rule} message",
        source="test",
        per_protocol=Limit("<=", 20.0),
        variation=Limit("<=", 25.0),
    )


def report(**kw: object) -> PlanReport:
    base: dict[str, object] = {
        "patient_id": "P1",
        "patient_name": "",
        "plan_uid": "1.2.3",
        "plan_uids": ("1.2.3",),
        "plan_label": "PLAN",
        "plan_date": "2026-01-01",
        "approval_status": "APPROVED",
        "institution": "Site",
        "inputs": (),
        "dose_source": "PLAN",
        "prescription": {"total_gy": 50.0, "fractions": 25, "per_fraction_gy": 2.0, "source": "clinical"},
        "findings": (),
        "eligibility": (),
        "structures": {},
        "warnings": (),
    }
    base.update(kw)
    return PlanReport(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def protocol():
    return load_protocol()


def test_every_dvh_curve_has_its_own_colour(protocol):
    names = [*protocol.structures, *(d for d in protocol.derived if d not in protocol.structures)]
    curves = {n: ((0.0, 10.0 + i, 20.0 + i), (100.0, 50.0, 0.0)) for i, n in enumerate(names)}
    page = render_plan_html(CheckResult(protocol, (), ()), report(curves=curves))
    strokes = dict(re.findall(r'class="curve" data-structure="([^"]+)" fill="none" stroke="(#[0-9A-Fa-f]{6})"', page))
    assert set(strokes) == set(names)
    assert len(set(strokes.values())) == len(names)
    # CIE76 colour difference: above about 10 two lines are told apart at a glance
    for (a, ca), (b, cb) in itertools.combinations(strokes.items(), 2):
        delta = sum((p - q) ** 2 for p, q in zip(cie_lab(ca), cie_lab(cb), strict=True)) ** 0.5
        assert delta > 10, (a, b, ca, cb, delta)


def test_deviations_and_not_evaluable_first_then_protocol_order(protocol):
    findings = (
        finding("A_PP", "Liver", Grade.PER_PROTOCOL),
        finding("B_VA", "Liver", Grade.VARIATION_ACCEPTABLE),
        finding("C_DU", "Stomach", Grade.DEVIATION_UNACCEPTABLE),
        finding("D_PP", "Stomach", Grade.PER_PROTOCOL),
        finding("E_NE", "Heart", Grade.NOT_EVALUABLE),
    )
    page = render_plan_html(CheckResult(protocol, (), ()), report(findings=findings))
    order = re.findall(r"<tr class='finding' data-grade='[a-z_]+' title='[^']*'><td>(\w+)</td>", page)
    assert order == ["C_DU", "E_NE", "A_PP", "B_VA", "D_PP"]


def test_each_drawn_limit_is_numbered_on_the_plot_and_listed(protocol):
    curves = {"Liver": ((0.0, 30.0), (100.0, 0.0)), "Stomach": ((0.0, 30.0), (100.0, 0.0))}
    findings = (
        finding("LIVER_MEAN", "Liver", Grade.PER_PROTOCOL),
        finding("STOMACH_MAX", "Stomach", Grade.DEVIATION_UNACCEPTABLE, metric="D0.03cc[Gy]"),
    )
    page = render_plan_html(CheckResult(protocol, (), ()), report(findings=findings, curves=curves))
    assert re.findall(r'<g class="limit" data-rule="(\w+)">', page) == ["LIVER_MEAN", "STOMACH_MAX"]
    assert re.findall(r'class="limit-label"[^>]*>(\d+)</text>', page) == ["1", "2"]
    legend = re.findall(r"<li class='limit-legend'[^>]*><span[^>]*>([^<]+)</span>", page)
    assert [item.split(":")[0] for item in legend] == ["LIVER_MEAN", "STOMACH_MAX"]
    assert "&lt;= 20 Gy" in legend[1]


def test_unreadable_plan_page_says_why_and_lists_the_files(protocol):
    inputs = (
        InputFile("/in/RP.dcm", "RTPLAN", "1.2.3", "a" * 64),
        InputFile("/in/RD.dcm", "RTDOSE", "1.2.4", "b" * 64),
    )
    bad = report(
        prescription=None,
        dose_source=None,
        inputs=inputs,
        errors=({"type": "InputError", "message": "the dose and the contours are in different frames", "file": ""},),
    )
    page = render_plan_html(CheckResult(protocol, (), ()), bad)
    assert "Why this plan could not be checked" in page and "different frames" in page
    assert "InputError" not in page and "- Gy in - fractions" not in page
    assert all(i.sha256 in page and i.sop_instance_uid in page for i in inputs)
