"""EQD2 and BED per voxel (issue 20), against closed forms.

Linear-quadratic model: a voxel receiving D in n fractions (d = D/n) has
BED = D (1 + d/(α/β)) and EQD2 = D (d + α/β) / (2 + α/β). References below are these formulas
evaluated by hand or integrated in closed form; the cases come from the liver generator
(fixtures/cases.py): 45 Gy in 15 fractions, and a course of 50 Gy / 25 + 10 Gy / 5 (two plans).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from fixtures import cases
from rtqa.discovery.batch import run_batch
from rtqa.discovery.grouping import discover
from rtqa.discovery.load import load_case
from rtqa.dvh.engine import compute_dvh
from rtqa.dvh.geometry import EndCap, Slab, SlabStack
from rtqa.dvh.metrics import evaluate_metric
from rtqa.dvh.radiobiology import DosePart, Measure, bed_gy, compute_equivalent_dose, eqd2_gy
from rtqa.errors import ProtocolError
from rtqa.evaluation.radiobiology import dose_parts
from rtqa.io import read_dose
from rtqa.model import DoseGrid
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import RULES_DIR, load_protocol
from rtqa.report.model import PlanReport
from rtqa.report.render import as_json

SCHEMA = json.loads((Path(__file__).parents[1] / "rtqa" / "schemas" / "report-v1.schema.json").read_text())
X = np.arange(-20.0, 20.01, 2.0)  # dx = 2 mm: pixel boundaries at odd x
Y = np.arange(-20.0, 20.01, 2.5)  # dy = 2.5 mm: pixel boundaries at -3.75, -1.25, 1.25, 3.75 ...
Z = np.arange(-12.0, 12.01, 3.0)


def grid(values: float) -> DoseGrid:
    return DoseGrid(np.full((Z.size, Y.size, X.size), float(values)), X, Y, Z)


def box(x0: float, x1: float) -> SlabStack:
    """x in [x0, x1], y in [-3.75, 3.75] (pixel boundaries), z in [-6, 6] in 3 mm slabs."""
    ring = np.array([[x0, -3.75], [x1, -3.75], [x1, 3.75], [x0, 3.75]])
    return SlabStack("Box", tuple(Slab(z, z + 3.0, (ring,)) for z in (-6.0, -3.0, 0.0, 3.0)), EndCap.HALF_SLAB)


# -- the conversion -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dose", "n", "ab", "eqd2", "bed"),
    [
        (45.0, 15, 3.0, 54.0, 90.0),  # d = 3: 45 (3 + 3) / 5; 45 (1 + 3/3)
        (50.0, 25, 3.0, 50.0, 83.3333333333),  # d = 2: EQD2 = D
        (45.0, 25, 10.0, 44.25, 53.1),  # d = 1.8 (the lower level of a SIB): 45 (11.8) / 12
        (60.0, 30, 10.0, 60.0, 72.0),
    ],
)
def test_uniform_dose_in_n_fractions_is_exact(dose, n, ab, eqd2, bed):
    """A uniform dose: every voxel, and so the whole DVH, is the closed form."""
    assert float(eqd2_gy(dose, fractions=n, alpha_beta_gy=ab)) == pytest.approx(eqd2, rel=1e-12)
    assert float(bed_gy(dose, fractions=n, alpha_beta_gy=ab)) == pytest.approx(bed, rel=1e-10)
    eq = compute_equivalent_dose([DosePart("plan", grid(dose), (n,))], measure=Measure.EQD2, alpha_beta_gy=ab)
    assert eq.exact
    dvh = compute_dvh(box(-11.0, 11.0), eq.low)
    for value in (dvh.mean_gy, dvh.min_gy, dvh.max_gy):
        assert value == pytest.approx(eqd2, abs=1e-9)
    for metric in ("D95%[Gy]", "D2%[Gy]"):  # read off the cumulative curve: within one 0.01 Gy bin
        assert evaluate_metric(dvh, metric) == pytest.approx(eqd2, abs=dvh.bin_width_gy)


def test_a_linear_dose_gradient_gives_the_mean_eqd2_of_the_integral_of_a_quadratic():
    """D(x) = 30 + g x Gy (g = 1 Gy/mm) across a box from x = -11 to 11 mm (whole pixels), 15
    fractions, α/β 3 Gy. EQD2 is quadratic in D, so its mean over the box is, in closed form,

        (mean D² / n + α/β mean D) / (2 + α/β),   mean D² = (Da² + Da Db + Db²) / 3.

    The conversion is per voxel (on the dose nodes), and the engine gives each pixel its node's
    value: the midpoint rule, whose error for a quadratic is exactly f'' h² / 24 per pixel, with
    f'' = 2 g² / (n (2 + α/β)) along x and h = 2 mm. That is the tolerance (0.0044 Gy); the
    mean of the physical dose converted (the error the issue forbids) is 0.47 Gy off."""
    g, n, ab, h = 1.0, 15, 3.0, 2.0
    xx = np.broadcast_to(X, (Z.size, Y.size, X.size))
    physical = DoseGrid(30.0 + g * xx, X, Y, Z)
    eq = compute_equivalent_dose([DosePart("plan", physical, (n,))], measure=Measure.EQD2, alpha_beta_gy=ab)
    da, db = 30.0 - 11.0 * g, 30.0 + 11.0 * g
    mean_d2 = (da * da + da * db + db * db) / 3
    truth = (mean_d2 / n + ab * (da + db) / 2) / (2 + ab)
    midpoint_error = 2 * g * g / (n * (2 + ab)) * h * h / 24
    dvh = compute_dvh(box(-11.0, 11.0), eq.low)
    assert dvh.mean_gy == pytest.approx(truth - midpoint_error, abs=1e-9)
    assert abs(dvh.mean_gy - truth) <= midpoint_error + 1e-9
    converted_mean = float(eqd2_gy(30.0, fractions=n, alpha_beta_gy=ab))
    assert abs(converted_mean - truth) > 100 * midpoint_error  # the mean dose converted is another number


def test_two_plans_of_different_dose_per_fraction_are_converted_each_then_summed():
    """50 Gy / 25 (2 Gy) and 9 Gy / 3 (3 Gy) on one voxel, α/β 3 Gy: 50 + 9 (3 + 3) / 5 =
    60.8 Gy; the physical 59 Gy converted as one plan of 28 fractions would be 60.27 Gy."""
    a = compute_equivalent_dose(
        [DosePart("primary", grid(50.0), (25,)), DosePart("boost", grid(9.0), (3,))],
        measure=Measure.EQD2,
        alpha_beta_gy=3.0,
    )
    assert a.exact
    np.testing.assert_allclose(a.low.dose_gy, 60.8, rtol=1e-12)
    wrong = float(eqd2_gy(59.0, fractions=28, alpha_beta_gy=3.0))
    assert abs(wrong - 60.8) > 0.5
    assert "each plan converted with its own fractions, then the EQD2s summed" in a.statement


def test_infinite_alpha_beta_gives_the_physical_dose():
    """EQD2 - D = D (d - 2) / (2 + α/β) -> 0 as α/β grows; at infinity it is D itself."""
    dose, n = 45.0, 15  # d = 3 Gy
    previous = math.inf
    for ab in (1.0, 10.0, 1e3, 1e6, 1e9):
        gap = float(eqd2_gy(dose, fractions=n, alpha_beta_gy=ab)) - dose
        assert gap == pytest.approx(dose * (3.0 - 2.0) / (2.0 + ab), rel=1e-6)
        assert gap < previous
        previous = gap
    assert float(eqd2_gy(dose, fractions=n, alpha_beta_gy=math.inf)) == dose
    assert float(bed_gy(dose, fractions=n, alpha_beta_gy=math.inf)) == dose


def test_one_dose_of_several_fraction_counts_is_bounded_and_the_bound_holds_every_split():
    """One grid of 25 + 5 fractions: the per-voxel split is unknown, so EQD2 lies between n = 30
    (equal dose per fraction) and n = 5 (all from the 5-fraction part). Every split of D between
    the parts, converted part by part, must fall inside (seeded draws)."""
    d_total, ab = 40.0, 3.0
    eq = compute_equivalent_dose([DosePart("plan", grid(d_total), (25, 5))], measure=Measure.EQD2, alpha_beta_gy=ab)
    assert not eq.exact
    low, high = float(eq.low.dose_gy.flat[0]), float(eq.high.dose_gy.flat[0])
    assert low == pytest.approx(float(eqd2_gy(d_total, fractions=30, alpha_beta_gy=ab)))
    assert high == pytest.approx(float(eqd2_gy(d_total, fractions=5, alpha_beta_gy=ab)))
    rng = np.random.default_rng(20)
    for share in (0.0, 1.0, *rng.uniform(0, 1, 50)):
        first = share * d_total
        split = float(
            eqd2_gy(first, fractions=25, alpha_beta_gy=ab) + eqd2_gy(d_total - first, fractions=5, alpha_beta_gy=ab)
        )
        assert low - 1e-9 <= split <= high + 1e-9


@pytest.mark.parametrize(("fractions", "ab"), [(0, 3.0), (-1, 3.0), (2.5, 3.0), (15, 0.0), (15, -3.0), (15, math.nan)])
def test_no_conversion_without_a_number_of_fractions_and_a_positive_alpha_beta(fractions, ab):
    with pytest.raises(ValueError, match=r"fractions|alpha/beta"):
        eqd2_gy(45.0, fractions=fractions, alpha_beta_gy=ab)


# -- the protocol language ------------------------------------------------------------------------

SHIPPED = (Path(RULES_DIR) / "nct03535259.yaml").read_text(encoding="utf-8")
EQD2_RULE = (
    '  - {id: DUODENUM_MAX_EQD2, structure: Duodenum, metric: "D0.03cc[Gy]", dose: eqd2, per_protocol: "<= 54",\n'
    '     source: "QUANTEC limit read as EQD2 (test)"}\n'
)


def protocol_with(tmp_path: Path, rule: str) -> str:
    path = tmp_path / "eqd2.yaml"
    path.write_text(SHIPPED.replace("constraints:\n", "constraints:\n" + rule, 1), encoding="utf-8")
    return str(path)


def test_the_shipped_protocol_states_its_alpha_betas_with_sources_unconfirmed():
    p = load_protocol()
    liver, other = p.alpha_beta_for("Liver-GTV"), p.alpha_beta_for("SpinalCord")
    assert liver is not None and other is not None
    assert liver.value_gy == 2.5 and "Dawson" in liver.source and liver.unconfirmed
    assert other.value_gy == 3.0 and other.source and other.unconfirmed
    assert all(rule.dose is None for rule in p.constraints)  # its limits stay physical


def test_a_constraint_stated_in_eqd2_loads_with_its_alpha_beta(tmp_path):
    p = load_protocol(protocol_with(tmp_path, EQD2_RULE))
    (rule,) = [r for r in p.constraints if r.id == "DUODENUM_MAX_EQD2"]
    assert rule.dose is not None and rule.dose.measure == "eqd2" and rule.dose.alpha_beta.value_gy == 3.0
    explicit = EQD2_RULE.replace("dose: eqd2", 'dose: {bed: {alpha_beta: 2, source: "cord, Kirkpatrick 2010"}}')
    p = load_protocol(protocol_with(tmp_path, explicit))
    (rule,) = [r for r in p.constraints if r.id == "DUODENUM_MAX_EQD2"]
    assert rule.dose is not None and (rule.dose.measure, rule.dose.alpha_beta.value_gy) == ("bed", 2.0)


@pytest.mark.parametrize(
    ("old", "new", "match"),
    [
        ("dose: eqd2", "dose: eqd3", r"\[DUODENUM_MAX_EQD2\] dose 'eqd3'; expected physical, eqd2, bed"),
        ("dose: eqd2", "dose: {eqd2: {alpha_beta: 3}}", r"\[DUODENUM_MAX_EQD2\] .*lacks 'source'"),
        ("dose: eqd2", 'dose: {eqd2: {alpha_beta: -3, source: "x"}}', r"alpha_beta -3: expected a positive number"),
        ("dose: eqd2", 'dose: {eqd2: {alpha_beta: 3, source: "x", unit: Gy}}', r"unknown key 'unit'"),
        ('metric: "D0.03cc[Gy]"', 'metric: "D2%[%]", reference: highest', r"needs an absolute dose metric"),
    ],
)
def test_a_malformed_eqd2_constraint_is_refused_at_its_line(tmp_path, old, new, match):
    path = protocol_with(tmp_path, EQD2_RULE.replace(old, new))
    line = SHIPPED[: SHIPPED.index("constraints:\n")].count("\n") + 2  # the rule's first line
    with pytest.raises(ProtocolError, match=match) as exc:
        load_protocol(path)
    assert f"eqd2.yaml:{line}:" in str(exc.value) or f"eqd2.yaml:{line + 1}:" in str(exc.value)


def test_eqd2_without_an_alpha_beta_for_the_structure_is_refused(tmp_path):
    text = SHIPPED.replace("  default: {value: 3,", "  Heart: {value: 3,", 1)
    path = tmp_path / "p.yaml"
    path.write_text(text.replace("constraints:\n", "constraints:\n" + EQD2_RULE, 1), encoding="utf-8")
    with pytest.raises(ProtocolError, match=r"no α/β for 'Duodenum' and no default"):
        load_protocol(str(path))
    bad = SHIPPED.replace("  Liver: {value: 2.5,", "  Livre: {value: 2.5,", 1)
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ProtocolError, match=r"\[alpha_beta Livre\] 'Livre' is not 'default' or a structure"):
        load_protocol(str(path))


# -- the generated cases ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("eqd2")
    cases.write_hypofractionated(str(out))
    cases.write_unlinked_boost(str(out))
    cases.write_two_fraction_groups(str(out))
    return out


def check(path: Path, protocol: str | None = None) -> PlanReport:
    (report,) = run_batch(discover([str(path)]).plan_sets, load_protocol(protocol))
    return report


def finding(report: PlanReport, rule: str):
    (f,) = [f for f in report.findings if f.rule == rule]
    return f


def test_45_gy_in_15_fractions_shows_the_eqd2_beside_every_physical_value(tree):
    """3 Gy per fraction: each constraint carries its EQD2 with its α/β and source; a dose
    converted by a monotone function keeps its rank, so EQD2 Max = f(physical Max) and
    D0.03cc nearly so (the convex f interpolated between nodes: within 0.5 %)."""
    report = check(tree / "liver_45_in_15")
    shown = [f for f in report.findings if f.equivalent is not None]
    constraints = {r.id for r in load_protocol().constraints}
    graded = {f.rule for f in report.findings if f.rule in constraints and f.value is not None}
    assert {f.rule for f in shown} == graded
    duo = finding(report, "DUODENUM_MAX")
    e = duo.equivalent
    assert e is not None and not e.graded and e.alpha_beta_gy == 3.0 and e.source and e.unconfirmed
    assert e.value == pytest.approx(float(eqd2_gy(duo.value, fractions=15, alpha_beta_gy=3.0)), rel=5e-3)
    assert duo.grade is Grade.PER_PROTOCOL and e.value > 54  # physically within the limit, not in EQD2
    liver = finding(report, "NORMAL_LIVER_MEAN").equivalent
    assert liver is not None and liver.alpha_beta_gy == 2.5 and "3.00 Gy per fraction" in liver.basis
    out = as_json_of(report)
    jsonschema.validate(out, SCHEMA)


def as_json_of(report: PlanReport) -> dict:
    from rtqa.report.model import CheckResult

    return as_json(CheckResult(load_protocol(), (report,), ()))


def test_a_rule_stated_in_eqd2_is_graded_on_the_eqd2(tmp_path, tree):
    """The duodenum's D0.03cc at 3 Gy per fraction: physically under 54 Gy (per protocol), in
    EQD2 (α/β 3 Gy) above it: the EQD2-stated rule is a deviation, the physical value beside."""
    report = check(tree / "liver_45_in_15", protocol_with(tmp_path, EQD2_RULE))
    physical, stated = finding(report, "DUODENUM_MAX"), finding(report, "DUODENUM_MAX_EQD2")
    assert physical.grade is Grade.PER_PROTOCOL
    assert stated.grade is Grade.DEVIATION_UNACCEPTABLE
    assert stated.equivalent is not None and stated.equivalent.graded
    assert stated.equivalent.physical_value == pytest.approx(physical.value, abs=0.005)
    assert stated.value == pytest.approx(float(eqd2_gy(physical.value, fractions=15, alpha_beta_gy=3.0)), rel=5e-3)
    assert "EQD2" in stated.message


def test_a_course_is_converted_plan_by_plan_then_summed(tree):
    """50 Gy / 25 + 10 Gy / 5 as two plans with their own doses: the course's EQD2 at every
    voxel is EQD2(primary, 25) + EQD2(boost, 5), read from the two RT Dose files."""
    folder = tree / "liver_unlinked_boost"
    (plan_set,) = discover([str(folder)]).plan_sets
    case = load_case(plan_set)
    parts = dose_parts(case, case.prescriptions)
    assert not isinstance(parts, str) and [p.fractions for p in parts] == [(25,), (5,)]
    eq = compute_equivalent_dose(parts, measure=Measure.EQD2, alpha_beta_gy=3.0)
    primary, boost = read_dose(str(folder / "RD_PLAN.dcm")), read_dose(str(folder / "RD_BOOST.dcm"))
    truth = eqd2_gy(primary.dose_gy, fractions=25, alpha_beta_gy=3.0) + eqd2_gy(
        boost.dose_gy, fractions=5, alpha_beta_gy=3.0
    )
    assert eq.exact
    np.testing.assert_allclose(eq.low.dose_gy, truth, rtol=1e-12, atol=1e-9)
    assert not np.allclose(eq.low.dose_gy, eqd2_gy(primary.dose_gy + boost.dose_gy, fractions=30, alpha_beta_gy=3.0))


def test_a_course_at_2_gy_per_fraction_shows_no_eqd2_and_an_eqd2_rule_is_graded_on_the_sum(tmp_path, tree):
    report = check(tree / "liver_unlinked_boost")
    assert all(f.equivalent is None for f in report.findings)  # every target level at 2 Gy
    stated = finding(check(tree / "liver_unlinked_boost", protocol_with(tmp_path, EQD2_RULE)), "DUODENUM_MAX_EQD2")
    assert stated.equivalent is not None and "plan HCC boost: 5 fractions" in stated.equivalent.basis
    assert stated.grade is Grade.DEVIATION_UNACCEPTABLE  # about 62.4 Gy physical on the hot spot


@pytest.mark.parametrize(("limit", "grade"), [("54", Grade.DEVIATION_UNACCEPTABLE), ("100", Grade.NOT_EVALUABLE)])
def test_one_dose_of_two_fraction_groups_is_graded_over_its_bound_never_on_a_guess(tmp_path, tree, limit, grade):
    """One PLAN dose of 25 + 5 fractions with a 62.4 Gy duodenal hot spot: its EQD2 D0.03cc lies
    between n = 30 (about 63 Gy) and n = 5 (about 193 Gy). Both ends above 54 Gy: a deviation
    whatever the split; a limit inside the interval: not evaluable, both grades shown."""
    rule = EQD2_RULE.replace('"<= 54"', f'"<= {limit}"')
    stated = finding(check(tree / "liver_two_groups", protocol_with(tmp_path, rule)), "DUODENUM_MAX_EQD2")
    assert stated.interval is not None and stated.interval[0] > 54
    assert stated.grade is grade
    assert "25 + 5 fractions" in stated.message


def test_unknown_fractions_give_no_eqd2_and_an_eqd2_rule_is_not_evaluable(tmp_path, tree):
    """A plan whose NumberOfFractionsPlanned is absent: no EQD2 is assumed."""
    import shutil

    import pydicom

    folder = tmp_path / "nofx"
    shutil.copytree(tree / "liver_45_in_15", folder)
    plan = pydicom.dcmread(folder / "RP.dcm")
    del plan.FractionGroupSequence[0].NumberOfFractionsPlanned
    plan.save_as(folder / "RP.dcm")
    report = check(folder, protocol_with(tmp_path, EQD2_RULE))
    stated = finding(report, "DUODENUM_MAX_EQD2")
    assert stated.grade is Grade.NOT_EVALUABLE and "number of fractions unknown" in stated.message
    assert all(f.equivalent is None for f in report.findings if f.rule != "DUODENUM_MAX_EQD2")
    assert any("no EQD2 shown" in w for w in report.warnings)
