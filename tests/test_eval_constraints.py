"""DVH constraints (rtqa.evaluation.checks.constraints) on hand-made DVHs and slab stacks.

A stand-in context holds the resolved structures, prescriptions and DVHs a constraint reads;
the DVHs are written by hand so that every metric follows from arithmetic in the comments. The
rules are the protocol's (rules/nct03535259.yaml) or small variants of them.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from rtqa.dvh.engine import DVH
from rtqa.dvh.expression import EndCap
from rtqa.dvh.geometry import Slab, SlabStack
from rtqa.dvh.metrics import evaluate_metric, parse_metric
from rtqa.errors import RtqaError
from rtqa.evaluation.checks import constraints, technical
from rtqa.evaluation.context import Unavailable
from rtqa.protocol.limits import Grade, Limit
from rtqa.protocol.loader import StructureSpec, load_protocol
from rtqa.report.model import Finding, NotApplicable

PROTOCOL = load_protocol()
RULES = {r.id: r for r in PROTOCOL.all_rules()}
CAP = PROTOCOL.end_cap


def dvh(lo: float, hi: float, covered: float = 100.0, uncovered: float = 0.0, name: str = "S") -> DVH:
    """Dose spread evenly between lo and hi Gy over the covered volume: V(d) falls linearly from
    all of it at lo to nothing at hi; mean (lo + hi) / 2."""
    edges = np.array([0.0, lo, hi])
    return DVH(name, edges, np.array([covered, covered, 0.0]), covered + uncovered, uncovered, (lo + hi) / 2, lo, hi,
               CAP, hi - lo)  # fmt: skip


STRUCTURES = {
    "PTV": StructureSpec("PTV", "target", (), (), True, True),
    "Liver": StructureSpec("Liver", "oar", (), (), True, False),
    "Heart": StructureSpec("Heart", "oar", (), (), False, False),
    "Stomach": StructureSpec("Stomach", "oar", (), (), True, False),
}
NAMES = {0: "PTVp", 1: "PTVv", 2: "PTVn", 3: "LIVER", 4: "Stomach 2", 5: "STOMACH"}
HOW = {0: "alias", 1: "pattern", 2: "alias", 3: "exact", 4: "alias", 5: "exact"}  # how each ROI matched


def ctx(dvhs: dict, **kw) -> SimpleNamespace:
    """``dvhs`` maps (structure, rois) as the check asks for them to a DVH (or an RtqaError)."""
    base = dict(
        dose=object(),
        protocol=SimpleNamespace(structures=STRUCTURES, end_cap=EndCap.HALF_SLAB, alpha_beta_for=lambda s: None),
        unavailable={},
        ambiguous={},
        structure_rois={"PTV": [0, 1, 2], "Liver": [3], "Stomach": [5]},
        rx_by_roi={},
        highest_gy=None,
        case=SimpleNamespace(plans=(object(),)),
        boundary=0.0,
        stacks={},
    )
    base.update(kw)
    c = SimpleNamespace(**base)

    def get(structure, rois=()):
        whole = tuple(c.structure_rois.get(structure, ()))
        got = dvhs[(structure, () if rois == whole else rois)]
        if isinstance(got, Exception):
            raise got
        return got

    c.dvh = get
    c.dvh_of = lambda key, stack, others=None: dvhs[key]
    # one convention only here (tests/test_end_caps.py grades under all three)
    c.dvh_by_end_cap = lambda s, rois=(): {EndCap.HALF_SLAB: dvhs[s] if s in dvhs else get(s, rois)}
    c.other_end_caps = lambda: ()
    c.stack = lambda structure, rois=(), end_cap=None: c.stacks[rois]
    c.label = lambda i: NAMES[i]
    c.roi_label = lambda s, rois=(): " | ".join(NAMES[i] for i in (rois or c.structure_rois.get(s, ()))) or None

    def how(s, rois=()):  # as CaseContext.how: the one way the chosen ROIs of the structure matched, else None
        chosen = set(rois or c.structure_rois.get(s, ()))
        hows = {HOW[i] for i in c.structure_rois.get(s, ()) if i in chosen}
        return hows.pop() if len(hows) == 1 else None

    c.how = how
    c.boundary_max_gy = lambda: c.boundary
    c.candidates = lambda s: (
        [(i,) for i in c.structure_rois[s]]
        if s in c.ambiguous
        else [tuple(c.structure_rois[s])]
        if s in c.structure_rois
        else [()]
    )
    return c


def findings(outcome) -> list[Finding]:
    assert all(isinstance(f, Finding) for f in outcome)
    return list(outcome)


# -- structures that cannot be graded -------------------------------------------------------------------


def test_an_absent_optional_structure_is_not_applicable_and_a_required_one_not_evaluable():
    r = RULES["HEART_V25"]
    c = ctx({}, unavailable={"Heart": Unavailable("no ROI matches Heart", required=False, present=False)})
    assert constraints.check(c, r, {}) == [
        NotApplicable("HEART_V25", "Heart", "optional structure Heart is not contoured (no ROI matches Heart)")
    ]
    c = ctx({}, unavailable={"Heart": Unavailable("no ROI matches Heart", required=True, present=False)})
    (f,) = findings(constraints.check(c, r, {}))
    assert (f.grade, f.structure, f.message) == (
        Grade.NOT_EVALUABLE,
        "Heart",
        "not evaluable: Heart: no ROI matches Heart",
    )


def test_a_present_but_unusable_optional_structure_is_not_evaluable():
    c = ctx(
        {}, unavailable={"Heart": Unavailable("present but unusable (open contours)", required=False, present=True)}
    )
    (f,) = findings(constraints.check(c, RULES["HEART_V25"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.message == "not evaluable: Heart: present but unusable (open contours)"


def test_a_constraint_without_a_dose_is_not_evaluable():
    (f,) = findings(constraints.check(ctx({}, dose=None), RULES["STOMACH_MAX"], {}))
    assert (f.grade, f.structure, f.message) == (Grade.NOT_EVALUABLE, "Stomach", "not evaluable: no dose")


def test_a_dvh_that_cannot_be_computed_is_not_evaluable_with_the_reason():
    c = ctx({("Stomach", ()): RtqaError("the contours enclose no volume")})
    (f,) = findings(constraints.check(c, RULES["STOMACH_MAX"], {}))
    assert (f.grade, f.structure, f.matched_roi, f.match) == (Grade.NOT_EVALUABLE, "Stomach", "STOMACH", "exact")
    assert f.message == "not evaluable: Stomach: the contours enclose no volume"


# -- one structure --------------------------------------------------------------------------------------


def test_a_one_roi_structure_is_graded_on_its_dvh():
    # STOMACH_MAX: D0.03cc <= 54 Gy per protocol, <= 58 variation. Dose 40-60 Gy evenly over 100 cc:
    # 0.03 cc receive at least 60 - 20 * 0.03 / 100 = 59.994 Gy -> 59.99 Gy, a deviation
    (f,) = findings(constraints.check(ctx({("Stomach", ()): dvh(40, 60)}), RULES["STOMACH_MAX"], {}))
    assert (f.value, f.grade, f.structure, f.matched_roi, f.match) == (
        59.99, Grade.DEVIATION_UNACCEPTABLE, "Stomach", "STOMACH", "exact",
    )  # fmt: skip
    assert f.message.startswith("Stomach: D0.03cc = 59.99 Gy — deviation unacceptable")
    assert f.reference_gy is None and f.reference_target is None  # an absolute metric names no reference
    assert (f.metric, f.unit, f.category) == ("D0.03cc[Gy]", "Gy", "plan_quality")


def test_an_absolute_metric_names_no_reference_even_when_the_rule_has_one():
    r = replace(RULES["STOMACH_MAX"], reference="highest")
    (f,) = findings(constraints.check(ctx({("Stomach", ()): dvh(40, 60)}, highest_gy=50.0), r, {}))
    assert f.message.startswith("Stomach: D0.03cc = 59.99 Gy — deviation unacceptable")
    assert f.reference_gy is None


def test_a_metric_that_does_not_exist_is_not_evaluable_with_the_volume():
    # D0.03cc of a 0.02 cc structure does not exist
    (f,) = findings(constraints.check(ctx({("Stomach", ()): dvh(40, 60, covered=0.02)}), RULES["STOMACH_MAX"], {}))
    assert f.grade is Grade.NOT_EVALUABLE
    assert f.message == "not evaluable: Stomach: D0.03cc[Gy] does not exist (structure 0.020 cc)"
    assert (f.structure, f.matched_roi, f.match) == ("Stomach", "STOMACH", "exact")


# -- targets and their prescriptions --------------------------------------------------------------------


def test_each_ptv_is_graded_against_its_own_prescription():
    # PTV_D95: D95% >= 100 % of the PTV's own prescription per protocol, >= 95 % variation.
    # Dose 47.5-52.5 Gy evenly over 100 cc: 95 cc receive at least 47.5 + 5 * 5 / 100 = 47.75 Gy,
    # 95.5 % of 50 Gy (variation) and 102.8 % of 46.45 Gy (47.75 / 46.45 = 1.02799: per protocol)
    dvhs = {("PTV", (0,)): dvh(47.5, 52.5), ("PTV", (1,)): dvh(47.5, 52.5), ("PTV", (2,)): dvh(47.5, 52.5)}
    c = ctx(dvhs, rx_by_roi={0: (50.0, "dose reference"), 1: (46.45, "case-report form")})
    p, v, n = findings(constraints.check(c, RULES["PTV_D95"], {}))
    assert (p.structure, p.matched_roi, p.value, p.grade) == ("PTV", "PTVp", 95.5, Grade.VARIATION_ACCEPTABLE)
    assert (p.reference_gy, p.reference_target) == (50.0, "PTVp, dose reference")
    assert p.message.startswith("PTV (PTVp): D95% = 95.5 % of 50.00 Gy (PTVp, dose reference) — variation")
    assert (v.value, v.grade, v.reference_gy) == (102.8, Grade.PER_PROTOCOL, 46.45)
    # no prescription for PTVn: a relative metric has nothing to relate to
    assert (n.grade, n.reference_gy, n.structure, n.matched_roi, n.match) == (
        Grade.NOT_EVALUABLE, None, "PTV", "PTVn", "alias",
    )  # fmt: skip
    assert n.message == "not evaluable: PTV (PTVn): no prescription to relate D95%[%] to"


def test_a_union_is_graded_against_the_highest_prescription():
    # PTV_D2 (union): D2% <= 107 % of the highest prescription. 48-52 Gy over 100 cc: 2 cc receive at
    # least 52 - 4 * 2 / 100 = 51.92 Gy = 103.8 % of 50 Gy
    c = ctx({("PTV", ()): dvh(48, 52)}, rx_by_roi={}, highest_gy=50.0, case=SimpleNamespace(plans=(1, 2)))
    (f,) = findings(constraints.check(c, RULES["PTV_D2"], {}))  # two plans: no lower levels graded
    assert (f.structure, f.matched_roi, f.value, f.grade) == ("PTV", "PTVp | PTVv | PTVn", 103.8, Grade.PER_PROTOCOL)
    assert (f.reference_gy, f.reference_target) == (50.0, "highest prescription")
    assert f.message.startswith("PTV: D2% = 103.8 % of 50.00 Gy (highest prescription) — per protocol")


def test_own_reference_of_a_one_roi_structure_names_the_roi_and_a_union_the_structure():
    r = replace(RULES["PTV_D95"], scope="union")
    c = ctx({("PTV", ()): dvh(47.5, 52.5)}, rx_by_roi={0: (50.0, "a"), 1: (60.0, "b")})
    (f,) = findings(constraints.check(c, r, {}))
    assert (f.reference_gy, f.reference_target) == (60.0, "PTV, b")  # the highest of the union's own
    c = ctx({("Liver", ()): dvh(47.5, 52.5)}, rx_by_roi={3: (50.0, "a")})
    (f,) = findings(constraints.check(c, replace(RULES["PTV_D95"], structure="Liver"), {}))
    assert (f.reference_gy, f.reference_target) == (50.0, "LIVER, a")


def test_a_reference_named_by_structure_takes_its_highest_prescription():
    r = replace(RULES["PTV_D95"], structure="Liver", reference="PTV")
    c = ctx({("Liver", ()): dvh(47.5, 52.5)}, rx_by_roi={0: (40.0, "a"), 2: (50.0, "b"), 3: (99.0, "c")})
    (f,) = findings(constraints.check(c, r, {}))
    assert (f.reference_gy, f.reference_target, f.value) == (50.0, "PTV", 95.5)
    c = ctx({("Liver", ()): dvh(47.5, 52.5)}, rx_by_roi={3: (99.0, "c")})  # no PTV prescription
    (f,) = findings(constraints.check(c, r, {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.reference_gy is None
    c = ctx({("Liver", ()): dvh(47.5, 52.5)}, structure_rois={"Liver": [3]}, rx_by_roi={3: (99.0, "c")})  # no PTV
    (f,) = findings(constraints.check(c, r, {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.message == "not evaluable: Liver: no prescription to relate D95%[%] to"


def test_own_reference_of_a_derived_structure_is_none():
    # a derived structure (no ROI of its own) has no prescription of its own
    r = replace(RULES["PTV_D95"], structure="Liver-GTV")
    c = ctx({("Liver-GTV", ()): dvh(47.5, 52.5)}, rx_by_roi={0: (50.0, "a"), 3: (60.0, "b")})
    (f,) = findings(constraints.check(c, r, {}))
    assert (f.grade, f.structure, f.matched_roi, f.match) == (Grade.NOT_EVALUABLE, "Liver-GTV", None, None)
    assert f.message == "not evaluable: Liver-GTV: no prescription to relate D95%[%] to"


def test_a_zero_prescription_is_not_a_reference():
    c = ctx({("PTV", ()): dvh(48, 52)}, highest_gy=0.0, case=SimpleNamespace(plans=(1, 2)))
    (f,) = findings(constraints.check(c, RULES["PTV_D2"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and "relative to a reference dose, and none was given" in f.message
    assert (f.structure, f.matched_roi, f.match) == ("PTV", "PTVp | PTVv | PTVn", None)  # matched in two ways
    c.structure_rois = {"PTV": [0, 2]}  # both by alias
    (f,) = findings(constraints.check(c, RULES["PTV_D2"], {}))
    assert (f.grade, f.structure, f.matched_roi, f.match) == (Grade.NOT_EVALUABLE, "PTV", "PTVp | PTVn", "alias")


# -- ambiguous structures ---------------------------------------------------------------------------------


def test_an_ambiguous_structure_takes_the_worst_candidate_and_lists_each():
    # STOMACH_MAX (<= 54 / <= 58 Gy) on two candidates: 50.00 Gy (per protocol) and 59.99 Gy (deviation)
    why = "2 ROIs match the one-ROI structure Stomach"
    # STOMACH 40-50 Gy over 100 cc: D0.03cc = 50 - 10 * 0.03 / 100 = 49.997 -> 50.00 Gy, per protocol
    dvhs = {("Stomach", (5,)): dvh(40, 50), ("Stomach", (4,)): dvh(40, 60)}
    c = ctx(dvhs, structure_rois={"Stomach": [5, 4]}, ambiguous={"Stomach": why})
    (f,) = findings(constraints.check(c, RULES["STOMACH_MAX"], {}))
    assert (f.grade, f.structure, f.matched_roi, f.match, f.value) == (
        Grade.DEVIATION_UNACCEPTABLE, "Stomach", "Stomach 2", "alias", 59.99,
    )  # fmt: skip
    assert f.message.endswith(f"({why}: STOMACH 50.00 Gy per protocol; Stomach 2 59.99 Gy deviation unacceptable)")
    assert f.message.startswith("Stomach (Stomach 2): D0.03cc = 59.99 Gy — deviation unacceptable")


def test_a_candidate_whose_dvh_fails_makes_the_ambiguous_structure_not_evaluable():
    why = "2 ROIs match the one-ROI structure Stomach"
    dvhs = {("Stomach", (5,)): dvh(40, 50), ("Stomach", (4,)): RtqaError("open contours")}
    c = ctx(dvhs, structure_rois={"Stomach": [5, 4]}, ambiguous={"Stomach": why})
    (f,) = findings(constraints.check(c, RULES["STOMACH_MAX"], {}))
    assert (f.grade, f.structure, f.matched_roi, f.match) == (Grade.NOT_EVALUABLE, "Stomach", "Stomach 2", "alias")
    assert f.message.startswith("not evaluable: Stomach (Stomach 2): open contours (")


# -- volume outside the dose grid ------------------------------------------------------------------------


def test_a_structure_partly_outside_the_grid_is_graded_at_both_ends():
    # Liver mean, Child-Pugh A (<= 28 / <= 30 Gy). 100 cc covered at 10-30 Gy (mean 20), 50 cc outside;
    # boundary 40 Gy. Uncovered at 0 Gy: (20 * 100 + 0) / 150 = 13.33 Gy; at 40 Gy: (2000 + 2000) / 150 = 26.67
    r = replace(RULES["NORMAL_LIVER_MEAN"], structure="Liver")
    c = ctx({("Liver", ()): dvh(10, 30, covered=100, uncovered=50)}, boundary=40.0)
    (f,) = findings(constraints.check(c, r, {"child_pugh": "A5"}))
    assert (f.value, f.interval, f.grade) == (None, (13.33, 26.67), Grade.PER_PROTOCOL)
    assert (f.structure, f.matched_roi, f.match, f.metric) == ("Liver", "LIVER", "exact", "Mean[Gy]")
    assert f.message == (
        "Liver: Mean = 13.33 Gy–26.67 Gy — per protocol (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy); the "
        "same grade at both ends (uncovered part at 0 Gy, uncovered part at 40.00 Gy) (50.00 cc of Liver lies "
        "outside the dose grid: it receives between 0 Gy and the highest dose on the grid boundary, 40.00 Gy)"
    )
    # boundary 46 Gy: (2000 + 2300) / 150 = 28.67 Gy at the high end: straddles 28 Gy
    c.boundary = 46.0
    (f,) = findings(constraints.check(c, r, {"child_pugh": "A5"}))
    assert f.grade is Grade.NOT_EVALUABLE and f.interval == (13.33, 28.67)
    assert f.possible_grades == (
        (Grade.PER_PROTOCOL, "uncovered part at 0 Gy (13.33 Gy)"),
        (Grade.VARIATION_ACCEPTABLE, "uncovered part at 46.00 Gy (28.67 Gy)"),
    )


def test_ends_are_ordered_by_value_whatever_the_dose_that_gives_them():
    # CV20Gy[cc], the volume under 20 Gy, is larger when the uncovered part is cold. 100 cc covered at
    # 10-30 Gy (50 cc under 20 Gy), 50 cc outside, boundary 40 Gy. At 0 Gy: 50 + 50 = 100 cc under 20 Gy;
    # at 40 Gy: 50 cc. Limits <= 60 cc per protocol, <= 80 cc variation: 50 cc per protocol, 100 cc deviation
    r = replace(
        RULES["SMALL_BOWEL_V15"], structure="Liver", metric=parse_metric("CV20Gy[cc]"), unit="cc",
        per_protocol=Limit.parse("<= 60"), variation=Limit.parse("<= 80"),
    )  # fmt: skip
    c = ctx({("Liver", ()): dvh(10, 30, covered=100, uncovered=50)}, boundary=40.0)
    (f,) = findings(constraints.check(c, r, {}))
    assert (f.interval, f.grade) == ((50.0, 100.0), Grade.NOT_EVALUABLE)
    assert f.possible_grades == (
        (Grade.PER_PROTOCOL, "uncovered part at 40.00 Gy (50.00 cc)"),
        (Grade.DEVIATION_UNACCEPTABLE, "uncovered part at 0 Gy (100.00 cc)"),
    )


def test_a_relative_metric_over_an_interval_names_its_reference():
    # PTV_D95 on the union, own prescription 50 Gy. 100 cc at 47.5-52.5 Gy, 20 cc outside, boundary 50 Gy.
    # D95% of 120 cc = D114cc. At 0 Gy: V = 120, 100, 0 cc at 0, 47.5, 52.5 Gy: 114 cc is 0.3 of the way from
    # 120 to 100 cc: 0.3 * 47.5 = 14.25 Gy = 28.5 %. At 50 Gy: V = 120, 120, 0: 47.5 + 5 * 6 / 120 = 47.75 Gy
    # = 95.5 %. A deviation at one end, a variation at the other
    r = replace(RULES["PTV_D95"], scope="union")
    c = ctx({("PTV", ()): dvh(47.5, 52.5, covered=100, uncovered=20)}, rx_by_roi={0: (50.0, "a")}, boundary=50.0)
    (f,) = findings(constraints.check(c, r, {}))
    assert (f.interval, f.grade, f.reference_gy, f.reference_target) == (
        (28.5, 95.5),
        Grade.NOT_EVALUABLE,
        50.0,
        "PTV, a",
    )
    assert {g for g, _ in f.possible_grades} == {Grade.DEVIATION_UNACCEPTABLE, Grade.VARIATION_ACCEPTABLE}


def test_a_few_thousandths_of_a_cc_outside_the_grid_are_rounding_noise():
    # 0.005 cc outside: not more than UNCOVERED_CC, graded as a value, not an interval
    r = replace(RULES["NORMAL_LIVER_MEAN"], structure="Liver")
    c = ctx({("Liver", ()): dvh(10, 30, covered=100, uncovered=0.005)}, boundary=40.0)
    (f,) = findings(constraints.check(c, r, {"child_pugh": "A5"}))
    assert (f.value, f.interval) == (20.0, None) and "outside the dose grid" not in f.message


def test_a_metric_that_does_not_exist_at_an_end_is_not_evaluable():
    # D0.03cc of 0.01 cc covered and 0.01 cc outside: at 0 Gy D0.03cc does not exist (0.02 cc in all)
    c = ctx({("Stomach", ()): dvh(40, 60, covered=0.01, uncovered=0.01)}, boundary=40.0)
    (f,) = findings(constraints.check(c, RULES["STOMACH_MAX"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.message == "not evaluable: Stomach: D0.03cc[Gy] does not exist"
    assert (f.structure, f.matched_roi, f.match) == ("Stomach", "STOMACH", "exact")


# -- with_uncovered_at --------------------------------------------------------------------------------------


def test_uncovered_volume_counted_at_a_dose_within_the_bins():
    d = dvh(10, 20, covered=100, uncovered=50)
    cold = constraints.with_uncovered_at(d, 0.0)
    # the 50 cc at 0 Gy add to V(0) only; mean (15 * 100 + 0 * 50) / 150 = 10 Gy; min 0 Gy
    assert cold.volume_ge_cc.tolist() == [150.0, 100.0, 0.0] and cold.uncovered_cc == 0.0
    assert (cold.mean_gy, cold.min_gy, cold.max_gy, cold.volume_cc) == (10.0, 0.0, 20.0, 150.0)
    warm = constraints.with_uncovered_at(d, 15.0)
    # every edge at or below 15 Gy gains 50 cc; mean (1500 + 750) / 150 = 15; min and max unchanged
    assert warm.volume_ge_cc.tolist() == [150.0, 150.0, 0.0]
    assert (warm.mean_gy, warm.min_gy, warm.max_gy) == (15.0, 10.0, 20.0)
    assert warm.dose_edges_gy.tolist() == [0.0, 10.0, 20.0]


def test_uncovered_volume_hotter_than_the_structure_extends_the_bins():
    d = dvh(10, 20, covered=100, uncovered=50)  # bin width 10 Gy
    hot = constraints.with_uncovered_at(d, 25.0)
    # edges past 20 Gy in steps of 10 up to one bin beyond 25 Gy: 30, 40; V gains 50 cc up to 20 Gy
    assert hot.dose_edges_gy.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]
    assert hot.volume_ge_cc.tolist() == [150.0, 150.0, 50.0, 0.0, 0.0]
    assert hot.max_gy == 25.0 and hot.min_gy == 10.0
    assert hot.mean_gy == pytest.approx((15 * 100 + 25 * 50) / 150)
    hot = constraints.with_uncovered_at(d, 40.0)  # 20 + 10 * (1 .. ceil(20 / 10) + 1): 30, 40, 50
    assert hot.dose_edges_gy.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0]
    assert hot.volume_ge_cc.tolist() == [150.0, 150.0, 50.0, 50.0, 50.0, 0.0]


def test_a_little_uncovered_volume_counts_too():
    # 0.5 cc outside, counted at 0 Gy: V(0) gains it, the mean falls to (15 * 100) / 100.5
    cold = constraints.with_uncovered_at(dvh(10, 20, covered=100, uncovered=0.5), 0.0)
    assert cold.volume_ge_cc.tolist() == [100.5, 100.0, 0.0] and cold.mean_gy == pytest.approx(1500 / 100.5)


def test_uncovered_volume_at_the_top_edge_adds_no_bins():
    # 50 cc at exactly 20 Gy, the highest edge: the curve ends there, D0.03cc is 20 Gy (nothing receives more)
    top = constraints.with_uncovered_at(dvh(10, 20, covered=100, uncovered=50), 20.0)
    assert top.dose_edges_gy.tolist() == [0.0, 10.0, 20.0] and top.volume_ge_cc.tolist() == [150.0, 150.0, 50.0]
    assert evaluate_metric(top, "D0.03cc[Gy]") == 20.0


def test_a_dvh_inside_the_grid_is_unchanged_and_an_uncovered_one_takes_the_dose_as_min_and_max():
    d = dvh(10, 20)
    assert constraints.with_uncovered_at(d, 30.0) is d
    empty = replace(dvh(10, 20, covered=0.0, uncovered=5.0), mean_gy=None, min_gy=None, max_gy=None)
    e = constraints.with_uncovered_at(empty, 7.0)
    assert (e.min_gy, e.max_gy) == (7.0, 7.0)  # all 5 cc at 7 Gy


# -- lower-dose targets of an integrated boost ---------------------------------------------------------------


# the plain difference (the protocol's transition ring around the higher-dose PTVs: tests/test_margins.py)
PLAIN_D2 = replace(RULES["PTV_D2"], lower_dose_ring=None)


def square(x0: float, size: float, z0: float = 0.0, z1: float = 10.0, name: str = "s") -> SlabStack:
    ring = np.array([[x0, 0.0], [x0 + size, 0.0], [x0 + size, size], [x0, size]])
    return SlabStack(name, (Slab(z0, z1, (ring,)),), EndCap.NONE)


def test_each_lower_dose_ptv_is_graded_on_itself_minus_the_higher_ones():
    # PTVp 60 Gy, PTVv 55 Gy, PTVn 50 Gy, one plan: the union against 60 Gy, PTVv - PTVp against 55 Gy and
    # PTVn - (PTVp | PTVv) against 50 Gy. 55-57 Gy over PTVv - PTVp: D2% = 57 - 2 * 2 / 100 = 56.96 Gy =
    # 103.6 % of 55 Gy; 54-56 Gy over PTVn - ...: 55.96 Gy = 111.9 % of 50 Gy, a deviation
    label_v, label_n = "PTV (PTVv - PTVp)", "PTV (PTVn - PTVp | PTVv)"
    dvhs = {("PTV", ()): dvh(58, 62), label_v: dvh(55, 57), label_n: dvh(54, 56)}
    rx = {0: (60.0, "dose reference"), 1: (55.0, "dose reference"), 2: (50.0, "case-report form")}
    c = ctx(dvhs, rx_by_roi=rx, highest_gy=60.0)
    c.stacks = {(0,): square(0, 10), (1,): square(5, 10), (2,): square(20, 10), (0, 1): square(0, 15)}
    union, v, n = findings(constraints.check(c, PLAIN_D2, {}))
    assert union.reference_gy == 60.0 and union.matched_roi == "PTVp | PTVv | PTVn"
    assert (v.matched_roi, v.reference_gy, v.reference_target, v.value, v.grade, v.match) == (
        "PTVv - PTVp", 55.0, "PTVv, dose reference", 103.6, Grade.PER_PROTOCOL, None,
    )  # fmt: skip
    assert v.message.startswith("PTV (PTVv - PTVp): D2% = 103.6 % of 55.00 Gy (PTVv, dose reference)")
    assert (n.matched_roi, n.reference_gy, n.reference_target, n.value, n.grade) == (
        "PTVn - (PTVp | PTVv)", 50.0, "PTVn, case-report form", 111.9, Grade.DEVIATION_UNACCEPTABLE,
    )  # fmt: skip


def test_a_lower_dose_ptv_inside_the_boost_is_not_evaluable_and_the_others_are_graded():
    # PTVv lies inside PTVp: PTVv - PTVp encloses no volume; PTVn, apart, is still graded
    dvhs = {("PTV", ()): dvh(58, 62), "PTV (PTVn - PTVp)": dvh(49, 51)}
    c = ctx(dvhs, rx_by_roi={0: (60.0, "a"), 1: (50.0, "b"), 2: (50.0, "c")}, highest_gy=60.0)
    c.stacks = {(0,): square(0, 10), (1,): square(2, 5), (2,): square(20, 10)}
    _, v, n = findings(constraints.check(c, PLAIN_D2, {}))
    assert (v.grade, v.structure, v.matched_roi) == (Grade.NOT_EVALUABLE, "PTV", "PTVv - PTVp")
    assert v.message == "not evaluable: PTV (PTVv - PTVp): derived structure 'PTV (PTVv - PTVp)' encloses no volume"
    # 49-51 Gy: D2% = 51 - 2 * 2 / 100 = 50.96 Gy = 101.9 % of 50 Gy
    assert (n.matched_roi, n.value, n.grade, n.structure) == ("PTVn - PTVp", 101.9, Grade.PER_PROTOCOL, "PTV")


def test_a_lower_dose_ptv_partly_outside_the_grid_is_graded_over_its_interval():
    # PTVv - PTVp: 100 cc at 50-52 Gy and 2 cc outside the grid, boundary 30 Gy. D2% of 102 cc is D2.04cc; the
    # uncovered 2 cc receive 0 to 30 Gy, below the covered part, so at both ends D2.04cc = 52 - 2 * 2.04 / 100
    # = 51.96 Gy = 103.9 % of 50 Gy: one value, with the note on the uncovered volume
    dvhs = {("PTV", ()): dvh(58, 62), "PTV (PTVv - PTVp)": dvh(50, 52, covered=100, uncovered=2)}
    c = ctx(dvhs, structure_rois={"PTV": [0, 1]}, rx_by_roi={0: (60.0, "a"), 1: (50.0, "b")}, highest_gy=60.0)
    c.stacks = {(0,): square(0, 10), (1,): square(5, 10)}
    c.boundary = 30.0
    _, v = findings(constraints.check(c, PLAIN_D2, {}))
    assert (v.structure, v.value, v.interval, v.grade) == ("PTV", 103.9, None, Grade.PER_PROTOCOL)
    assert "(2.00 cc of PTV (PTVv - PTVp) lies outside the dose grid: it receives between 0 Gy" in v.message


def test_targets_at_one_level_or_without_prescription_add_no_lower_level():
    c = ctx({("PTV", ()): dvh(58, 62)}, rx_by_roi={0: (60.0, "a"), 1: (60.0, "b")}, highest_gy=60.0)
    assert len(constraints.check(c, PLAIN_D2, {})) == 1
    # each-scope rule: no lower levels either
    c = ctx({("PTV", (i,)): dvh(58, 62) for i in (0, 1, 2)}, rx_by_roi={0: (60.0, "a"), 1: (50.0, "b")})
    assert len(constraints.check(c, replace(PLAIN_D2, reference="own", scope="each"), {})) == 3


# -- GTV inside PTV (technical, on slab stacks) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("gtv", "outside", "grade"),
    [
        (square(2, 5), 0.0, Grade.PER_PROTOCOL),  # inside: the difference encloses nothing
        (square(8, 5), 0.15, Grade.DEVIATION_UNACCEPTABLE),  # 3 x 5 mm x 10 mm = 150 mm3 = 0.15 cc outside
        (square(9.5, 2), 0.03, Grade.PER_PROTOCOL),  # 1.5 x 2 x 10 mm = 30 mm3 = 0.03 cc: within 0.1 cc
    ],
)
def test_gtv_outside_ptv_is_the_volume_of_their_difference(gtv, outside, grade):
    ptv = square(0, 10)
    c = ctx({}, structure_rois={"GTV": [0], "PTV": [1]})
    c.stack = lambda s, rois=(), end_cap=None: gtv if s == "GTV" else ptv
    f = technical.gtv_outside_ptv(c, RULES["GTV_IN_PTV"], {})[0]
    assert isinstance(f, Finding) and f.value == outside and f.grade is grade
    assert (f.structure, f.metric, f.unit) == ("GTV", "GTV outside PTV", "cc")
    assert f.message.startswith(f"{outside:.2f} cc of GTV lies outside PTV — ")
