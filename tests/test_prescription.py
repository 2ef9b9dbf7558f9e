"""The prescription of a plan and its source (rtqa/evaluation/prescription.py, DOMAIN.md section 3).

The plan is the clean liver case's: three TARGET dose references of 50 Gy (PTVp, PTVv, PTVn
on ROIs 6, 7, 8), 25 fractions, 7 beams of BeamDose 0.285714 Gy (7 x 0.285714 x 25 =
49.99995 Gy). Variants change one of these with dataclasses.replace.
"""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from rtqa.case import PrescriptionSource as S
from rtqa.case import TargetPrescription
from rtqa.evaluation.prescription import derive_prescription
from rtqa.io import read_plan
from rtqa.model import DoseReference
from tests.conftest import case

BEAM_TOTAL = 7 * 0.285714 * 25


@pytest.fixture(scope="module")
def plan(liver_tree):
    return read_plan(os.path.join(case(liver_tree, "liver_clean"), "RP.dcm"))


def test_dose_references_name_their_roi(plan):
    rx = derive_prescription(plan, roi_names={6: "PTV_high", 7: "PTVv"})
    assert rx.source is S.DOSE_REFERENCE and rx.total_gy == 50.0 and rx.fractions == 25
    assert rx.per_fraction_gy == 2.0
    # ROI names where known, the description otherwise
    assert [(t.name, t.total_gy, t.roi_number) for t in rx.targets] == [
        ("PTV_high", 50.0, 6),
        ("PTVv", 50.0, 7),
        ("PTVn", 50.0, 8),
    ]
    assert rx.candidates == ((S.DOSE_REFERENCE, 50.0), (S.BEAM_DOSES, pytest.approx(BEAM_TOTAL)))
    assert rx.warnings == ()


def test_the_highest_target_dose_is_the_plan_prescription(plan):
    refs = (
        replace(plan.dose_references[0], target_prescription_dose_gy=60.0),
        *plan.dose_references[1:],
        DoseReference(9, "VOLUME", "ORGAN_AT_RISK", "Cord", 10, 45.0),  # not a target
        DoseReference(10, "VOLUME", "TARGET", "", None, None),  # no dose: ignored
    )
    rx = derive_prescription(replace(plan, dose_references=refs))
    assert rx.total_gy == 60.0 and [t.name for t in rx.targets] == ["PTVp", "PTVv", "PTVn"]
    assert any("disagree" in w for w in rx.warnings)  # 60 against the beams' 50
    unnamed = derive_prescription(replace(plan, dose_references=(DoseReference(4, "SITE", "TARGET", "", None, 50.0),)))
    assert [t.name for t in unnamed.targets] == ["DoseReference 4"]


def test_clinical_prescriptions_come_first(plan):
    crf = (TargetPrescription("PTVp", 50.0), TargetPrescription("PTVv", 45.0))
    rx = derive_prescription(plan, clinical_targets=crf)
    assert rx.source is S.CLINICAL and rx.total_gy == 50.0 and rx.targets == crf
    assert [s for s, _ in rx.candidates] == [S.CLINICAL, S.DOSE_REFERENCE, S.BEAM_DOSES]
    assert rx.warnings == ()


@pytest.mark.parametrize(
    ("clinical_gy", "warned"),
    # more than 2 % apart: 51.0 is 1.96 % above 50 (relative to 51), 51.1 is 2.15 %; 49.0 vs 50 is 2.04 %
    [(50.0, False), (50.9, False), (51.0, False), (51.1, True), (49.1, False), (48.9, True), (70.0, True)],
)
def test_sources_more_than_2_percent_apart_are_reported(plan, clinical_gy, warned):
    rx = derive_prescription(plan, clinical_targets=(TargetPrescription("PTVp", clinical_gy),))
    messages = [w for w in rx.warnings if "disagree" in w]
    assert bool(messages) is warned, rx.warnings
    if warned:
        assert messages[0] == (
            f"prescription sources disagree: clinical gives {clinical_gy:.2f} Gy, dose_reference gives 50.00 Gy "
            "(more than 2% apart)"
        )


def test_beam_doses_when_nothing_else_and_labelled_a_point_dose(plan):
    rx = derive_prescription(replace(plan, dose_references=()))
    assert rx.source is S.BEAM_DOSES and rx.total_gy == pytest.approx(BEAM_TOTAL) and rx.targets == ()
    point = "prescription taken from the sum of BeamDose values (a point dose, possibly a nominal split)"
    assert rx.warnings == (point,)


