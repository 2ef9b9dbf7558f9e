"""Documented behaviours that a small slip would break silently (issue 13).

Each test here was first run against a planted bug and seen to fail (the table is in
bench/mutation.md). They go through entry points that survive a rewrite of the evaluation:
``run_job`` / ``evaluate`` as black boxes (only the returned PlanReport is read), the CLI, and
the pure modules. Expected values come from the fixture's design (fixtures/cases.py: every
PTV prescribed 50 Gy in 25 fractions by a TARGET dose reference) or are computed here from the
DVH engine and geometry directly, never copied from a report.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from rtqa.case import PrescriptionSource, TargetPrescription
from rtqa.cli import cli
from rtqa.discovery.batch import Job, run_job
from rtqa.discovery.grouping import discover, group_headers
from rtqa.discovery.load import load_case
from rtqa.dvh.engine import DVH, compute_dvh
from rtqa.dvh.geometry import EndCap, roi_stack
from rtqa.dvh.metrics import evaluate_metric
from rtqa.evaluation.evaluate import evaluate
from rtqa.evaluation.prescription import derive_prescription
from rtqa.io import read_dose, read_plan, read_structure_set
from rtqa.model import FileHeader, Modality
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from rtqa.report.model import PlanReport
from tests.conftest import case
from tests.shared_reports import evaluated

PROTOCOL = load_protocol()
RULES = Path(PROTOCOL.path).parent


def _plan_set(folder: str | os.PathLike[str]):
    (ps,) = [p for p in discover([folder]).plan_sets if p.plans]
    return ps


def _report(folder: str | os.PathLike[str], protocol_path: str = PROTOCOL.path, **facts: object) -> PlanReport:
    if protocol_path == PROTOCOL.path:  # a case of the shared tree is evaluated once per run
        return evaluated(folder, {"child_pugh": "A5", "dose_algorithm": "AAA", **facts})
    ps = _plan_set(folder)
    clinical = ClinicalFacts(ps.patient_id, "A5", "AAA", **facts)  # type: ignore[arg-type]
    return run_job(Job(ps, protocol_path, clinical))


def _protocol_variant(tmp_path: Path, old: str, new: str) -> str:
    """The shipped protocol with one line changed, beside its alias table.

    Each variant gets a file of its own: run_job caches protocols by path.
    """
    text = (RULES / "nct03535259.yaml").read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    out = tmp_path / f"variant{len(list(tmp_path.glob('variant*.yaml')))}.yaml"
    out.write_text(text.replace(old, new), encoding="utf-8")
    shutil.copy(RULES / "tg263_aliases.yaml", tmp_path / "tg263_aliases.yaml")
    return str(out)


def _copy_case(liver_tree: Path, name: str, dest: Path) -> Path:
    folder = dest / name
    shutil.copytree(case(liver_tree, name), folder, ignore=shutil.ignore_patterns("CT*"))
    return folder


def _finding(report: PlanReport, rule: str, roi: str | None = None):
    found = [f for f in report.findings if f.rule == rule and (roi is None or f.matched_roi == roi)]
    assert len(found) == 1, (rule, roi, [f.message for f in found])
    return found[0]


# -- prescriptions from the case-report form -------------------------------------------------


def test_clinical_prescription_overrides_the_dose_reference(liver_tree):
    # the plan's dose references say 50 Gy; the case-report form says PTVp has 60 Gy
    r = _report(case(liver_tree, "liver_clean"), prescriptions_gy={"PTVp": 60.0})
    assert r.prescription is not None
    assert r.prescription["total_gy"] == 60.0 and r.prescription["source"] == "clinical"
    d95 = _finding(r, "PTV_D95", "PTVp")
    assert d95.reference_gy == 60.0
    # the plan delivers ~50 Gy: against 60 Gy the coverage is ~50/60 = 83 %, a deviation
    assert d95.value < 90 and d95.grade is Grade.DEVIATION_UNACCEPTABLE
    # 60 against 50 Gy: the sources are 16.7 % apart (protocol: <= 2 %)
    agreement = _finding(r, "RX_AGREEMENT")
    assert agreement.value == pytest.approx(100 * 10 / 60, abs=0.05)
    assert agreement.grade is Grade.DEVIATION_UNACCEPTABLE


def test_per_target_clinical_prescription_is_used_and_labelled(liver_tree):
    r = _report(case(liver_tree, "liver_clean"), prescriptions_gy={"PTVp": 50.0, "PTVv": 45.0})
    assert r.prescription is not None
    targets = {t["name"]: t for t in r.prescription["targets"]}
    assert targets["PTVv"]["total_gy"] == 45.0 and targets["PTVv"]["source"] == "case-report form"
    assert targets["PTVp"]["total_gy"] == 50.0 and targets["PTVp"]["source"] == "case-report form"
    assert _finding(r, "PTV_D95", "PTVv").reference_gy == 45.0


def test_clinical_csv_prescription_reaches_the_json_report(liver_tree, tmp_path):
    csv = tmp_path / "crf.csv"
    csv.write_text("patient_id,child_pugh,dose_algorithm,rx_PTVp\nHCC-CLEAN,A5,AAA,60\n")
    result = CliRunner().invoke(
        cli, ["check", case(liver_tree, "liver_clean"), "--clinical", str(csv), "--format", "json"]
    )
    import json

    (plan,) = json.loads(result.stdout)["plans"]
    assert plan["prescription"]["total_gy"] == 60.0 and plan["prescription"]["source"] == "clinical"


def test_prescription_sources_more_than_2_percent_apart_are_reported(liver_tree):
    plan = read_plan(os.path.join(case(liver_tree, "liver_clean"), "RP.dcm"))
    # DOMAIN.md section 3: sources that disagree by more than 2 % are reported
    for clinical_gy, warned in ((50.9, False), (51.5, True), (55.0, True), (70.0, True)):
        rx = derive_prescription(plan, clinical_targets=(TargetPrescription("PTVp", clinical_gy),))
        assert rx.source is PrescriptionSource.CLINICAL and rx.total_gy == clinical_gy
        assert any("disagree" in w for w in rx.warnings) is warned, (clinical_gy, rx.warnings)


def test_prescription_from_dose_reference_when_no_clinical_one(liver_tree):
    plan = read_plan(os.path.join(case(liver_tree, "liver_clean"), "RP.dcm"))
    rx = derive_prescription(plan)
    assert rx.source is PrescriptionSource.DOSE_REFERENCE and rx.total_gy == 50.0 and rx.fractions == 25
    assert not any("disagree" in w for w in rx.warnings)
    # without dose references, the BeamDose sum (7 beams x BeamDose x 25) and a warning saying so
    bare = derive_prescription(replace(plan, dose_references=()))
    assert bare.source is PrescriptionSource.BEAM_DOSES and bare.total_gy == pytest.approx(50.0, abs=0.01)
    assert any("point dose" in w for w in bare.warnings)


# -- PLAN versus BEAM sum ----------------------------------------------------------------------


def test_beam_sum_that_differs_from_the_plan_dose_is_warned(liver_tree, tmp_path):
    folder = _copy_case(liver_tree, "liver_plan_and_beams", tmp_path)
    assert not any("BEAM doses differs" in w for w in _report(folder).warnings)
    beam = sorted(p for p in folder.iterdir() if p.name.startswith("RD_BEAM"))[0]
    ds = pydicom.dcmread(beam)
    ds.DoseGridScaling = float(ds.DoseGridScaling) * 1.5  # one beam 50 % hotter: the sum is off by a few %
    ds.save_as(beam)
    r = _report(folder)
    assert any("BEAM doses differs from the PLAN dose" in w for w in r.warnings), r.warnings
    assert r.dose_source == "PLAN"


# -- protocol settings that the evaluation must honour -----------------------------------------


def test_protocol_end_cap_setting_is_used_for_the_volumes(liver_tree, tmp_path):
    folder = case(liver_tree, "liver_clean")
    variant = _protocol_variant(tmp_path, "end_cap: half_slab", "end_cap: none")
    assert load_protocol(variant).end_cap is EndCap.NONE
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    cord = ss.roi("SpinalCord")
    half = roi_stack(cord, ss.plane_positions_mm).volume_cc
    none = roi_stack(cord, ss.plane_positions_mm, end_cap=EndCap.NONE).volume_cc
    assert half - none > 0.1  # the two conventions differ by one cord cross-section x one slab
    # the report's volume is the DVH engine's (sampled) volume of the stack of that convention
    dose = read_dose(os.path.join(folder, "RD_PLAN.dcm"))
    half_dvh = compute_dvh(roi_stack(cord, ss.plane_positions_mm), dose).volume_cc
    none_dvh = compute_dvh(roi_stack(cord, ss.plane_positions_mm, end_cap=EndCap.NONE), dose).volume_cc
    default = _report(folder).structures["SpinalCord"].volume_cc
    capped = _report(folder, variant).structures["SpinalCord"].volume_cc
    assert default == pytest.approx(half_dvh, abs=1e-9) and capped == pytest.approx(none_dvh, abs=1e-9)


def _add_roi(rs_path: Path, name: str, copy_from: str) -> None:
    """Append an ROI with the contours of another one (a 'Kidneys' that is only one kidney)."""
    ds = pydicom.dcmread(rs_path)
    src = next(r for r in ds.StructureSetROISequence if r.ROIName == copy_from)
    number = max(int(r.ROINumber) for r in ds.StructureSetROISequence) + 1
    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = src.ReferencedFrameOfReferenceUID
    roi.ROIName = name
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence.append(roi)
    contour = next(c for c in ds.ROIContourSequence if int(c.ReferencedROINumber) == int(src.ROINumber))
    new = Dataset()
    new.ReferencedROINumber = number
    new.ROIDisplayColor = [255, 0, 0]
    new.ContourSequence = Sequence(list(contour.ContourSequence))
    ds.ROIContourSequence.append(new)
    obs = Dataset()
    obs.ObservationNumber = number
    obs.ReferencedROINumber = number
    obs.RTROIInterpretedType = "ORGAN"
    obs.ROIInterpreter = ""
    ds.RTROIObservationsSequence.append(obs)
    ds.save_as(rs_path)


def _mean_of(folder: Path, roi: str) -> float:
    ss = read_structure_set(folder / "RS.dcm")
    mean = compute_dvh(roi_stack(ss.roi(roi), ss.plane_positions_mm), read_dose(folder / "RD_PLAN.dcm")).mean_gy
    assert mean is not None
    return mean


def test_derived_structure_uses_a_present_roi_when_the_protocol_says_so(liver_tree, tmp_path):
    # Kidneys: {expression: "Kidney_L | Kidney_R", use_roi_if_present: true}. A planner's own
    # Kidneys ROI (here: a copy of the right kidney only) takes precedence over the union.
    folder = _copy_case(liver_tree, "liver_clean", tmp_path)
    _add_roi(folder / "RS.dcm", "Kidneys", "Kidney_R")
    right, left = _mean_of(folder, "Kidney_R"), _mean_of(folder, "Kidney_L")
    assert abs(right - left) > 0.1  # the ROI and the union give different means
    r = _report(folder)
    assert _finding(r, "KIDNEYS_MEAN").value == pytest.approx(right, abs=0.005)
    # rtqa dvh with the protocol's names follows the same rule
    import json

    out = CliRunner().invoke(
        cli, ["dvh", str(folder), "--protocol", PROTOCOL.path, "--structure", "Kidneys", "--format", "json"]
    )
    (plan,) = json.loads(out.stdout)["plans"]
    assert plan["structures"]["Kidneys"]["mean_gy"] == pytest.approx(right, abs=0.005)


def test_derived_structure_present_as_roi_is_evaluable_when_an_operand_is_missing(liver_tree, tmp_path):
    # the left kidney contoured only as 'Kidneys': Kidney_L is missing (a required structure),
    # but KIDNEYS_MEAN is still graded on the Kidneys ROI, which the protocol prefers
    folder = _copy_case(liver_tree, "liver_clean", tmp_path)
    left = _mean_of(folder, "Kidney_L")
    ds = pydicom.dcmread(folder / "RS.dcm")
    next(r for r in ds.StructureSetROISequence if r.ROIName == "Kidney_L").ROIName = "Kidneys"
    ds.save_as(folder / "RS.dcm")
    r = _report(folder)
    assert _finding(r, "STRUCTURE:Kidney_L").grade is Grade.NOT_EVALUABLE
    mean = _finding(r, "KIDNEYS_MEAN")
    assert mean.grade is not Grade.NOT_EVALUABLE and mean.value == pytest.approx(left, abs=0.005)


# -- values are rounded to the report precision before grading ---------------------------------


def test_values_are_graded_after_rounding_to_the_report_precision(liver_tree, tmp_path):
    folder = case(liver_tree, "liver_cord_overdose")
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    dvh = compute_dvh(
        roi_stack(ss.roi("SpinalCord"), ss.plane_positions_mm), read_dose(os.path.join(folder, "RD_PLAN.dcm"))
    )
    raw = evaluate_metric(dvh, "D0.03cc[Gy]")
    assert raw is not None
    shown = round(raw, 2)
    assert shown != raw  # a value that rounding moves (any real-valued dose is)
    # a limit exactly at the rounded value: met by the rounded value, missed by the raw one
    op = "<=" if raw > shown else ">="
    old = 'metric: "D0.03cc[Gy]", per_protocol: "<= 45",\n     variation_acceptable: "<= 50"'
    met = _protocol_variant(tmp_path, old, f'metric: "D0.03cc[Gy]", per_protocol: "{op} {shown:.2f}"')
    cord = _finding(_report(folder, met), "CORD_MAX")
    assert cord.value == shown and cord.grade is Grade.PER_PROTOCOL
    # one step of the precision beyond it is missed
    beyond = shown - 0.01 if op == "<=" else shown + 0.01
    missed = _protocol_variant(tmp_path, old, f'metric: "D0.03cc[Gy]", per_protocol: "{op} {beyond:.2f}"')
    assert _finding(_report(folder, missed), "CORD_MAX").grade is Grade.DEVIATION_UNACCEPTABLE


# -- exit code bit 4 ----------------------------------------------------------------------------


def test_an_unassigned_file_sets_exit_bit_4(liver_tree, tmp_path):
    folder = _copy_case(liver_tree, "liver_clean", tmp_path)
    csv = tmp_path / "crf.csv"
    csv.write_text("patient_id,child_pugh,dose_algorithm\nHCC-CLEAN,A5,AAA\n")
    clean = CliRunner().invoke(cli, ["check", str(folder), "--clinical", str(csv)])
    assert clean.exit_code == 0, clean.output
    # a second copy of the dose: a duplicate SOPInstanceUID, listed as unassigned
    shutil.copy(folder / "RD_PLAN.dcm", folder / "zz_copy_of_dose.dcm")
    result = CliRunner().invoke(cli, ["check", str(folder), "--clinical", str(csv)])
    assert result.exit_code == 4, result.output
    assert re.search(r"unassigned file .*zz_copy_of_dose\.dcm: duplicate SOPInstanceUID", result.output)


# -- the interpolated D at volume --------------------------------------------------------------


def test_evaluate_black_box_on_a_loaded_case(liver_tree):
    # the same rules through evaluate() directly: D95 of PTVp against the dose reference (50 Gy)
    ps = _plan_set(case(liver_tree, "liver_clean"))
    r = evaluate(load_case(ps), PROTOCOL, clinical=ClinicalFacts(ps.patient_id, "A5", "AAA"))
    d95 = _finding(r, "PTV_D95", "PTVp")
    assert d95.reference_gy == 50.0 and d95.unit == "%"
    ss = read_structure_set(os.path.join(case(liver_tree, "liver_clean"), "RS.dcm"))
    dvh = compute_dvh(
        roi_stack(ss.roi("PTVp"), ss.plane_positions_mm),
        read_dose(os.path.join(case(liver_tree, "liver_clean"), "RD_PLAN.dcm")),
    )
    assert d95.value == round(100 * float(evaluate_metric(dvh, "D95%[Gy]") or np.nan) / 50.0, 1)


def test_dose_at_volume_interpolates_between_bin_edges():
    # a hand-made cumulative curve: 10 cc >= 0 Gy, 4 cc >= 0.01 Gy, 0 cc >= 0.02 Gy, linear between
    dvh = DVH(
        "box",
        np.array([0.0, 0.01, 0.02]),
        np.array([10.0, 4.0, 0.0]),
        10.0,
        0.0,
        0.01,
        0.0,
        0.02,
        EndCap.HALF_SLAB,
        0.01,
    )
    # 7 cc lies half-way down the first segment: 0 + (10 - 7) / (10 - 4) x 0.01 Gy
    assert dvh.dose_at_volume(7.0) == pytest.approx(0.005, abs=1e-12)
    assert dvh.dose_at_volume(1.0) == pytest.approx(0.01 + (4 - 1) / 4 * 0.01, abs=1e-12)
    assert evaluate_metric(dvh, "D70%[Gy]") == pytest.approx(0.005, abs=1e-12)
    assert evaluate_metric(dvh, "D10%[cGy]") == pytest.approx(1.75, abs=1e-9)
    # and the inverse look-up on the same straight segments
    assert dvh.volume_at_dose(0.005) == pytest.approx(7.0, abs=1e-12)


# -- discovery links a dose by PatientID + FrameOfReferenceUID only when unambiguous -------------


def _header(path: str, modality: Modality, uid: str, **kw: object) -> FileHeader:
    return FileHeader(path, modality, "1.2.840.10008.5.1.4.1.1.481", uid, "P1", frame_of_reference_uid="F1", **kw)  # type: ignore[arg-type]


def test_dose_with_a_broken_reference_is_linked_only_when_one_plan_fits():
    ss = _header("/d/RS.dcm", Modality.RTSTRUCT, "ss")
    p1 = _header("/d/RP1.dcm", Modality.RTPLAN, "p1", referenced_structure_set_uid="ss")
    p2 = _header("/d/RP2.dcm", Modality.RTPLAN, "p2", referenced_structure_set_uid="ss")
    orphan = _header("/d/RD.dcm", Modality.RTDOSE, "d1", referenced_plan_uids=("gone",), dose_summation_type="PLAN")
    # one candidate plan of the patient in the frame: linked, and the link is reported as inferred
    one = group_headers([ss, p1, orphan])
    (ps,) = [p for p in one.plan_sets if p.plans]
    assert [d.path for d in ps.doses] == ["/d/RD.dcm"] and any("PatientID" in s for s in ps.inferred_links)
    assert one.unassigned == ()
    # two plans of the patient in the frame are one course: the dose goes to the course
    (course,) = [p for p in group_headers([ss, p1, p2, orphan]).plan_sets if p.plans]
    assert len(course.plans) == 2 and [d.path for d in course.doses] == ["/d/RD.dcm"]
    # two candidate courses (the same PatientID at two centres): ambiguous, so neither gets the
    # dose and the file is listed with the reason
    p1, p2 = replace(p1, institution_name="Centre A"), replace(p2, institution_name="Centre B")
    two = group_headers([ss, p1, p2, orphan])
    assert all(p.doses == () for p in two.plan_sets)
    (u,) = two.unassigned
    assert u.path == "/d/RD.dcm" and "ambiguous" in u.reason and "2 plans" in u.reason
    # another patient's plan in the same frame is no candidate
    other = replace(p2, patient_id="P2")
    (ps,) = [p for p in group_headers([ss, p1, other, orphan]).plan_sets if p.doses]
    assert ps.plans[0].sop_instance_uid == "p1"
