"""The case context (rtqa.evaluation.context) on in-memory structure sets and dose grids.

Structures resolve to ROIs in one of four states (usable, ambiguous, present but unusable,
absent: the module docstring and DESIGN.md "How a verdict is reached"); prescriptions per target
come from the case-report form, the dose references, the dose in an ROI name or a GTV's PTV.
The ROIs are boxes of 20 x 20 mm on planes 2 mm apart, the protocol is the shipped one.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from rtqa.case import LoadedCase, PlanSet, Prescription, PrescriptionSource, TargetPrescription
from rtqa.dvh.expression import EndCap
from rtqa.errors import RtqaError
from rtqa.evaluation.context import CaseContext, Unavailable, dose_in_name, ptv_partner, roi_defects
from rtqa.model import ContourPlane, DoseGrid, DoseReference, FractionGroup, Plan, Roi, StructureSet
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.loader import StructureSpec, load_protocol

PROTOCOL = load_protocol()
ZS = (0.0, 2.0, 4.0, 6.0)


def ring(x0: float = 0.0, size: float = 20.0) -> np.ndarray:
    return np.array([[x0, 0.0], [x0 + size, 0.0], [x0 + size, size], [x0, size]])


def roi(number: int, name: str, x0: float = 0.0, zs=ZS, **kw) -> Roi:
    return Roi(number, name, "", None, tuple(ContourPlane(z, (ring(x0),)) for z in zs), **kw)


def context(rois, prescriptions=(), clinical=None, dose=None) -> CaseContext:
    ss = StructureSet("ss.dcm", "1.2.3", "P1", "Doe", "SS", None, tuple(rois))
    case = LoadedCase(PlanSet("P1", (), None, ()), (), ss, dose, None, tuple(prescriptions), ("read",))
    return CaseContext(case, PROTOCOL, clinical)


# -- the four states of a structure ------------------------------------------------------------------


def test_usable_ambiguous_unusable_and_absent_structures():
    rois = [
        roi(1, "PTVp"),
        roi(2, "PTVv", 30),
        roi(3, "Stomach", 60),
        roi(4, "stomach", 90),
        roi(5, "GTVp"),
        roi(6, "Duodenum", 120, skipped_contours=("1 OPEN_PLANAR",)),
        roi(7, "Liver"),
        roi(8, "Marker"),
    ]
    c = context(rois)
    assert c.structure_rois["PTV"] == [0, 1] and c.structure_rois["Liver"] == [6]
    why = (
        "2 ROIs match the one-ROI structure Stomach ('Stomach', 'stomach'): rtqa does not guess which one is "
        "meant; each is graded and the worst grade is taken"
    )
    assert c.ambiguous == {"Stomach": why} and why in c.warnings and c.warnings[0] == "read"
    assert c.unavailable["Duodenum"] == Unavailable(
        "present but unusable (Duodenum: 1 OPEN_PLANAR contour(s) skipped)", required=True, present=True
    )
    assert c.unavailable["Heart"] == Unavailable(
        "no ROI matches Heart (names and aliases: Heart, 心脏)", required=False, present=False
    )
    # more than six names: the first six and an ellipsis
    assert c.unavailable["SpinalCord"] == Unavailable(
        "no ROI matches SpinalCord (names and aliases: SpinalCord, Cord, Spinal Cord, SC, 脊髓)", True, False
    )
    assert c.unavailable["Kidney_L"].reason == (
        "no ROI matches Kidney_L (names and aliases: Kidney_L, Kidney L, Lt Kidney, L Kidney, L_Kidney, "
        "Left Kidney, ...)"
    )
    assert c.unmatched_rois() == ("Marker",)
    assert c.candidates("Stomach") == [(2,), (3,)]
    assert c.candidates("PTV") == [(0, 1)]
    assert c.candidates("Liver-GTV") == [()]


def test_a_usable_roi_never_hides_an_unusable_one_of_the_same_structure():
    c = context([roi(1, "Bowel_Small"), roi(2, "bowel small", 30, skipped_contours=("2 POINT",))])
    assert "Bowel_Small" not in c.structure_rois
    assert c.unavailable["Bowel_Small"] == Unavailable(
        "present but unusable (bowel small: 2 POINT contour(s) skipped) beside usable 'Bowel_Small'", True, True
    )


def test_an_unusable_optional_structure_is_present_and_so_required():
    c = context([roi(1, "Heart", warnings=("2 non-axial contours",))])
    assert c.unavailable["Heart"] == Unavailable("present but unusable (Heart: 2 non-axial contours)", True, True)


def test_without_a_structure_set_every_structure_is_absent():
    case = LoadedCase(PlanSet("P1", (), None, ()), (), None, None, None, (), ())
    c = CaseContext(case, PROTOCOL, None)
    assert c.unavailable["Liver"] == Unavailable("no structure set", required=True, present=False)
    assert c.unavailable["Heart"] == Unavailable("no structure set", required=False, present=False)
    assert c.rois == [] and c.structure_rois == {}


def test_derived_structures_need_their_operands():
    rois = [
        roi(1, "Liver"),
        roi(2, "Liver_Total", 30),
        roi(3, "GTVp"),
        roi(4, "Lungs", 60, skipped_contours=("1 OPEN",)),
    ]
    c = context(rois)
    # Liver is ambiguous: Liver-GTV cannot be built, and it is present (required since Liver is)
    assert c.unavailable["Liver-GTV"] == Unavailable("needs Liver: Liver is ambiguous", True, True)
    # Lungs (optional) is present but unusable: its derived structure is present too
    assert c.unavailable["Lungs-GTV"].present and c.unavailable["Lungs-GTV"].reason.startswith(
        "needs Lungs: Lungs present but unusable (Lungs: 1 OPEN contour(s) skipped)"
    )
    # Kidney_L and Kidney_R absent and required; no Kidneys ROI
    k = c.unavailable["Kidneys"]
    assert (k.required, k.present) == (True, False)
    assert k.reason.startswith("needs Kidney_L, Kidney_R: Kidney_L no ROI matches Kidney_L")
    assert "; Kidney_R no ROI matches Kidney_R" in k.reason
    # Body is absent: Body-PTV needs it
    assert c.unavailable["Body-PTV"].reason.startswith("needs Body, PTV: Body no ROI matches Body")


def test_an_optional_absent_operand_makes_the_derived_structure_optional():
    c = context([roi(1, "GTVp")])
    assert c.unavailable["Lungs-GTV"] == Unavailable(
        "needs Lungs: Lungs no ROI matches Lungs (names and aliases: Lungs, Lung, Lung_Total, Lungs Total, Both "
        "Lungs, Lung Both, ...)",
        required=False,
        present=False,
    )


def test_a_derived_structure_with_its_operands_or_its_own_roi_is_available():
    c = context([roi(1, "Liver"), roi(2, "GTVp", 5), roi(3, "Kidneys", 60)])
    assert "Liver-GTV" not in c.unavailable
    assert "Kidneys" not in c.unavailable  # use_roi_if_present: the combined ROI, operands absent
    assert c.structure_rois["Kidneys"] == [2]
    assert "Lungs-GTV" in c.unavailable and "Body-PTV" in c.unavailable  # the derived structures after Kidneys
    assert c.stack("Liver-GTV").name == "Liver-GTV"  # named as the protocol names it (warnings, reports)
    # Liver minus GTV: 20 x 20 mm minus 15 x 20 mm on each slab
    assert c.stack("Liver-GTV").volume_cc == pytest.approx(c.stack("Liver").volume_cc / 4)


# -- names, labels, stacks ----------------------------------------------------------------------------


def test_labels_name_the_roi_number_only_when_names_repeat():
    c = context([roi(11, "PTVp"), roi(12, "PTVp", 30), roi(13, "PTV_High", 60), roi(14, "Liver")])
    assert [c.label(i) for i in range(4)] == ["PTVp (ROI 11)", "PTVp (ROI 12)", "PTV_High", "Liver"]
    assert c.roi_label("PTV") == "PTVp (ROI 11) | PTVp (ROI 12) | PTV_High"
    assert c.roi_label("PTV", (2,)) == "PTV_High"
    assert c.roi_label("Liver-GTV") is None
    assert c.how("PTV") == "alias" and c.how("PTV", (0,)) == "alias" and c.how("Liver") == "exact"
    assert c.how("Liver-GTV") is None


def test_how_is_unknown_when_the_chosen_rois_matched_differently():
    c = context([roi(1, "PTVp"), roi(2, "PTV_5000", 30)])  # an alias and a pattern
    assert c.how("PTV", (0,)) == "alias" and c.how("PTV", (1,)) == "pattern" and c.how("PTV") is None


def test_the_stack_of_a_structure_is_the_union_of_its_rois():
    c = context([roi(1, "PTVp"), roi(2, "PTVv", 10), roi(3, "PTVn", 100)])
    one = c.stack("PTV", (0,)).volume_cc
    # 20 x 20 mm over the slabs of the four planes; PTVv overlaps PTVp by half, PTVn is apart
    assert c.stack("PTV", (0, 1)).volume_cc == pytest.approx(1.5 * one)
    assert c.stack("PTV").volume_cc == pytest.approx(2.5 * one)
    assert c.stack("PTV").name == "PTV" and c.stack("PTV", (0, 1)).name == "PTV"
    assert c.stack("PTV").end_cap is c.stack("PTV", (0,)).end_cap is EndCap.HALF_SLAB  # rules/: end_cap half_slab


def test_the_dvh_of_an_ambiguous_structure_as_a_whole_is_refused():
    c = context([roi(1, "Stomach"), roi(2, "stomach", 30)], dose=uniform(10.0))
    with pytest.raises(RtqaError, match="2 ROIs match the one-ROI structure Stomach"):
        c.dvh("Stomach")
    assert c.dvh("Stomach", (1,)).mean_gy == pytest.approx(10.0)


def test_a_dvh_is_computed_once_and_shared_by_the_whole_structure():
    c = context([roi(1, "PTVp"), roi(2, "PTVv", 30)], dose=uniform(10.0))
    whole = c.dvh("PTV")
    assert c.dvh("PTV", (0, 1)) is whole and c.dvhs[("PTV", ())] is whole
    assert c.dvh("PTV", (0,)) is not whole and c.dvh("PTV", (0,)) is c.dvh("PTV", (0,))
    stack = c.stack("PTV", (0,))
    d = c.dvh_of("PTVp - x", stack)
    assert c.dvh_of("PTVp - x", c.stack("PTV", (1,))) is d  # computed once per key


# -- the dose on the grid boundary ------------------------------------------------------------------------


def uniform(value: float, n: int = 61) -> DoseGrid:
    x = np.linspace(-10.0, 170.0, n)
    z = np.array([-2.0, 0.0, 2.0, 4.0, 6.0, 8.0])
    return DoseGrid(np.full((z.size, x.size, x.size), value), x, x.copy(), z)


@pytest.mark.parametrize("face", [(0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)])
def test_boundary_dose_is_the_highest_on_any_of_the_six_faces(face):
    # a 3 x 3 x 3 grid: 100 Gy at the centre (not on a face), 5 Gy in the middle of one face, 1 Gy elsewhere
    d = np.ones((3, 3, 3))
    d[1, 1, 1] = 100.0
    d[face] = 5.0
    axis = np.array([0.0, 1.0, 2.0])
    c = context([roi(1, "Liver")], dose=DoseGrid(d, axis, axis.copy(), axis.copy()))
    assert c.boundary_max_gy() == 5.0


def test_facts_come_from_the_clinical_csv():
    assert context([]).fact("child_pugh") is None
    assert context([], clinical=ClinicalFacts("P1", child_pugh="B7")).fact("child_pugh") == "B7"


# -- prescriptions per target --------------------------------------------------------------------------------


def rx(total, fractions, *targets, source=PrescriptionSource.DOSE_REFERENCE) -> Prescription:
    return Prescription(total, fractions, source, tuple(TargetPrescription(n, v) for n, v in targets))


def test_each_target_takes_its_dose_reference_name_partner_or_the_plan_total():
    rois = [roi(1, "PTVp"), roi(2, "PTV_4500", 30), roi(3, "GTVp"), roi(4, "PTVv", 60), roi(5, "Liver", 90)]
    c = context(rois, [rx(60.0, 30, ("PTVp", 60.0))])
    assert c.rx_by_roi == {
        0: (60.0, "dose reference"),
        1: (45.0, "dose in the ROI name"),
        2: (60.0, "prescription of PTVp"),
        3: (60.0, "plan prescription (no target-specific one found)"),
    }
    assert (c.total_gy, c.fractions, c.highest_gy) == (60.0, 30, 60.0)


def test_a_composite_adds_its_plans_doses():
    # a sequential boost: 50 Gy in 25 then 10 Gy in 5 to PTVp; PTVv only in the first
    c = context(
        [roi(1, "PTVp"), roi(2, "PTVv", 30)],
        [rx(50.0, 25, ("PTVp", 50.0), ("PTVv", 50.0)), rx(10.0, 5, ("PTVp", 10.0))],
    )
    assert (c.total_gy, c.fractions) == (60.0, 30)
    assert c.rx_by_roi == {0: (60.0, "dose reference"), 1: (50.0, "dose reference")}
    assert c.highest_gy == 60.0


def test_totals_are_unknown_when_a_plan_lacks_them():
    c = context([roi(1, "PTVp")], [rx(50.0, 25), rx(None, None)])
    assert (c.total_gy, c.fractions) == (None, None)
    assert c.rx_by_roi == {} and c.highest_gy is None
    c = context([roi(1, "PTVp")], [rx(50.0, 25), rx(10.0, 0)])
    assert (c.total_gy, c.fractions) == (60.0, None)
    c = context([roi(1, "PTVp")], [])
    assert (c.total_gy, c.fractions, c.highest_gy) == (None, None, None)


def test_the_highest_prescription_is_the_highest_of_targets_and_total():
    c = context([roi(1, "PTV_7000")], [rx(60.0, 30)])
    assert c.highest_gy == 70.0
    c = context([roi(1, "PTV_4000")], [rx(60.0, 30)])
    assert c.highest_gy == 60.0


def test_the_case_report_form_names_targets_by_roi_or_by_structure():
    clinical = ClinicalFacts("P1", prescriptions_gy={"PTVv": 54.0, "GTV": 66.0, "PTV_Other": 1.0, "Boost": 2.0})
    rois = [roi(1, "PTVp"), roi(2, "PTVv", 30), roi(3, "GTVp")]
    c = context(rois, [rx(60.0, 30, ("PTVp", 60.0), ("PTVv", 50.0))], clinical=clinical)
    assert c.rx_by_roi == {
        0: (60.0, "dose reference"),
        1: (54.0, "case-report form"),  # by ROI name, over the dose reference
        2: (66.0, "case-report form"),  # by structure name: GTV has one ROI
    }
    assert c.warnings[-1] == (
        "clinical CSV prescriptions for targets that are neither an ROI nor a protocol structure: "
        "rx_Boost, rx_PTV_Other"
    )
    assert c.highest_gy == 66.0


def test_a_structure_wide_clinical_prescription_is_not_given_to_several_rois():
    clinical = ClinicalFacts("P1", prescriptions_gy={"PTV": 54.0})
    c = context([roi(1, "PTVp"), roi(2, "PTVv", 30)], [rx(60.0, 30, ("PTVp", 60.0))], clinical=clinical)
    assert c.rx_by_roi == {0: (60.0, "dose reference"), 1: (60.0, "plan prescription (no target-specific one found)")}
    assert not any("neither an ROI" in w for w in c.warnings)  # PTV is a protocol structure


# -- contour defects and names -------------------------------------------------------------------------------


def test_contour_defects_that_make_an_roi_unusable():
    planes = np.arange(0.0, 20.0, 2.0)
    twin = Roi(1, "R", "", None, (ContourPlane(0.0, (ring(), ring())), ContourPlane(2.0, (ring(),))))
    assert roi_defects(twin, planes) == [
        "two coinciding contours on plane z = 0.00 mm (they cancel each other by parity)"
    ]
    flat = np.array([[0.0, 5.0], [10.0, 5.0], [20.0, 5.0]])  # three points on the line y = 5 mm
    line = Roi(1, "R", "", None, (ContourPlane(4.0, (flat,)), ContourPlane(2.0, (ring(),))))
    assert roi_defects(line, planes) == ["the contours on plane z = 4.00 mm enclose no area"]
    # planes 0, 2, then 8: 4 and 6 missing inside the ROI; one plane missing (0, 2, 6) is tolerated
    gap = Roi(1, "R", "", None, tuple(ContourPlane(z, (ring(),)) for z in (0.0, 2.0, 8.0)))
    assert roi_defects(gap, planes) == ["2 planes of the structure set missing inside the ROI, above z = 2.00 mm"]
    # a line beside a real contour on one plane: the plane still encloses an area
    with_line = Roi(1, "R", "", None, (ContourPlane(0.0, (ring(), flat)),))
    assert roi_defects(with_line, planes) == []
    one_gap = Roi(1, "R", "", None, tuple(ContourPlane(z, (ring(),)) for z in (0.0, 2.0, 6.0)))
    assert roi_defects(one_gap, planes) == []
    two_planes = Roi(1, "R", "", None, tuple(ContourPlane(z, (ring(),)) for z in (0.0, 6.0)))  # 2 and 4 missing
    assert roi_defects(two_planes, planes) == [
        "2 planes of the structure set missing inside the ROI, above z = 0.00 mm"
    ]
    # one outline drawn twice, the copy shifted 0.3 mm in x and y: by parity a band 0.3 mm wide is
    # left (2 x (20 + 20) x 0.3 mm2 less the corners, over 80 mm of outline), under 0.5 mm;
    # shifted 1 mm, the band is 78 / 80 = 0.98 mm wide: no longer one outline, but two contours
    # crossing each other, whose common 19 x 19 = 361 mm2 parity would cancel (issue 17)
    for shift in (0.004, 0.3):
        near = Roi(1, "R", "", None, (ContourPlane(0.0, (ring(), ring() + shift)),))
        assert roi_defects(near, planes) == [
            "two coinciding contours on plane z = 0.00 mm (they cancel each other by parity)"
        ]
    apart = Roi(1, "R", "", None, (ContourPlane(0.0, (ring(), ring() + 1.0)),))
    assert roi_defects(apart, planes) == [
        "two contours cross each other on plane z = 0.00 mm (parity cancels the 361.0 mm2 they share)"
    ]
    islands = Roi(1, "R", "", None, (ContourPlane(0.0, (ring(), ring() + 25.0)),))  # 5 mm apart
    assert roi_defects(islands, planes) == []
    skipped = Roi(1, "R", "", None, (ContourPlane(0.0, (ring(),)),), ("1 POINT",), ("3 non-axial contours", "other"))
    assert roi_defects(skipped, planes) == ["1 POINT contour(s) skipped", "3 non-axial contours"]
    # an area of 0.001 mm2 is not nothing; 0.0005 is
    tiny = np.array([[0.0, 0.0], [0.1, 0.0], [0.1, 0.01], [0.0, 0.01]])
    assert roi_defects(Roi(1, "R", "", None, (ContourPlane(0.0, (tiny,)),)), planes) == []
    tinier = np.array([[0.0, 0.0], [0.05, 0.0], [0.05, 0.01], [0.0, 0.01]])
    assert roi_defects(Roi(1, "R", "", None, (ContourPlane(0.0, (tinier,)),)), planes) == [
        "the contours on plane z = 0.00 mm enclose no area"
    ]


@pytest.mark.parametrize(
    ("name", "gy"),
    [
        ("PTV_5000", 50.0),
        ("PTV5040", 50.4),
        ("PTV_5000cGy", 50.0),
        ("PTV50", 50.0),
        ("PTV 45Gy", 45.0),
        ("PTV_50.4", 50.4),
        ("PTV_2000", 20.0),  # 20-90 Gy inclusive are plausible
        ("PTV_9000", 90.0),
        ("PTV_9100", None),
        ("PTV91", None),
        ("PTV_1900", None),
        ("PTV_95", None),
        ("PTV_19", None),
        ("PTVp", None),
        ("PTV_1", None),
    ],
)
def test_dose_in_an_roi_name(name, gy):
    assert dose_in_name(name) == gy


@pytest.mark.parametrize(
    ("name", "partner"),
    [("GTVp", "PTVp"), ("ctv_1", "PTV_1"), ("ITVv", "PTVv"), ("GTV", "PTV"), ("PTVp", None), ("LiverGTV", None)],
)
def test_the_ptv_of_a_gtv_ctv_or_itv(name, partner):
    assert ptv_partner(name) == partner


def rt_plan(ref_gy: float, roi_number: int, fractions: int = 25) -> Plan:
    """An RT Plan with one TARGET dose reference (type VOLUME) on an ROI, and a first fraction group."""
    ref = DoseReference(1, "VOLUME", "TARGET", "target", roi_number, ref_gy)
    return Plan("p.dcm", "U1", "P1", "Doe", "P", "P", None, "APPROVED", "CURATIVE", None, None, (),
                (FractionGroup(1, fractions, ()),), (ref,), ())  # fmt: skip


def test_case_report_form_prescriptions_become_the_plans_prescription_and_disagreement_is_news():
    # the form says 60 Gy to PTVp; the plan's dose reference to ROI 1 (PTVp) says 50 Gy: more than 2 % apart
    rois = [roi(1, "PTVp"), roi(2, "PTVv", 30)]
    plan = rt_plan(50.0, 1)
    ss = StructureSet("ss.dcm", "1.2.3", "P1", "Doe", "SS", None, tuple(rois))
    dose_ref = Prescription(50.0, 25, PrescriptionSource.DOSE_REFERENCE, (TargetPrescription("PTVp", 50.0, 1),))
    case = LoadedCase(PlanSet("P1", (), None, ()), (plan,), ss, None, None, (dose_ref,), ())
    c = CaseContext(case, PROTOCOL, ClinicalFacts("P1", prescriptions_gy={"PTVp": 60.0, "PTVv": 54.0}))
    (rx_,) = c.plan_rx
    assert (rx_.total_gy, rx_.fractions, rx_.source) == (60.0, 25, PrescriptionSource.CLINICAL)
    assert rx_.targets == (TargetPrescription("PTVp", 60.0), TargetPrescription("PTVv", 54.0))  # sorted by name
    assert (c.total_gy, c.fractions, c.highest_gy) == (60.0, 25, 60.0)
    assert c.rx_by_roi == {0: (60.0, "case-report form"), 1: (54.0, "case-report form")}
    assert [w for w in c.warnings if "disagree" in w] == [
        "prescription sources disagree: clinical gives 60.00 Gy, dose_reference gives 50.00 Gy (more than 2% apart)"
    ]
    # sources within 2 %: nothing to report
    case = LoadedCase(PlanSet("P1", (), None, ()), (rt_plan(59.0, 1),), ss, None, None, (dose_ref,), ())
    c = CaseContext(case, PROTOCOL, ClinicalFacts("P1", prescriptions_gy={"PTVp": 60.0}))
    assert not [w for w in c.warnings if "disagree" in w]


def test_an_roi_without_closed_contours_is_present_but_unusable_and_unmatched_rois_get_no_geometry():
    c = context([roi(1, "Liver"), Roi(2, "Heart", "", None, ()), roi(3, "Marker", 30)])
    heart = c.unavailable["Heart"]
    assert (heart.present, heart.required) == (True, True)
    assert heart.reason.startswith("present but unusable (Heart: ") and "no closed contours" in heart.reason
    assert sorted(c.roi_stacks) == [0]  # Marker matches no structure: never built


def test_every_defect_and_every_unusable_roi_is_named():
    rois = [
        roi(1, "Bowel_Small"),
        roi(2, "Small Bowel", 30),
        roi(3, "bowel small", 60, skipped_contours=("1 POINT",), warnings=("2 non-axial contours",)),
        roi(4, "BOWEL_SMALL", 90, skipped_contours=("3 OPEN_PLANAR",)),
    ]
    c = context(rois)
    assert c.unavailable["Bowel_Small"].reason == (
        "present but unusable (bowel small: 1 POINT contour(s) skipped; 2 non-axial contours; "
        "BOWEL_SMALL: 3 OPEN_PLANAR contour(s) skipped) beside usable 'Bowel_Small', 'Small Bowel'"
    )


def test_six_names_are_listed_whole_and_more_are_cut_to_six():
    six = StructureSpec("Spleen", "oar", ("Spleen", "A1", "A2", "A3", "A4", "A5"), (), True, False)
    seven = StructureSpec("Pancreas", "oar", ("Pancreas", "B1", "B2", "B3", "B4", "B5", "B6"), (), True, False)
    protocol = replace(PROTOCOL, structures={"Spleen": six, "Pancreas": seven}, derived={})
    ss = StructureSet("ss.dcm", "1.2.3", "P1", "Doe", "SS", None, (roi(1, "Liver"),))
    c = CaseContext(LoadedCase(PlanSet("P1", (), None, ()), (), ss, None, None, (), ()), protocol, None)
    assert c.unavailable["Spleen"].reason == "no ROI matches Spleen (names and aliases: Spleen, A1, A2, A3, A4, A5)"
    assert c.unavailable["Pancreas"].reason == (
        "no ROI matches Pancreas (names and aliases: Pancreas, B1, B2, B3, B4, B5, ...)"
    )


def test_a_dvh_built_by_a_check_before_any_other_uses_the_dose():
    c = context([roi(1, "PTVp"), roi(2, "PTVv", 30)], dose=uniform(10.0))
    d = c.dvh_of("PTVp alone", c.stack("PTV", (0,)))  # the first DVH of the case
    assert d.mean_gy == pytest.approx(10.0)  # uniform 10 Gy
    assert d.volume_cc == c.dvh("PTV", (0,)).volume_cc  # the same stack in the same dose


def test_roi_stacks_follow_the_protocols_end_cap():
    # four planes 2 mm apart: 8 mm thick with half a slab beyond each end, 6 mm without
    ss = StructureSet("ss.dcm", "1.2.3", "P1", "Doe", "SS", None, (roi(1, "Liver"),))
    case = LoadedCase(PlanSet("P1", (), None, ()), (), ss, None, None, (), ())
    c = CaseContext(case, replace(PROTOCOL, end_cap=EndCap.NONE), None)
    assert c.stack("Liver").volume_cc == pytest.approx(20 * 20 * 6 / 1000)
    assert context([roi(1, "Liver")]).stack("Liver").volume_cc == pytest.approx(20 * 20 * 8 / 1000)
