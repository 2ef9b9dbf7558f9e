"""The technical, fractionation and eligibility checks on tiny in-memory inputs.

A check reads a few attributes of its CaseContext (the dose grid, the plans and their
prescriptions, the clinical facts, the resolved structures); each test builds a stand-in holding
just those, and the protocol's own rules (rules/nct03535259.yaml), so that every expected grade
follows from the protocol's limits and hand arithmetic written beside it.
"""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

from rtqa.case import Prescription, PrescriptionSource, TargetPrescription
from rtqa.dvh.geometry import EndCap
from rtqa.dvh.metrics import parse_metric
from rtqa.errors import RtqaError
from rtqa.evaluation.checks import eligibility, fractionation, technical
from rtqa.evaluation.context import Unavailable
from rtqa.evaluation.frames import FrameLink
from rtqa.model import DoseGrid, DoseType, Heterogeneity
from rtqa.protocol.limits import Grade, Limit
from rtqa.protocol.loader import StructureSpec, load_protocol
from rtqa.report.model import Finding, NotApplicable

PROTOCOL = load_protocol()
RULES = {r.id: r for r in PROTOCOL.all_rules()}


def grid(x, y, z, dose: float = 1.0) -> DoseGrid:
    x, y, z = (np.asarray(a, dtype=float) for a in (x, y, z))
    return DoseGrid(np.full((z.size, y.size, x.size), dose), x, y, z)


def ctx(**kw) -> SimpleNamespace:
    base = dict(
        dose=grid([0, 2.5, 5], [0, 2.5], [0, 3]),
        case=SimpleNamespace(plans=()),
        plan_rx=[],
        warnings=[],
        clinical_facts={},
        unavailable={},
        ambiguous={},
        structure_rois={},
        highest_gy=None,
        total_gy=None,
    )
    base.update(kw)
    ns = SimpleNamespace(**base)
    ns.fact = lambda name: ns.clinical_facts.get(name)
    ns.possible = lambda name: None
    return ns


def one(outcome: list[Finding | NotApplicable]) -> Finding:
    (f,) = outcome
    assert isinstance(f, Finding)
    return f


def plan(label: str = "P1", status: str = "APPROVED", beams=(), fraction_groups=(1,)) -> SimpleNamespace:
    return SimpleNamespace(
        label=label, approval_status=status, treatment_beams=list(beams), fraction_groups=tuple(fraction_groups)
    )


def beam(name: str, radiation: str = "PHOTON", energy: float | None = 6.0) -> SimpleNamespace:
    return SimpleNamespace(name=name, radiation_type=radiation, nominal_energy_mev=energy)


# -- dose grid spacing (DOSE_GRID: <= 3 mm per protocol, <= 4 mm variation) ---------------------------


def test_dose_grid_is_graded_on_its_largest_voxel_dimension():
    # x 2.5 mm, y 2.0 mm, z planes 3 mm then 4 mm apart: the largest gap, 4 mm, is a variation
    f = one(technical.dose_grid_spacing(ctx(dose=grid([0, 2.5, 5], [0, 2, 4], [0, 3, 7])), RULES["DOSE_GRID"], {}))
    assert f.value == 4.0 and f.grade is Grade.VARIATION_ACCEPTABLE and f.metric == "largest voxel dimension"
    assert f.message.startswith("dose grid 2.50 x 2.00 x 4.00 mm: largest 4.00 mm — variation acceptable")
    # y 3.5 mm is the largest; z 2 mm
    f = one(technical.dose_grid_spacing(ctx(dose=grid([0, 1], [0, 3.5], [0, 2])), RULES["DOSE_GRID"], {}))
    assert f.value == 3.5 and f.grade is Grade.VARIATION_ACCEPTABLE
    # x 5 mm: a deviation
    f = one(technical.dose_grid_spacing(ctx(dose=grid([0, 5], [0, 1], [0, 1])), RULES["DOSE_GRID"], {}))
    assert f.value == 5.0 and f.grade is Grade.DEVIATION_UNACCEPTABLE


def test_an_axis_of_one_sample_has_no_spacing_to_grade():
    # one column and one plane: the spacing along x and z is not stated by the grid, so the 2 mm
    # along y alone must not pass the grid (absent is never per protocol)
    f = one(technical.dose_grid_spacing(ctx(dose=grid([7], [0, 2], [4])), RULES["DOSE_GRID"], {}))
    assert (f.grade, f.category, f.value, f.metric) == (Grade.NOT_EVALUABLE, "query", None, "largest voxel dimension")
    assert "x (one column), z (one plane: GridFrameOffsetVector (3004,000C) gives no slice spacing)" in f.message