def test_no_prescription_when_a_beam_dose_is_missing(plan):
    fg = plan.fraction_groups[0]
    beams = (replace(fg.beams[0], beam_dose_gy=None), *fg.beams[1:])
    bare = replace(plan, dose_references=(), fraction_groups=(replace(fg, beams=beams),))
    rx = derive_prescription(bare)
    assert rx.total_gy is None and rx.source is None and rx.fractions == 25
    assert rx.warnings == ("no prescription found: no clinical prescription, TARGET dose reference or BeamDose",)
    zero = replace(plan, dose_references=(), fraction_groups=(replace(fg, fractions_planned=0),))
    assert derive_prescription(zero).total_gy is None
    no_groups = derive_prescription(replace(plan, dose_references=(), fraction_groups=()))
    assert no_groups.total_gy is None and no_groups.fractions is None


def test_every_fraction_group_is_read_and_a_disagreement_names_each_group(plan):
    """25 + 5 fractions of the same 2 Gy beams: 30 fractions, 60 Gy by BeamDose (the sum over the
    groups, fractions x BeamDose per fraction). The plan's dose reference (50 Gy) then disagrees,
    and the warning names each group with its share."""
    fg = plan.fraction_groups[0]
    two = replace(plan, fraction_groups=(fg, replace(fg, number=2, fractions_planned=5)))
    rx = derive_prescription(two)
    per_fraction = sum(b.beam_dose_gy for b in fg.beams)
    assert rx.fractions == 30
    assert [(g.number, g.fractions) for g in rx.groups] == [(1, 25), (2, 5)]
    assert dict(rx.candidates)[S.BEAM_DOSES] == pytest.approx(30 * per_fraction)
    disagree = [w for w in rx.warnings if "disagree" in w]
    assert len(disagree) == 1
    assert "fraction group 1: 25 x 2.00 Gy = 50.00 Gy" in disagree[0]
    assert "fraction group 2: 5 x 2.00 Gy = 10.00 Gy" in disagree[0]
    # the same plan with its reference at the course total (60 Gy) agrees
    ref = replace(plan.dose_references[0], target_prescription_dose_gy=60.0)
    agreed = derive_prescription(replace(two, dose_references=(ref,)))
    assert agreed.total_gy == 60.0 and agreed.fractions == 30
    assert not [w for w in agreed.warnings if "disagree" in w]


def test_a_dose_reference_without_roi_is_named_by_its_description(plan):
    ref = DoseReference(1, "SITE", "TARGET", "Liver PTV", None, 50.0)
    # ROI numbers of the structure set (1 among them) must not name a reference that has none
    rx = derive_prescription(replace(plan, dose_references=(ref,)), roi_names={1: "Body"})
    assert [t.name for t in rx.targets] == ["Liver PTV"]


def test_exactly_2_percent_apart_is_not_reported(plan):
    # 51 Gy in the dose references against 50 Gy on the case-report form: |51 - 50| = 2 % of 50
    refs = tuple(replace(r, target_prescription_dose_gy=51.0) for r in plan.dose_references)
    rx = derive_prescription(replace(plan, dose_references=refs), clinical_targets=(TargetPrescription("PTVp", 50.0),))
    assert rx.total_gy == 50.0 and not any("disagree" in w for w in rx.warnings)


@pytest.mark.parametrize(("beam_dose", "total"), [(0.0, None), (0.002, 7 * 0.002 * 25)])
def test_beam_doses_give_a_prescription_only_when_positive(plan, beam_dose, total):
    fg = plan.fraction_groups[0]
    beams = tuple(replace(b, beam_dose_gy=beam_dose) for b in fg.beams)
    rx = derive_prescription(replace(plan, dose_references=(), fraction_groups=(replace(fg, beams=beams),)))
    assert rx.total_gy == (None if total is None else pytest.approx(total))


def test_reference_points_are_named_in_a_warning_and_never_prescribe(plan):
    refs = (
        *plan.dose_references,
        DoseReference(11, "COORDINATES", "TARGET", "CALC POINT", None, 40.39),  # as Eclipse exports it
        DoseReference(12, "", "TARGET", "", None, 51.0),  # no structure type, no description
    )
    rx = derive_prescription(replace(plan, dose_references=refs))
    assert rx.total_gy == 50.0 and [t.name for t in rx.targets] == ["PTVp", "PTVv", "PTVn"]
    assert rx.warnings == (
        "dose reference 'CALC POINT' (COORDINATES, 40.39 Gy) is a reference point: informational, not a prescription",
        "dose reference 12 (no structure type, 51.00 Gy) is a reference point: informational, not a prescription",
    )
