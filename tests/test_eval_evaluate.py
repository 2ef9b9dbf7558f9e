"""The evaluation orchestrator (rtqa.evaluation.evaluate) on small in-memory cases.

Every rule gives findings or says why it does not apply; absent, unusable and ambiguous
structures are findings of their own (category resubmit); the report carries the plan's
identity, prescription, structures and warnings (DESIGN.md, "How a verdict is reached" and the
JSON report contract). Boxes of 20 x 20 mm on planes 2 mm apart, uniform dose grids, the shipped
protocol.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from rtqa.case import DoseChoice, LoadedCase, PlanSet, Prescription, PrescriptionSource, TargetPrescription
from rtqa.evaluation.evaluate import evaluate
from rtqa.model import ContourPlane, DoseGrid, FileHeader, Modality, Plan, Roi, StructureSet
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from rtqa.report.model import StructureSummary

PROTOCOL = load_protocol()
ZS = (0.0, 2.0, 4.0, 6.0)


def roi(number: int, name: str, x0: float = 0.0, size: float = 20.0, **kw) -> Roi:
    ring = np.array([[x0, 0.0], [x0 + size, 0.0], [x0 + size, size], [x0, size]])
    return Roi(number, name, "", None, tuple(ContourPlane(z, (ring,)) for z in ZS), **kw)


def plan(uid: str, label: str, intent: str = "CURATIVE", date=dt.date(2026, 1, 2)) -> Plan:
    return Plan(f"{uid}.dcm", uid, "P1", "Doe^Plan", label, label, date, "APPROVED", intent, None, None, (), (), (), (),
                institution_name="Centre A")  # fmt: skip


def header(path: str, modality: str, uid: str) -> FileHeader:
    return FileHeader(path, Modality(modality), "", uid, "P1")


def uniform(value: float) -> DoseGrid:
    x = np.linspace(-10.0, 130.0, 57)
    z = np.arange(-2.0, 9.0, 2.0)
    return DoseGrid(np.full((z.size, x.size, x.size), value), x, x.copy(), z)


def case(rois, plans=(), dose=None, prescriptions=None, choice=None) -> LoadedCase:
    if prescriptions is None:  # one per plan
        prescriptions = tuple(Prescription(50.0, 25, PrescriptionSource.DOSE_REFERENCE) for _ in plans)
    ss = StructureSet("ss.dcm", "SS1", "P1", "Doe^SS", "SSLABEL", None, tuple(rois))
    ps = PlanSet(
        "P1",
        tuple(header(p.path, "RTPLAN", p.sop_instance_uid) for p in plans),
        header("ss.dcm", "RTSTRUCT", "SS1"),
        (header("dose.dcm", "RTDOSE", "D1"),) if dose is not None else (),
    )
    sha = {"ss.dcm": "abc", "dose.dcm": "def"}
    return LoadedCase(ps, tuple(plans), ss, dose, choice, tuple(prescriptions), ("from loading",), sha)


ROIS = [roi(1, "Liver", 0, 60), roi(2, "GTVp", 0, 10), roi(3, "PTVp", 0, 14), roi(4, "Marker", 100, 2)]


def test_a_structure_set_alone_gives_its_structure_findings_and_eligibility():
    r = evaluate(case(ROIS), PROTOCOL)
    presence = {f.rule: f for f in r.findings if f.rule.startswith("STRUCTURE:")}
    # required and absent: Stomach, Duodenum, Bowel_Small, SpinalCord, Kidney_L, Kidney_R, Body, and Kidneys, built
    # from the two required kidneys when there is no Kidneys ROI; optional and absent (Heart, ...): nothing
    assert set(presence) == {f"STRUCTURE:{s}" for s in ("Stomach", "Duodenum", "Bowel_Small", "SpinalCord", "Kidney_L",
                                                       "Kidney_R", "Body", "Kidneys")}  # fmt: skip
    body = presence["STRUCTURE:Body"]
    assert (body.structure, body.metric, body.grade, body.category, body.value, body.unit) == (
        "Body", "presence", Grade.NOT_EVALUABLE, "resubmit", None, "",
    )  # fmt: skip
    assert body.message.startswith("not evaluable: required structure Body: no ROI matches Body (names and aliases")
    # presence findings come first, in protocol order
    assert [f.rule for f in r.findings[:2]] == ["STRUCTURE:Stomach", "STRUCTURE:Duodenum"]
    # every eligibility rule is listed under eligibility, nowhere else
    assert {f.rule for f in r.eligibility} == {"NORMAL_LIVER_VOLUME", "CHILD_PUGH"}
    assert not {f.rule for f in r.findings} & {"NORMAL_LIVER_VOLUME", "CHILD_PUGH"}
    # Liver 60 x 60 minus GTV 10 x 10 mm over 8 mm (four planes, half a slab beyond each end) = 28 cc
    vol = next(f for f in r.eligibility if f.rule == "NORMAL_LIVER_VOLUME")
    assert vol.value == pytest.approx((3600 - 100) * 8 / 1000) and vol.grade is Grade.DEVIATION_UNACCEPTABLE
    # optional structures not contoured are not applicable; the rules of required ones not evaluable
    na = {n.rule for n in r.not_applicable}
    assert "HEART_V25" in na and "STOMACH_MAX" not in na
    stomach = next(f for f in r.findings if f.rule == "STOMACH_MAX")
    assert stomach.grade is Grade.NOT_EVALUABLE
    assert (r.plan_label, r.patient_name, r.plan_uid, r.plan_uids, r.prescription) == (
        "structure set SSLABEL", "Doe^SS", None, (), None,
    )  # fmt: skip
    assert (r.plan_date, r.approval_status, r.institution, r.dose_source) == (None, None, "", None)
    assert r.unmatched_rois == ("Marker",)
    assert r.warnings[0] == "from loading"
    assert "1 ROI(s) match no structure of the protocol (not graded): 'Marker'" in r.warnings
    # without a dose, structures have their volume only
    assert r.structures["Liver"] == StructureSummary("Liver", pytest.approx(3600 * 8 / 1000), None, None, None, None)
    assert r.structures["Liver-GTV"].volume_cc == pytest.approx(28.0) and r.structures["Liver-GTV"].roi is None
    assert "Stomach" not in r.structures and "Kidneys" not in r.structures and r.curves == {}
    assert [(i.path, i.modality, i.sop_instance_uid, i.sha256) for i in r.inputs] == [
        ("ss.dcm", "RTSTRUCT", "SS1", "abc")
    ]


def test_unusable_and_ambiguous_structures_are_findings_whether_required_or_not():
    rois = [
        *ROIS,
        roi(5, "Heart", 30, skipped_contours=("1 OPEN_PLANAR",)),
        roi(6, "Esophagus", 40),
        roi(7, "esophagus", 50),
    ]
    r = evaluate(case(rois), PROTOCOL)
    heart = next(f for f in r.findings if f.rule == "STRUCTURE:Heart")
    assert (
        heart.message
        == "not evaluable: structure Heart: present but unusable (Heart: 1 OPEN_PLANAR contour(s) skipped)"
    )
    eso = next(f for f in r.findings if f.rule == "STRUCTURE:Esophagus")
    assert eso.message.startswith("not evaluable: 2 ROIs match the one-ROI structure Esophagus")
    assert "Heart" not in r.structures and "Esophagus" not in r.structures
    assert "STRUCTURE:Pericardium" not in {f.rule for f in r.findings}  # optional and absent: nothing to correct


def test_a_plan_with_a_dose_reports_its_identity_prescription_and_curves():
    plans = (plan("U1", "Phase1"), plan("U2", "Boost", date=None))
    rx = (
        Prescription(50.0, 25, PrescriptionSource.DOSE_REFERENCE, (TargetPrescription("PTVp", 50.0),)),
        Prescription(10.0, 5, PrescriptionSource.CLINICAL, (TargetPrescription("PTVp", 10.0),)),
    )
    choice = DoseChoice((), "PLAN")
    r = evaluate(case(ROIS, plans, uniform(10.0), rx, choice), PROTOCOL, clinical=ClinicalFacts("P1", "A5", "AAA"))
    assert (r.plan_label, r.plan_uid, r.plan_uids, r.plan_date) == ("Phase1 + Boost", "U1", ("U1", "U2"), "2026-01-02")
    assert (r.patient_name, r.approval_status, r.institution, r.dose_source) == (
        "Doe^Plan",
        "APPROVED",
        "Centre A",
        "PLAN",
    )
    # 50 + 10 Gy in 25 + 5 fractions: 2.00 Gy per fraction
    assert r.prescription == {
        "total_gy": 60.0,
        "fractions": 30,
        "per_fraction_gy": 2.0,
        "source": "clinical + dose_reference",
        "targets": [  # by name
            {"name": "GTVp", "total_gy": 60.0, "source": "prescription of PTVp"},
            {"name": "PTVp", "total_gy": 60.0, "source": "dose reference"},
        ],
    }
    liver = r.structures["Liver"]
    assert r.patient_id == "P1" and liver.roi == "Liver" and liver.volume_cc == pytest.approx(3600 * 8 / 1000)
    assert (liver.min_gy, liver.mean_gy, liver.max_gy) == (
        pytest.approx(10.0),
        pytest.approx(10.0),
        pytest.approx(10.0),
    )
    assert liver.uncovered_cc == pytest.approx(0.0)
    # the curve: 101 doses from 0 to the maximum, 100 % receive all of them up to the last
    doses, pct = r.curves["Liver"]
    assert len(doses) == 101 and doses[0] == 0.0 and doses[-1] == pytest.approx(10.0, abs=1e-3)
    assert pct[0] == 100.0 and pct[50] == 100.0 and doses[1] == 0.1  # 10 Gy / 100 steps
    assert r.curves["GTV"][1][0] == 100.0  # in percent, also for a structure under 1 cc (GTVp: 0.8 cc)
    assert [i.path for i in r.inputs] == ["U1.dcm", "U2.dcm", "ss.dcm", "dose.dcm"]
    assert [i.modality for i in r.inputs] == ["RTPLAN", "RTPLAN", "RTSTRUCT", "RTDOSE"]
    assert [i.sop_instance_uid for i in r.inputs] == ["U1", "U2", "SS1", "D1"]
    assert [i.sha256 for i in r.inputs] == ["", "", "abc", "def"]  # no checksum recorded for the plans


def test_the_case_report_form_names_the_institution_and_a_verification_plan_is_flagged():
    r = evaluate(case(ROIS, (plan("U1", "QA", intent="verification"),), uniform(10.0)), PROTOCOL,
                 clinical=ClinicalFacts("P1", institution="Centre Z"))  # fmt: skip
    assert r.institution == "Centre Z"
    assert r.warnings[0] == "this is a VERIFICATION plan: it is not graded against the protocol"
    r = evaluate(case(ROIS, (plan("U1", "P"),), uniform(10.0)), PROTOCOL, clinical=ClinicalFacts("P1"))
    assert r.institution == "Centre A" and not r.warnings[0].startswith("this is a VERIFICATION")


def test_a_rule_excluded_by_a_known_fact_is_not_applicable_never_dropped():
    r = evaluate(case(ROIS, (plan("U1", "P"),), uniform(10.0)), PROTOCOL, clinical=ClinicalFacts("P1", "C10", "AAA"))
    (na,) = [n for n in r.not_applicable if n.rule == "NORMAL_LIVER_MEAN"]
    assert na.structure == "Liver-GTV" and na.reason == "child-pugh C10: the rule applies to A5, A6, B7, B8 only"
    assert "NORMAL_LIVER_MEAN" not in {f.rule for f in r.findings}
    ids = {f.rule for f in (*r.findings, *r.eligibility)} | {n.rule for n in r.not_applicable}
    assert {rule.id for rule in PROTOCOL.all_rules()} <= ids  # every rule gives something


def test_structures_outside_the_dose_grid_are_named_in_the_warnings():
    # dose nodes 2.5 mm apart from x = -10 to 40 mm; their pixels (centred on the nodes, rtqa.dvh.engine) reach
    # 41.25 mm. The Liver (x 0-60 mm, y 0-60 mm, 8 mm thick) sticks out by 18.75 mm: 18.75 x 60 x 8 mm3 = 9.00 cc,
    # and so does Liver - GTV (the GTV, x 0-10 mm, is inside)
    x = np.linspace(-10.0, 40.0, 21)
    z = np.arange(-2.0, 9.0, 2.0)
    y = np.linspace(-10.0, 70.0, 33)
    dose = DoseGrid(np.full((z.size, y.size, x.size), 10.0), x, y, z)
    r = evaluate(case(ROIS, (plan("U1", "P"),), dose), PROTOCOL, clinical=ClinicalFacts("P1", "A5", "AAA"))
    outside = sorted(w for w in r.warnings if "lies outside the dose grid" in w)
    assert outside == ["9.00 cc of Liver lies outside the dose grid", "9.00 cc of Liver-GTV lies outside the dose grid"]


def test_findings_follow_the_protocols_order_of_rule_kinds():
    r = evaluate(case(ROIS, (plan("U1", "P"),), uniform(10.0)), PROTOCOL, clinical=ClinicalFacts("P1", "A5", "AAA"))
    graded = [f.rule for f in r.findings if not f.rule.startswith("STRUCTURE:")]
    kinds = {rule.id: rule.kind for rule in PROTOCOL.all_rules()}
    order = ["fractionation", "technical", "constraint"]
    assert [kinds[g] for g in graded] == sorted((kinds[g] for g in graded), key=order.index)
    assert graded[0] == "FX_DOSE_PER_FRACTION" and {f.rule for f in r.eligibility} == {
        "NORMAL_LIVER_VOLUME",
        "CHILD_PUGH",
    }


def test_the_body_gets_its_volume_only_and_a_structure_that_cannot_be_built_a_warning():
    # the GTV covers the whole liver: Liver - GTV encloses no volume; Body (role other) needs no DVH
    rois = [roi(1, "Liver", 0, 20), roi(2, "GTVp", 0, 20), roi(3, "PTVp", 0, 30), roi(4, "BODY", 0, 100)]
    rx = (Prescription(50.0, None, PrescriptionSource.DOSE_REFERENCE),)
    r = evaluate(case(rois, (plan("U1", "P"),), uniform(10.0), rx), PROTOCOL, clinical=ClinicalFacts("P1", "A5", "AAA"))
    assert r.structures["Body"] == StructureSummary("BODY", pytest.approx(100 * 100 * 8 / 1000), None, None, None, None)
    assert "Body" not in r.curves and "Liver" in r.curves
    assert "Liver-GTV" not in r.structures and "Body-PTV" in r.structures  # one that fails stops no other
    assert "Liver-GTV: derived structure '(Liver - GTV)' encloses no volume" in r.warnings
    # no fractions: no dose per fraction
    assert r.prescription is not None
    assert (r.prescription["total_gy"], r.prescription["fractions"], r.prescription["per_fraction_gy"]) == (
        50.0,
        None,
        None,
    )
    assert r.prescription["source"] == "dose_reference"


def test_a_plan_without_a_structure_set_or_a_known_total():
    plans = (plan("U1", "P"),)
    rx = (Prescription(None, 25, None),)
    c = LoadedCase(
        PlanSet("P1", (header("U1.dcm", "RTPLAN", "U1"),), None, ()), plans, None, uniform(1.0), None, rx, ()
    )
    r = evaluate(c, PROTOCOL, clinical=ClinicalFacts("P1", "A5", "AAA"))
    assert [(i.path, i.modality) for i in r.inputs] == [("U1.dcm", "RTPLAN")]
    assert r.prescription is not None
    assert (r.prescription["total_gy"], r.prescription["per_fraction_gy"], r.prescription["source"]) == (
        None,
        None,
        None,
    )
    assert r.structures == {} and r.curves == {}


def test_the_total_dose_is_reported_to_0_01_gy_and_targets_by_name():
    # 50.456 Gy in 25 fractions: 50.46 Gy, 2.02 Gy per fraction (50.456 / 25 = 2.01824)
    rx = (Prescription(50.456, 25, PrescriptionSource.DOSE_REFERENCE, (TargetPrescription("PTVp", 50.456),)),)
    rois = [roi(1, "Liver", 0, 60), roi(2, "PTVp", 0, 14), roi(3, "GTVp", 0, 10), roi(4, "Marker", 100, 2),
            roi(5, "Couch", 110, 2)]  # fmt: skip
    r = evaluate(case(rois, (plan("U1", "P"),), uniform(10.0), rx), PROTOCOL, clinical=ClinicalFacts("P1", "A5", "AAA"))
    assert r.prescription is not None
    assert (r.prescription["total_gy"], r.prescription["per_fraction_gy"]) == (50.46, 2.02)
    assert r.prescription["targets"] == [  # by name, whatever the order of the ROIs
        {"name": "GTVp", "total_gy": 50.46, "source": "prescription of PTVp"},
        {"name": "PTVp", "total_gy": 50.46, "source": "dose reference"},
    ]
    assert "2 ROI(s) match no structure of the protocol (not graded): 'Marker', 'Couch'" in r.warnings


def test_a_dose_of_nothing_gives_a_curve_at_0_gy():
    r = evaluate(case(ROIS, (plan("U1", "P"),), uniform(0.0)), PROTOCOL, clinical=ClinicalFacts("P1", "A5", "AAA"))
    doses, _ = r.curves["Liver"]
    assert set(doses) == {0.0}