@pytest.mark.parametrize(
    "check", ["dose_grid_spacing", "target_coverage", "oar_coverage", "heterogeneity", "dose_type"]
)
def test_checks_of_the_dose_without_a_dose_are_not_evaluable(check):
    f = one(technical.CHECKS[check](ctx(dose=None), RULES["DOSE_GRID"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.message == "not evaluable: no dose"


# -- coverage of targets and organs by the dose grid ------------------------------------------------


def coverage_ctx(uncovered: dict[int, float], boundary: float, highest: float | None) -> SimpleNamespace:
    structures = {
        "PTV": StructureSpec("PTV", "target", (), (), True, True),
        "Liver": StructureSpec("Liver", "oar", (), (), True, False),
        "Stomach": StructureSpec("Stomach", "oar", (), (), True, False),
        "Body": StructureSpec("Body", "other", (), (), True, False),
        "Heart": StructureSpec("Heart", "oar", (), (), False, False),  # not contoured
    }
    names = {0: "PTVp", 1: "PTVv", 2: "LIVER", 3: "STOMACH", 4: "BODY"}
    c = ctx(
        protocol=SimpleNamespace(structures=structures, end_cap=EndCap.HALF_SLAB),
        structure_rois={"PTV": [0, 1], "Liver": [2], "Stomach": [3], "Body": [4]},
        highest_gy=highest,
    )
    # one convention only here (tests/test_convention_flags.py grades coverage under all three)
    c.dvh_by_end_cap = lambda s, rois: {EndCap.HALF_SLAB: SimpleNamespace(uncovered_cc=uncovered.get(rois[0], 0.0))}
    c.uncovered_by_end_cap = lambda s, rois: {EndCap.HALF_SLAB: uncovered.get(rois[0], 0.0)}
    c.label = lambda i: names[i]
    c.boundary_max_gy = lambda: boundary
    c.frames = FrameLink("F", "declared", None)
    return c


def test_coverage_with_every_roi_inside_the_grid_is_per_protocol():
    # 0.005 cc is the rounding-noise threshold (UNCOVERED_CC): not more than it counts as covered
    c = coverage_ctx({0: 0.005, 4: 500.0}, boundary=40.0, highest=50.0)  # Body (role other) is never checked
    f = one(technical.target_coverage(c, RULES["TARGET_COVERAGE"], {}))
    assert (f.grade, f.value, f.unit, f.metric) == (Grade.PER_PROTOCOL, 0.0, "cc", "uncovered volume")
    assert f.message == "every target inside the dose grid (2 ROIs)"
    f = one(technical.oar_coverage(c, RULES["OAR_COVERAGE"], {}))
    assert f.grade is Grade.PER_PROTOCOL and f.message == "every organ at risk inside the dose grid (2 ROIs)"


def test_a_target_outside_the_grid_asks_for_a_resubmission():
    c = coverage_ctx({1: 2.345, 0: 0.5}, boundary=1.0, highest=50.0)
    f = one(technical.target_coverage(c, RULES["TARGET_COVERAGE"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.category == "resubmit"
    assert f.value == 2.35  # the largest uncovered volume, to 0.01 cc (2.345 is stored as 2.34500000000000019984)
    assert f.message == (
        "not evaluable: resubmit the dose on a grid that covers every target: outside the dose grid: PTVp 0.50 cc, "
        "PTVv 2.35 cc (highest dose on the grid boundary 1.00 Gy); metrics of these structures are graded over "
        "what the uncovered part can receive (0 Gy to that boundary dose)"
    )


@pytest.mark.parametrize(
    ("boundary", "grade"),
    [
        (2.49, Grade.PER_PROTOCOL),  # below 5 % of 50 Gy = 2.5 Gy: the uncovered organ gets next to nothing
        (2.5, Grade.NOT_EVALUABLE),  # at 5 %: not below
    ],
)
def test_an_organ_outside_the_grid_passes_only_when_the_boundary_dose_is_below_5_percent(boundary, grade):
    c = coverage_ctx({2: 121.456}, boundary=boundary, highest=50.0)
    f = one(technical.oar_coverage(c, RULES["OAR_COVERAGE"], {}))
    assert (f.grade, f.value, f.unit, f.metric) == (grade, 121.46, "cc", "uncovered volume")  # to 0.01 cc
    if grade is Grade.PER_PROTOCOL:
        assert f.category == "plan_quality"
        assert f.message == (
            f"outside the dose grid: LIVER 121.46 cc; the highest dose on the grid boundary, {boundary:.2f} Gy, is "
            "below 5% of 50.00 Gy: the uncovered parts receive next to nothing"
        )
    else:
        assert f.category == "resubmit" and "covers every organ at risk" in f.message


def test_a_prescription_under_1_gy_still_bounds_the_boundary_dose():
    # 5 % of 0.8 Gy is 0.04 Gy: a boundary of 0.03 Gy is below it
    c = coverage_ctx({2: 3.0}, boundary=0.03, highest=0.8)
    f = one(technical.oar_coverage(c, RULES["OAR_COVERAGE"], {}))
    assert (f.grade, f.category) == (Grade.PER_PROTOCOL, "plan_quality")


def test_an_organ_outside_the_grid_without_a_prescription_asks_for_a_resubmission():
    c = coverage_ctx({3: 1.0}, boundary=0.0, highest=None)  # no prescription: 5 % of nothing is not a bound
    assert one(technical.oar_coverage(c, RULES["OAR_COVERAGE"], {})).category == "resubmit"


def test_a_target_outside_the_grid_never_passes_on_a_cold_boundary():
    c = coverage_ctx({0: 1.0}, boundary=0.0, highest=50.0)
    assert one(technical.target_coverage(c, RULES["TARGET_COVERAGE"], {})).category == "resubmit"


def test_coverage_under_each_convention_is_given_beside_the_protocol_s():
    """The uncovered volume of each convention (a grid cut just beyond a PTV's last contour:
    nothing outside under none, 2.3 cc under half_slab, 3.1 cc under shape), each graded."""
    c = coverage_ctx({}, boundary=40.0, highest=50.0)
    by_cap = {EndCap.HALF_SLAB: 2.3, EndCap.NONE: 0.0, EndCap.SHAPE: 3.1}
    c.uncovered_by_end_cap = lambda s, rois: by_cap if rois == (1,) else dict.fromkeys(by_cap, 0.0)
    f = one(technical.target_coverage(c, RULES["TARGET_COVERAGE"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.value == 2.3 and "PTVv 2.30 cc" in f.message
    rows = {r.end_cap: (r.value, r.grade) for r in f.by_end_cap}
    assert rows == {
        "half_slab": (2.3, Grade.NOT_EVALUABLE),
        "none": (0.0, Grade.PER_PROTOCOL),
        "shape": (3.1, Grade.NOT_EVALUABLE),
    }
    assert f.convention_sensitive and "graded with the protocol's half_slab" in f.message


def test_coverage_with_an_unproven_frame_of_reference_is_not_evaluable_resubmit():
    c = coverage_ctx({0: 0.0}, boundary=0.0, highest=50.0)
    c.frames = FrameLink("F", "declared", "the dose names another frame of reference")
    for check, rule in ((technical.target_coverage, "TARGET_COVERAGE"), (technical.oar_coverage, "OAR_COVERAGE")):
        f = one(check(c, RULES[rule], {}))
        assert f.grade is Grade.NOT_EVALUABLE and f.category == "resubmit" and f.rule == rule
        assert f.message.startswith("not evaluable: ") and "frame of reference" in f.message


def test_coverage_with_nothing_to_check_is_not_evaluable():
    c = coverage_ctx({}, boundary=0.0, highest=50.0)
    c.structure_rois = {"Body": [4]}
    f = one(technical.target_coverage(c, RULES["TARGET_COVERAGE"], {}))
    assert f.grade is Grade.NOT_EVALUABLE
    assert f.message == "not evaluable: no target structure was found in the structure set: nothing to check"
    f = one(technical.oar_coverage(c, RULES["OAR_COVERAGE"], {}))
    assert f.message == "not evaluable: no organ at risk structure was found in the structure set: nothing to check"


# -- what the RT Dose says of itself ------------------------------------------------------------------


def dosed(heterogeneity=Heterogeneity.ON, values=("IMAGE",), dose_type=DoseType.PHYSICAL) -> SimpleNamespace:
    d = grid([0, 1], [0, 1], [0, 1])
    info = SimpleNamespace(heterogeneity=heterogeneity, heterogeneity_values=values, dose_type=dose_type)
    return ctx(dose=SimpleNamespace(info=info, dose_gy=d.dose_gy, x_mm=d.x_mm, y_mm=d.y_mm, z_mm=d.z_mm))


def test_heterogeneity_correction_on_off_or_unstated():
    c = dosed(Heterogeneity.ON, ("IMAGE", "ROI_OVERRIDE"))
    f = one(technical.heterogeneity(c, RULES["HETEROGENEITY"], {}))
    assert (f.grade, f.value_text, f.message) == (
        Grade.PER_PROTOCOL,
        "IMAGE/ROI_OVERRIDE",
        "heterogeneity correction on (IMAGE/ROI_OVERRIDE)",
    )
    assert c.warnings == []
    f = one(technical.heterogeneity(dosed(Heterogeneity.OFF, ("WATER",)), RULES["HETEROGENEITY"], {}))
    assert (f.grade, f.message) == (Grade.DEVIATION_UNACCEPTABLE, "heterogeneity correction off (WATER)")
    assert (f.metric, f.value_text) == ("TissueHeterogeneityCorrection", "WATER")
    # absent is never per protocol: a question to the centre, naming the attribute
    c = dosed(Heterogeneity.UNKNOWN, ())
    f = one(technical.heterogeneity(c, RULES["HETEROGENEITY"], {}))
    assert (f.grade, f.value_text, f.category) == (Grade.NOT_EVALUABLE, "absent", "query")
    assert "TissueHeterogeneityCorrection (3004,0014) is absent" in f.message
    c = dosed()
    c.dose.info = None  # a summed dose without its header: unknown
    f = one(technical.heterogeneity(c, RULES["HETEROGENEITY"], {}))
    assert (f.grade, f.category) == (Grade.NOT_EVALUABLE, "query")


def test_dose_type_must_be_physical():
    f = one(technical.dose_type(dosed(dose_type=DoseType.PHYSICAL), RULES["DOSE_TYPE"], {}))
    assert (f.grade, f.value_text, f.message) == (
        Grade.PER_PROTOCOL,
        "PHYSICAL",
        "DoseType PHYSICAL (allowed: PHYSICAL)",
    )
    f = one(technical.dose_type(dosed(dose_type=DoseType.EFFECTIVE), RULES["DOSE_TYPE"], {}))
    assert (f.grade, f.metric, f.value_text) == (Grade.DEVIATION_UNACCEPTABLE, "DoseType", "EFFECTIVE")
    c = dosed()
    c.dose.info = None
    f = one(technical.dose_type(c, RULES["DOSE_TYPE"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and "DoseType (3004,0004) of the RT Dose unknown" in f.message
    assert f.category == "query"


# -- prescription sources (RX_AGREEMENT: <= 2 %) --------------------------------------------------------


def rx(total, fractions=25, candidates=(), targets=(), source=PrescriptionSource.DOSE_REFERENCE) -> Prescription:
    return Prescription(total, fractions, source, tuple(targets), tuple(candidates))


def test_prescription_sources_within_2_percent_agree():
    # 50 Gy against 51 Gy: |51 - 50| / 50 = 2.0 %, at the limit
    c = ctx(case=SimpleNamespace(plans=(plan(),)))
    c.plan_rx = [
        rx(50.0, candidates=[(PrescriptionSource.DOSE_REFERENCE, 50.0), (PrescriptionSource.BEAM_DOSES, 51.0)])
    ]
    f = one(technical.prescription_agreement(c, RULES["RX_AGREEMENT"], {}))
    assert f.value == 2.0 and f.grade is Grade.PER_PROTOCOL and f.metric == "prescription sources"
    assert f.message.startswith("plan P1: dose_reference 50.00 Gy, beam_doses 51.00 Gy; largest difference 2.0 %")
    # 50 Gy against 48.9 Gy: 1.1 / 50 = 2.2 %; the larger of the two differences counts
    c.plan_rx = [
        rx(
            50.0,
            candidates=[
                (PrescriptionSource.CLINICAL, 50.5),
                (PrescriptionSource.BEAM_DOSES, 48.9),
                (PrescriptionSource.DOSE_REFERENCE, 50.0),
            ],
        )
    ]
    f = one(technical.prescription_agreement(c, RULES["RX_AGREEMENT"], {}))
    assert f.value == 2.2 and f.grade is Grade.DEVIATION_UNACCEPTABLE
    # 50 Gy against 55 Gy: 5 / 50 = 10.0 %
    c.plan_rx = [rx(50.0, candidates=[(PrescriptionSource.CLINICAL, 55.0), (PrescriptionSource.DOSE_REFERENCE, 50.0)])]
    assert one(technical.prescription_agreement(c, RULES["RX_AGREEMENT"], {})).value == 10.0


def test_a_single_or_missing_prescription_source():
    c = ctx(case=SimpleNamespace(plans=(plan("A"), plan("B"))))
    c.plan_rx = [rx(50.0, candidates=[(PrescriptionSource.DOSE_REFERENCE, 50.0)]), rx(None)]
    first, second = technical.prescription_agreement(c, RULES["RX_AGREEMENT"], {})
    assert isinstance(first, Finding) and isinstance(second, Finding)
    assert (first.grade, first.value, first.unit, first.metric) == (
        Grade.PER_PROTOCOL,
        0.0,
        "%",
        "prescription sources",
    )
    assert first.message == "plan A: one prescription source (dose_reference), nothing to disagree with"
    assert second.grade is Grade.NOT_EVALUABLE and second.category == "query"
    assert second.message.startswith("not evaluable: plan B: no prescription found to compare (no rx_<target>")
    c.plan_rx.reverse()  # a plan without a prescription never stops the next one from being checked
    assert [f.grade for f in technical.prescription_agreement(c, RULES["RX_AGREEMENT"], {})] == [
        Grade.NOT_EVALUABLE,
        Grade.PER_PROTOCOL,
    ]
    c = ctx(case=SimpleNamespace(plans=(plan(),)), plan_rx=[rx(50.0, source=None)])
    assert (
        "one prescription source (none)" in one(technical.prescription_agreement(c, RULES["RX_AGREEMENT"], {})).message
    )
    f = one(technical.prescription_agreement(ctx(), RULES["RX_AGREEMENT"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.message == "not evaluable: no plan (structure set only)"


# -- beams ----------------------------------------------------------------------------------------------


def test_every_treatment_beam_must_be_a_photon_beam():
    c = ctx(case=SimpleNamespace(plans=(plan(beams=[beam("A1"), beam("A2")]), plan(beams=[beam("B1")]))))
    f = one(technical.beam_radiation(c, RULES["BEAM_RADIATION"], {}))
    assert (f.grade, f.value_text, f.metric) == (Grade.PER_PROTOCOL, "PHOTON", "RadiationType")
    assert f.message == "3 treatment beams, all PHOTON; setup beams ignored"
    c = ctx(case=SimpleNamespace(plans=(plan(beams=[beam("A1"), beam("E1", "ELECTRON"), beam("X", "")]),)))
    f = one(technical.beam_radiation(c, RULES["BEAM_RADIATION"], {}))
    assert (f.grade, f.value_text) == (Grade.DEVIATION_UNACCEPTABLE, "ELECTRON/PHOTON/absent")
    assert f.message == "beams not PHOTON: E1 (ELECTRON), RadiationType (300A,00C6) absent for X"
    # an absent RadiationType alone is not a deviation, and never a pass: a query naming it
    c = ctx(case=SimpleNamespace(plans=(plan(beams=[beam("A1"), beam("X", "")]),)))
    f = one(technical.beam_radiation(c, RULES["BEAM_RADIATION"], {}))
    assert (f.grade, f.category, f.value_text) == (Grade.NOT_EVALUABLE, "query", "PHOTON/absent")
    assert f.message == "not evaluable: RadiationType (300A,00C6) is absent for X; expected PHOTON"


def test_the_highest_beam_energy_is_graded():
    # BEAM_ENERGY: <= 10 MV per protocol, <= 18 MV variation; 6, 15, 6 MV: the highest, 15, is a variation
    c = ctx(
        case=SimpleNamespace(
            plans=(plan(beams=[beam("A", energy=6.0), beam("B", energy=15.0)]), plan(beams=[beam("C")]))
        )
    )
    f = one(technical.beam_energy(c, RULES["BEAM_ENERGY"], {}))
    assert f.value == 15.0 and f.grade is Grade.VARIATION_ACCEPTABLE and f.metric == "highest nominal energy"
    assert f.message.startswith("treatment beam energies: 15, 6 MV; highest 15.0 MV")
    c = ctx(case=SimpleNamespace(plans=(plan(beams=[beam("A"), beam("B", energy=None), beam("C", energy=None)]),)))
    f = one(technical.beam_energy(c, RULES["BEAM_ENERGY"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.category == "query"
    assert f.message == "not evaluable: NominalBeamEnergy (300A,0114) of the first control point is absent for B, C"


def test_several_allowed_radiation_types_are_all_named():
    r = replace(RULES["BEAM_RADIATION"], allowed=("PHOTON", "ELECTRON"))
    c = ctx(case=SimpleNamespace(plans=(plan(beams=[beam("A1"), beam("E1", "ELECTRON")]),)))
    assert (
        one(technical.beam_radiation(c, r, {})).message == "2 treatment beams, all PHOTON/ELECTRON; setup beams ignored"
    )
    c = ctx(case=SimpleNamespace(plans=(plan(beams=[beam("A1"), beam("P1", "PROTON")]),)))
    assert one(technical.beam_radiation(c, r, {})).message == "beams not PHOTON/ELECTRON: P1 (PROTON)"


@pytest.mark.parametrize("check", ["beam_radiation", "beam_energy"])
def test_beam_checks_without_treatment_beams_are_not_evaluable(check):
    c = ctx(case=SimpleNamespace(plans=(plan(beams=[]),)))
    f = one(technical.CHECKS[check](c, RULES["BEAM_RADIATION"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.message == "not evaluable: no treatment beams in the plan"


# -- dose algorithm and approval --------------------------------------------------------------------------


def test_dose_algorithm_in_the_allowed_list_whatever_its_case():
    allowed = "AAA, Acuros XB, Collapsed Cone, Convolution Superposition, Monte Carlo"
    c = ctx(clinical_facts={"dose_algorithm": "acuros xb"})
    f = one(technical.dose_algorithm(c, RULES["DOSE_ALGORITHM"], {}))
    assert (f.grade, f.value_text, f.metric) == (Grade.PER_PROTOCOL, "acuros xb", "dose algorithm")
    assert f.message == f"dose algorithm 'acuros xb' (allowed: {allowed})"
    c = ctx(clinical_facts={"dose_algorithm": "Pencil Beam"})
    assert one(technical.dose_algorithm(c, RULES["DOSE_ALGORITHM"], {})).grade is Grade.DEVIATION_UNACCEPTABLE
    f = one(technical.dose_algorithm(ctx(), RULES["DOSE_ALGORITHM"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and "dose_algorithm unknown" in f.message
    assert f.possible_grades == (
        (Grade.PER_PROTOCOL, f"dose-algorithm one of {allowed}"),
        (Grade.DEVIATION_UNACCEPTABLE, "any other dose algorithm"),
    )


def test_approval_status_of_each_plan():
    # APPROVAL grades: UNAPPROVED variation acceptable, REJECTED deviation unacceptable
    plans = (plan("A"), plan("B", "unapproved"), plan("C", "REJECTED"), plan("D", ""), plan("E", "RETIRED"))
    a, b, c_, d, e = technical.approval_status(ctx(case=SimpleNamespace(plans=plans)), RULES["APPROVAL"], {})
    assert isinstance(a, Finding) and (a.grade, a.value_text, a.metric, a.message) == (
        Grade.PER_PROTOCOL,
        "APPROVED",
        "ApprovalStatus",
        "plan A: APPROVED",
    )
    assert isinstance(b, Finding) and (b.grade, b.value_text, b.metric) == (
        Grade.VARIATION_ACCEPTABLE,
        "UNAPPROVED",
        "ApprovalStatus",
    )
    assert b.message == (
        "plan B: ApprovalStatus UNAPPROVED: the submitted plan is not the approved plan — variation acceptable"
    )
    assert isinstance(c_, Finding) and c_.grade is Grade.DEVIATION_UNACCEPTABLE
    assert isinstance(d, Finding) and (d.grade, d.value_text) == (Grade.NOT_EVALUABLE, None)
    assert d.message == (
        "not evaluable: plan D: ApprovalStatus (300E,0002) is absent; expected APPROVED, UNAPPROVED, REJECTED"
    )
    assert isinstance(e, Finding) and (e.grade, e.value_text) == (Grade.NOT_EVALUABLE, "RETIRED")
    f = one(technical.approval_status(ctx(), RULES["APPROVAL"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.message == "not evaluable: no plan (structure set only)"


def test_gtv_in_ptv_with_a_structure_missing_or_ambiguous():
    r = RULES["GTV_IN_PTV"]
    c = ctx(unavailable={"PTV": Unavailable("no ROI matches PTV", required=True, present=False)})
    f = one(technical.gtv_outside_ptv(c, r, {}))
    assert (f.grade, f.structure, f.message) == (Grade.NOT_EVALUABLE, "GTV", "not evaluable: PTV: no ROI matches PTV")
    c = ctx(unavailable={"GTV": Unavailable("unusable", required=False, present=True)})
    assert one(technical.gtv_outside_ptv(c, r, {})).message == "not evaluable: GTV: unusable"
    c = ctx(unavailable={"PTV": Unavailable("none", required=False, present=False)})
    (na,) = technical.gtv_outside_ptv(c, r, {})
    assert na == NotApplicable("GTV_IN_PTV", "GTV", "optional structure PTV is not contoured")
    c = ctx(ambiguous={"PTV": "2 ROIs match PTV"})
    f = one(technical.gtv_outside_ptv(c, r, {}))
    assert (f.grade, f.structure, f.message) == (Grade.NOT_EVALUABLE, "GTV", "not evaluable: 2 ROIs match PTV")


# -- fractionation (FX_DOSE_PER_FRACTION: 1.98-2.02 Gy; FX_TOTAL_DOSE: 40-60 Gy, variation 38-63 Gy) --------


def test_dose_per_fraction_of_each_prescription_level():
    targets = [TargetPrescription("PTVp", 60.0), TargetPrescription("PTVv", 50.0), TargetPrescription("PTVn", 50.0)]
    c = ctx(case=SimpleNamespace(plans=(plan("SIB"),)), plan_rx=[rx(60.0, 25, targets=targets)])
    high, low = fractionation.check(c, RULES["FX_DOSE_PER_FRACTION"], {})
    assert isinstance(high, Finding) and isinstance(low, Finding)
    # 60 Gy / 25 = 2.40 Gy: outside 1.98-2.02; 50 Gy / 25 = 2.00 Gy: within
    assert (high.value, high.grade, high.structure) == (2.4, Grade.DEVIATION_UNACCEPTABLE, "PTVp")
    assert (low.value, low.grade, low.structure) == (2.0, Grade.PER_PROTOCOL, None)  # two targets: no one structure
    assert high.metric == "dose per fraction"
    assert high.message.startswith("plan SIB (PTVp): 60.00 Gy in 25 fractions = 2.40 Gy per fraction — deviation")
    assert low.message.startswith("plan SIB (PTVv, PTVn): 50.00 Gy in 25 fractions = 2.00 Gy per fraction — per")


def test_dose_per_fraction_of_one_level_names_no_target():
    c = ctx(case=SimpleNamespace(plans=(plan(),)), plan_rx=[rx(50.0, 25, targets=[TargetPrescription("PTV", 50.0)])])
    f = one(fractionation.check(c, RULES["FX_DOSE_PER_FRACTION"], {}))
    assert f.structure is None and f.message.startswith("plan P1: 50.00 Gy in 25 fractions = 2.00 Gy per fraction")
    c = ctx(case=SimpleNamespace(plans=(plan(),)), plan_rx=[rx(45.0, 25)])  # no targets: the plan's total
    f = one(fractionation.check(c, RULES["FX_DOSE_PER_FRACTION"], {}))
    assert f.value == 1.8 and f.grade is Grade.DEVIATION_UNACCEPTABLE  # 45 / 25 = 1.80 Gy


@pytest.mark.parametrize(
    ("total", "fractions", "groups", "named"),
    [
        (None, 25, (1,), "no prescription: no rx_<target> in the --clinical CSV, no TARGET dose reference"),
        (50.0, None, (1,), "NumberOfFractionsPlanned (300A,0078) is absent"),
        (50.0, 0, (1,), "NumberOfFractionsPlanned (300A,0078) is 0"),
        (50.0, None, (), "FractionGroupSequence (300A,0070) is absent"),
    ],
)
def test_dose_per_fraction_without_a_prescription_or_fractions_is_not_evaluable(total, fractions, groups, named):
    c = ctx(case=SimpleNamespace(plans=(plan(fraction_groups=groups),)), plan_rx=[rx(total, fractions)])
    f = one(fractionation.check(c, RULES["FX_DOSE_PER_FRACTION"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.metric == "dose per fraction" and f.category == "query"
    assert f.message.startswith("not evaluable: plan P1: ") and named in f.message


def test_a_plan_without_fractions_never_stops_the_next_plan_being_checked():
    c = ctx(case=SimpleNamespace(plans=(plan("A"), plan("B"))), plan_rx=[rx(50.0, None), rx(10.0, 5)])
    a, b = fractionation.check(c, RULES["FX_DOSE_PER_FRACTION"], {})
    assert isinstance(a, Finding) and isinstance(b, Finding)
    assert a.grade is Grade.NOT_EVALUABLE and (b.value, b.grade) == (2.0, Grade.PER_PROTOCOL)  # 10 Gy / 5


def test_fractionation_without_a_plan_is_not_evaluable():
    f = one(fractionation.check(ctx(), RULES["FX_DOSE_PER_FRACTION"], {}))
    assert (f.grade, f.metric, f.message) == (
        Grade.NOT_EVALUABLE,
        "dose per fraction",
        "not evaluable: no plan (structure set only)",
    )
    f = one(fractionation.check(ctx(), RULES["FX_TOTAL_DOSE"], {}))
    assert f.metric == "total dose"


def test_total_dose_of_a_composite_lists_its_plans():
    c = ctx(case=SimpleNamespace(plans=(plan("A"), plan("B"))), total_gy=62.0)
    c.plan_rx = [rx(50.0, 25), rx(12.0, 6, source=PrescriptionSource.CLINICAL)]
    f = one(fractionation.check(c, RULES["FX_TOTAL_DOSE"], {}))
    # 62 Gy: above 60, within the variation band 38-63 Gy
    assert (f.value, f.grade, f.metric) == (62.0, Grade.VARIATION_ACCEPTABLE, "total dose")
    assert f.message.startswith("total dose 50.00 Gy + 12.00 Gy = 62.00 Gy (from clinical, dose_reference) — variation")
    c = ctx(case=SimpleNamespace(plans=(plan("A"),)), total_gy=50.0, plan_rx=[rx(50.0, 25)])
    f = one(fractionation.check(c, RULES["FX_TOTAL_DOSE"], {}))
    assert f.grade is Grade.PER_PROTOCOL and f.message.startswith("total dose 50.00 Gy (from dose_reference) — per")
    c = ctx(case=SimpleNamespace(plans=(plan("A"),)), total_gy=None, plan_rx=[rx(None)])
    f = one(fractionation.check(c, RULES["FX_TOTAL_DOSE"], {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.category == "query"
    assert f.message.startswith("not evaluable: total prescribed dose unknown (plan A: no prescription")
    assert f.metric == "total dose"


# -- eligibility -----------------------------------------------------------------------------------------


def test_a_clinical_fact_in_the_allowed_list_is_eligible():
    r = RULES["CHILD_PUGH"]  # allowed A5, A6, B7, B8
    f = one(eligibility.check(ctx(clinical_facts={"child_pugh": "B7"}), r, {}))
    assert (f.grade, f.value_text, f.category, f.metric) == (Grade.PER_PROTOCOL, "B7", "eligibility", "child_pugh")
    assert f.message == "child-pugh B7 (eligible: A5, A6, B7, B8)"
    assert (f.structure, f.matched_roi, f.match, f.value) == (None, None, None, None)
    assert f.unconfirmed and f.source == r.source
    f = one(eligibility.check(ctx(clinical_facts={"child_pugh": "C10"}), r, {}))
    assert (f.grade, f.message) == (Grade.DEVIATION_UNACCEPTABLE, "child-pugh C10 (not eligible: A5, A6, B7, B8)")
    f = one(eligibility.check(ctx(), r, {}))
    assert f.grade is Grade.NOT_EVALUABLE and f.value_text is None
    assert f.message == "not evaluable: needs the clinical fact child_pugh (--clinical CSV)"


def volume_ctx(volume_cc: float | None = None, **kw) -> SimpleNamespace:
    c = ctx(**kw)
    # the same volume under every end-cap convention: nothing convention-sensitive here
    c.protocol = SimpleNamespace(end_cap=EndCap.HALF_SLAB)
    c.stack = lambda s, rois=(), end_cap=None: SimpleNamespace(volume_cc=volume_cc)
    c.roi_label = lambda s: {"Liver-GTV": "LIVER - GTVp"}.get(s)  # what the structure's ROIs are called
    c.how = lambda s: {"Liver-GTV": "derived"}.get(s)
    return c


@pytest.mark.parametrize(
    ("volume", "grade", "word"),
    [
        (700.004, Grade.DEVIATION_UNACCEPTABLE, "fails"),  # rounds to 700.00 cc: not more than 700
        (700.006, Grade.PER_PROTOCOL, "meets"),  # rounds to 700.01 cc
    ],
)
def test_normal_liver_volume_needs_no_dose_and_is_graded_after_rounding(volume, grade, word):
    r = RULES["NORMAL_LIVER_VOLUME"]  # > 700 cc
    f = one(eligibility.check(volume_ctx(volume, dose=None), r, {}))
    assert f.grade is grade and f.value == round(volume, 2) and (f.unit, f.metric) == ("cc", "Volume[cc]")
    assert f.message == f"Liver-GTV: Volume = {round(volume, 2):.2f} cc ({word} > 700 cc)"
    assert (f.structure, f.matched_roi, f.match, f.per_protocol) == (
        "Liver-GTV",
        "LIVER - GTVp",
        "derived",
        r.per_protocol,
    )


def test_normal_liver_volume_unavailable_or_ambiguous_is_not_evaluable():
    r = RULES["NORMAL_LIVER_VOLUME"]
    c = volume_ctx(unavailable={"Liver-GTV": Unavailable("needs Liver: absent", required=True, present=False)})
    f = one(eligibility.check(c, r, {}))
    assert (f.grade, f.message) == (Grade.NOT_EVALUABLE, "not evaluable: Liver-GTV: needs Liver: absent")
    assert (f.matched_roi, f.match) == (None, None)  # no value: no ROI named
    c = volume_ctx(ambiguous={"Liver-GTV": "2 ROIs match Liver"})
    f = one(eligibility.check(c, r, {}))
    assert (f.grade, f.message) == (Grade.NOT_EVALUABLE, "not evaluable: 2 ROIs match Liver")


def dosed_rule_ctx(dvh_or_error, **kw) -> SimpleNamespace:
    c = volume_ctx(**kw)

    def get(structure):
        assert structure == "Liver-GTV"  # the rule's structure
        if isinstance(dvh_or_error, Exception):
            raise dvh_or_error
        return dvh_or_error

    c.dvh = get
    c.dvh_by_end_cap = lambda structure, rois=(): {EndCap.HALF_SLAB: get(structure)}  # no other convention
    return c


MEAN_RULE = replace(
    RULES["NORMAL_LIVER_VOLUME"], metric=parse_metric("Mean[Gy]"), unit="Gy", per_protocol=Limit.parse("<= 28")
)


def test_an_eligibility_metric_of_dose_is_graded_on_the_dvh():
    mean = SimpleNamespace(mean_gy=28.004, max_gy=None, min_gy=None, covered_cc=10.0, volume_cc=10.0)  # 28.00 Gy: meets
    f = one(eligibility.check(dosed_rule_ctx(mean), MEAN_RULE, {}))
    assert (f.grade, f.value) == (Grade.PER_PROTOCOL, 28.0)
    assert f.message == "Liver-GTV: Mean = 28.00 Gy (meets ≤ 28 Gy)"
    mean.mean_gy = 28.006  # 28.01 Gy: fails
    assert one(eligibility.check(dosed_rule_ctx(mean), MEAN_RULE, {})).grade is Grade.DEVIATION_UNACCEPTABLE
    f = one(eligibility.check(dosed_rule_ctx(mean, dose=None), MEAN_RULE, {}))
    assert (f.grade, f.message) == (Grade.NOT_EVALUABLE, "not evaluable: no dose")


def test_an_eligibility_metric_that_cannot_be_computed_is_not_evaluable():
    f = one(eligibility.check(dosed_rule_ctx(RtqaError("no volume")), MEAN_RULE, {}))
    assert (f.grade, f.message) == (Grade.NOT_EVALUABLE, "not evaluable: Liver-GTV: no volume")
    empty = SimpleNamespace(mean_gy=None, max_gy=None, min_gy=None, covered_cc=0.0, volume_cc=0.0)
    f = one(eligibility.check(dosed_rule_ctx(empty), MEAN_RULE, {}))
    assert (f.grade, f.message) == (Grade.NOT_EVALUABLE, "not evaluable: Liver-GTV: Mean[Gy] does not exist")


def test_an_eligibility_percentage_is_rounded_to_0_1_percent_before_grading():
    # V20Gy = 50.04 cc of 100 cc = 50.04 %, 50.0 % at the report precision: meets <= 50 %
    r = replace(MEAN_RULE, metric=parse_metric("V20Gy[%]"), unit="%", per_protocol=Limit.parse("<= 50"))
    v20 = SimpleNamespace(covered_cc=100.0, volume_cc=100.0, volume_at_dose=lambda d: 50.04 if d == 20.0 else None)
    f = one(eligibility.check(dosed_rule_ctx(v20), r, {}))
    assert (f.value, f.grade) == (50.0, Grade.PER_PROTOCOL)
