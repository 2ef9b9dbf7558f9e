"""Verdicts a central reviewer can trust (issue 8) and plans a hostile edit must not pass (issue 9).

Each test is built from a case of the fixtures generator (fixtures/cases.py says what each
variant breaks). Expected grades follow from the protocol's limits and the variant's design:
e.g. liver_high_liver_mean puts a 33 Gy floor in the liver (normal-liver mean 31.1 Gy), above
the per-protocol and variation limits of every Child-Pugh class (A: 28/30 Gy, B: 15/18 Gy).
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import warnings
from importlib import resources

import jsonschema
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from fixtures import cases
from rtqa.cli import cli
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from tests.conftest import case
from tests.shared_reports import evaluated

PROTOCOL = load_protocol()
SCHEMA = json.loads(resources.files("rtqa").joinpath("schemas/report-v1.schema.json").read_text())


def report(folder, child_pugh=None, algorithm="AAA", **facts):
    # a case of the shared tree is evaluated once per run, for every test that asks for the same report
    clinical = (
        None
        if child_pugh is None and algorithm is None
        else dict(child_pugh=child_pugh, dose_algorithm=algorithm, **facts)
    )
    return evaluated(folder, clinical)


def finding(r, rule, roi=None):
    hits = [f for f in r.findings if f.rule == rule and (roi is None or f.matched_roi == roi)]
    assert len(hits) == 1, [(f.rule, f.matched_roi) for f in r.findings]
    return hits[0]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


# -- 1. an unknown clinical fact never hides a certain deviation --------------------------------


def test_unknown_child_pugh_with_mean_above_every_class_is_a_deviation(liver_tree):
    r = report(case(liver_tree, "liver_high_liver_mean"), child_pugh=None)
    mean = finding(r, "NORMAL_LIVER_MEAN")
    assert mean.value is not None and mean.value > 30  # computed and shown although the fact is unknown
    assert mean.grade is Grade.DEVIATION_UNACCEPTABLE
    assert "child-pugh unknown" in mean.message and "did not matter" in mean.message
    assert r.grade is Grade.DEVIATION_UNACCEPTABLE


def test_cli_without_clinical_csv_sets_bit_1_for_that_deviation(liver_tree):
    result = run("check", case(liver_tree, "liver_high_liver_mean"))
    assert result.exit_code & 1, result.output
    line = next(s for s in result.output.splitlines() if s.strip().startswith("NORMAL_LIVER_MEAN"))
    assert "31." in line and "DEVIATION UNACCEPTABLE" in line


def test_unknown_child_pugh_where_classes_disagree_lists_the_possible_grades(liver_tree):
    # clean case: normal-liver mean 16.1 Gy: per protocol for A (<= 28), variation for B (<= 18)
    r = report(case(liver_tree, "liver_clean"), child_pugh=None)
    mean = finding(r, "NORMAL_LIVER_MEAN")
    assert mean.grade is Grade.NOT_EVALUABLE and mean.value == pytest.approx(16.1, abs=0.1)
    grades = {g: cond for g, cond in mean.possible_grades}
    assert set(grades) == {Grade.PER_PROTOCOL, Grade.VARIATION_ACCEPTABLE}
    assert "A5, A6" in grades[Grade.PER_PROTOCOL] and "B7, B8" in grades[Grade.VARIATION_ACCEPTABLE]
    assert mean.best_case is Grade.PER_PROTOCOL
    assert r.grade is Grade.PER_PROTOCOL and not r.complete and r.verdict == "incomplete"


def test_unknown_dose_algorithm_is_not_evaluable_with_its_possible_grades(liver_tree):
    r = report(case(liver_tree, "liver_cord_overdose"), child_pugh="A5", algorithm=None)
    algo = finding(r, "DOSE_ALGORITHM")
    assert algo.grade is Grade.NOT_EVALUABLE
    assert {g for g, _ in algo.possible_grades} == {Grade.PER_PROTOCOL, Grade.DEVIATION_UNACCEPTABLE}
    assert r.grade is Grade.DEVIATION_UNACCEPTABLE  # the certain cord deviation still shows


# -- 2. a rule never vanishes; ineligibility changes the exit status ------------------------------


def test_child_pugh_c_makes_the_liver_rule_not_applicable_and_sets_bit_8(liver_tree, tmp_path):
    r = report(case(liver_tree, "liver_clean"), child_pugh="C10")
    assert not any(f.rule == "NORMAL_LIVER_MEAN" for f in r.findings)
    (na,) = [n for n in r.not_applicable if n.rule == "NORMAL_LIVER_MEAN"]
    assert "C10" in na.reason and "A5, A6, B7, B8" in na.reason
    assert r.eligibility_status == "ineligible"
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,child_pugh,dose_algorithm\nHCC-CLEAN,C10,AAA\n")
    result = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical)
    assert result.exit_code == 8, result.output
    assert "NORMAL_LIVER_MEAN" in result.output and "NOT APPLICABLE" in result.output


def test_optional_structures_not_contoured_are_listed_not_applicable(liver_tree):
    r = report(case(liver_tree, "liver_clean"), child_pugh="A5")
    assert {n.rule for n in r.not_applicable} == {"PERITONEAL_V45", "PERICARDIUM_MEAN"}
    assert all("not contoured" in n.reason for n in r.not_applicable)


# -- 3. Child-Pugh B has limits of its own ----------------------------------------------------------


def test_child_pugh_b_is_graded_against_the_b_limit(liver_tree):
    # 16.1 Gy: per protocol under the A limit (28 Gy) but above the draft B limit (15 Gy, var 18)
    r = report(case(liver_tree, "liver_clean"), child_pugh="B7")
    mean = finding(r, "NORMAL_LIVER_MEAN")
    assert mean.grade is Grade.VARIATION_ACCEPTABLE and mean.unconfirmed
    assert mean.per_protocol.value == 15.0 and mean.variation.value == 18.0
    rule = next(r for r in PROTOCOL.constraints if r.id == "NORMAL_LIVER_MEAN")
    assert rule.limits_by["child_pugh"]["B8"].per_protocol.value == 15.0
    assert "s13014-023-02232-5" in rule.limits_by["child_pugh"]["B7"].source
    assert rule.limits_by["child_pugh"]["A5"].per_protocol.value == 28.0


# -- 4. an incomplete plan is never counted as a pass ---------------------------------------------


def test_incomplete_plan_has_its_own_headline_and_column(liver_tree, tmp_path):
    folders = [case(liver_tree, "liver_clean"), case(liver_tree, "liver_missing_structure")]
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,child_pugh,dose_algorithm\nHCC-CLEAN,A5,AAA\nHCC-NOCORD,A5,AAA\n")
    text = run("check", *folders, "--clinical", clinical)
    assert text.exit_code == 4
    assert "Grade: INCOMPLETE (best case PER PROTOCOL): not evaluable STRUCTURE:SpinalCord, CORD_MAX" in text.output
    assert (
        "Summary: 2 plan(s): 0 ineligible, 1 per protocol, 0 variation acceptable, 0 deviation unacceptable, "
        "1 incomplete" in text.output
    )
    out = tmp_path / "csv"
    run("check", *folders, "--clinical", clinical, "--format", "csv", "--output", out)
    rows = {
        r["patient_id"]: r for r in csv.DictReader(io.StringIO((out / "plans.csv").read_text(encoding="utf-8-sig")))
    }
    assert rows["HCC-NOCORD"]["verdict"] == "incomplete" and rows["HCC-CLEAN"]["verdict"] == "per_protocol"
    data = json.loads(run("check", *folders, "--clinical", clinical, "--format", "json").stdout)
    assert data["summary"]["incomplete"] == 1 and data["summary"]["per_protocol"] == 1


# -- 5. no pass over nothing ---------------------------------------------------------------------


def test_coverage_check_with_no_target_is_not_evaluable(liver_tree):
    r = report(case(liver_tree, "liver_no_target"), child_pugh="A5")
    cov = finding(r, "TARGET_COVERAGE")
    assert cov.grade is Grade.NOT_EVALUABLE and "no target structure" in cov.message
    assert finding(r, "STRUCTURE:PTV").grade is Grade.NOT_EVALUABLE


# -- 6. submission defects are not dose deviations; bounded values are graded --------------------


def test_grid_short_of_the_liver_is_a_resubmit_finding_naming_the_organ(liver_tree):
    r = report(case(liver_tree, "liver_dose_not_covering"), child_pugh="A5")
    cov = finding(r, "OAR_COVERAGE")
    assert cov.category == "resubmit" and cov.grade is Grade.NOT_EVALUABLE and "Liver" in cov.message
    assert r.resubmit and r.grade is Grade.PER_PROTOCOL  # not a deviation of the plan
    # the uncovered 121 cc receive between 0 Gy and the boundary maximum: the mean lies within an
    # interval whose both ends are below 28 Gy, so it is graded per protocol
    mean = finding(r, "NORMAL_LIVER_MEAN")
    lo, hi = mean.interval
    assert lo < hi < 28 and mean.grade is Grade.PER_PROTOCOL and "both ends" in mean.message


def test_interval_straddling_a_limit_is_not_evaluable_with_the_interval(liver_tree):
    r = report(case(liver_tree, "liver_dose_not_covering_hot"), child_pugh="A5")
    mean = finding(r, "NORMAL_LIVER_MEAN")
    lo, hi = mean.interval
    assert lo <= 28 < hi <= 30 and mean.grade is Grade.NOT_EVALUABLE
    assert {g for g, _ in mean.possible_grades} == {Grade.PER_PROTOCOL, Grade.VARIATION_ACCEPTABLE}
    assert f"{lo:.2f} Gy" in mean.message and f"{hi:.2f} Gy" in mean.message


def test_grid_short_of_organs_in_low_dose_grades_them_within_the_interval(liver_tree):
    r = report(case(liver_tree, "liver_dose_short_of_heart"), child_pugh="A5")
    heart = finding(r, "HEART_V25")
    assert heart.grade is Grade.PER_PROTOCOL  # V25 is 0 % whether the uncovered heart gets 0 Gy or the boundary dose
    assert finding(r, "OAR_COVERAGE").category == "resubmit"


# -- 7. reference points are not prescriptions ---------------------------------------------------


def test_coordinates_reference_point_beside_a_site_prescription(liver_tree):
    r = report(case(liver_tree, "liver_reference_point"), child_pugh="A5")
    dpf = finding(r, "FX_DOSE_PER_FRACTION")
    assert dpf.grade is Grade.PER_PROTOCOL and dpf.value == 2.0
    assert any("CALC POINT" in w and "informational" in w for w in r.warnings)


# -- 9. approval status ------------------------------------------------------------------------------


def test_unapproved_plan_is_a_variation_and_rejected_a_deviation(liver_tree, tmp_path):
    r = report(case(liver_tree, "liver_unapproved"), child_pugh="A5")
    approval = finding(r, "APPROVAL")
    assert approval.grade is Grade.VARIATION_ACCEPTABLE and approval.value_text == "UNAPPROVED"
    folder = tmp_path / "rejected"
    shutil.copytree(case(liver_tree, "liver_clean"), folder, ignore=shutil.ignore_patterns("CT"))
    ds = pydicom.dcmread(folder / "RP.dcm")
    ds.ApprovalStatus = "REJECTED"
    ds.save_as(folder / "RP.dcm")
    assert finding(report(folder, child_pugh="A5"), "APPROVAL").grade is Grade.DEVIATION_UNACCEPTABLE


# -- 10. clinical CSV mistakes are reported ----------------------------------------------------------


def test_clinical_csv_unknown_column_unmatched_id_and_missing_row(liver_tree, tmp_path):
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,childpugh,dose_algorithm,institution\nHCC-GHOST,A5,AAA,X\n")
    result = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, "--format", "json")
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)
    top = " ".join(data["warnings"])
    assert "'childpugh'" in top and "'HCC-GHOST'" in top
    assert "childpugh" in result.stderr and "HCC-GHOST" in result.stderr
    assert any("no row for patient 'HCC-CLEAN'" in w for w in data["plans"][0]["warnings"])


def test_institution_column_overrides_dicom(liver_tree, tmp_path):
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,child_pugh,dose_algorithm,institution\nHCC-CLEAN,A5,AAA,Centre Z\n")
    data = json.loads(run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, "--format", "json").stdout)
    assert data["plans"][0]["institution"] == "Centre Z"


# -- 11. a hot spot in a lower-dose PTV of an integrated boost ---------------------------------------


def test_sib_lower_dose_ptv_is_graded_on_itself_minus_the_boost(liver_tree):
    r = report(case(liver_tree, "liver_sib"), child_pugh="A5")
    hot = [f for f in r.findings if f.rule == "PTV_D2"]
    union = next(f for f in hot if f.reference_gy == 60.0)
    assert union.grade is Grade.PER_PROTOCOL  # the union against 60 Gy
    lower = {f.matched_roi: f for f in hot if f.reference_gy == 50.0}
    assert set(lower) == {"PTVv - (PTVp + 5mm)", "PTVn - (PTVp + 5mm)"}
    # PTVv abuts PTVp: the boost's fall-off spills into it, but within the protocol's 5 mm transition
    # ring; outside it PTVv is graded against its own 50 Gy (a hot spot there: tests/test_margins.py)
    assert lower["PTVv - (PTVp + 5mm)"].grade is Grade.PER_PROTOCOL and lower["PTVv - (PTVp + 5mm)"].unconfirmed


# -- 12. every finding shows its value in every format ----------------------------------------------


def test_text_values_are_shown_in_text_csv_and_json(liver_tree, tmp_path):
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,child_pugh,dose_algorithm\nHCC-CLEAN,A6,Acuros XB\n")
    folder = case(liver_tree, "liver_clean")
    text = run("check", folder, "--clinical", clinical).output
    assert next(s for s in text.splitlines() if s.strip().startswith("DOSE_ALGORITHM")).count("Acuros XB") == 1
    assert "A6" in next(s for s in text.splitlines() if s.strip().startswith("CHILD_PUGH"))
    assert "IMAGE" in next(s for s in text.splitlines() if s.strip().startswith("HETEROGENEITY"))
    rows = list(
        csv.DictReader(
            io.StringIO(run("check", folder, "--clinical", clinical, "--format", "csv").stdout.lstrip("\ufeff"))
        )
    )
    assert next(r for r in rows if r["rule"] == "DOSE_ALGORITHM")["value"] == "Acuros XB"
    data = json.loads(run("check", folder, "--clinical", clinical, "--format", "json").stdout)
    items = data["plans"][0]["eligibility"]["items"]
    assert next(i for i in items if i["rule"] == "CHILD_PUGH")["value_text"] == "A6"


# -- issue 9: present but unusable is never absent -----------------------------------------------------

HOT = "liver_bowel_hot"  # Bowel_Small receives 65 Gy: SMALL_BOWEL_MAX is a deviation


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The hot-bowel plan with one edit each, written by the generator."""
    out = str(tmp_path_factory.mktemp("hostile"))
    base = next(s for s in cases.liver_variants() if s.name == HOT)
    edits = {
        "dup_normalised": {"extra_rois": (("bowel small", "Bowel_Small"),)},
        "dup_exact": {"extra_rois": (("Bowel_Small", "Bowel_Small"),)},
        "open_planar": {"roi_contour_type": (("Bowel_Small", "OPEN_PLANAR"),)},
        "renamed": {"renames": (("Bowel_Small", "Bowel_Sm"),)},
    }
    from dataclasses import replace

    return {
        k: cases.write_liver_case(out, replace(base, name=f"hot_{k}", patient_id=f"HOT-{k.upper()}", **v))
        for k, v in edits.items()
    }


def test_the_hot_plan_itself_is_a_deviation(liver_tree):
    assert finding(report(case(liver_tree, HOT), "A5"), "SMALL_BOWEL_MAX").grade is Grade.DEVIATION_UNACCEPTABLE


@pytest.mark.parametrize("edit", ["dup_normalised", "dup_exact"])
def test_a_second_bowel_roi_never_hides_the_hot_spot(hostile, edit):
    r = report(hostile[edit], "A5")
    sb = finding(r, "SMALL_BOWEL_MAX")
    assert sb.grade is Grade.DEVIATION_UNACCEPTABLE and "does not guess" in sb.message
    assert finding(r, "STRUCTURE:Bowel_Small").grade is Grade.NOT_EVALUABLE
    assert r.grade is Grade.DEVIATION_UNACCEPTABLE and not r.complete


def test_open_contours_make_the_bowel_unusable_not_absent(hostile):
    r = report(hostile["open_planar"], "A5")
    sb = finding(r, "SMALL_BOWEL_MAX")
    assert sb.grade is Grade.NOT_EVALUABLE and "present but unusable" in sb.message
    assert not any(n.rule == "SMALL_BOWEL_MAX" for n in r.not_applicable) and not r.complete


@pytest.mark.parametrize("redraw", ["reversed", "start_moved", "shifted_0.1mm"])
def test_a_bowel_outline_drawn_twice_on_its_hottest_plane_is_unusable(liver_tree, tmp_path, redraw):
    """By parity two outlines of one shape cancel: the plane's hot spot would leave the DVH."""
    folder = tmp_path / redraw
    shutil.copytree(case(liver_tree, HOT), folder, ignore=shutil.ignore_patterns("CT"))
    ds = pydicom.dcmread(folder / "RS.dcm")
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "Bowel_Small")
    item = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == number)
    contour = max(item.ContourSequence, key=lambda c: len(c.ContourData))
    pts = np.array(contour.ContourData, dtype=float).reshape(-1, 3)
    shifted = pts + np.array([0.1, 0.0, 0.0])
    copy = {"reversed": pts[::-1], "start_moved": np.roll(pts, 5, axis=0), "shifted_0.1mm": shifted}[redraw]
    twin = pydicom.Dataset()
    twin.ContourGeometricType = "CLOSED_PLANAR"
    twin.NumberOfContourPoints = len(copy)
    twin.ContourData = [f"{v:.4f}" for v in copy.ravel()]
    item.ContourSequence.append(twin)
    ds.save_as(folder / "RS.dcm")
    r = report(folder, "A5")
    sb = finding(r, "SMALL_BOWEL_MAX")
    assert sb.grade is Grade.NOT_EVALUABLE and "present but unusable" in sb.message
    assert "two coinciding contours on plane" in finding(r, "STRUCTURE:Bowel_Small").message
    assert not r.complete


def test_a_bowel_whose_every_outline_is_drawn_twice_is_unusable_not_absent(liver_tree, tmp_path):
    """Every plane cancels by parity, so no volume is left: still present, never 'not applicable'."""
    import copy

    folder = tmp_path / "all_twice"
    shutil.copytree(case(liver_tree, HOT), folder, ignore=shutil.ignore_patterns("CT"))
    ds = pydicom.dcmread(folder / "RS.dcm")
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "Bowel_Small")
    item = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == number)
    for contour in list(item.ContourSequence):
        item.ContourSequence.append(copy.deepcopy(contour))
    ds.save_as(folder / "RS.dcm")
    r = report(folder, "A5")
    assert finding(r, "SMALL_BOWEL_MAX").grade is Grade.NOT_EVALUABLE
    assert finding(r, "STRUCTURE:Bowel_Small").category == "resubmit"
    assert not any(n.rule.startswith("SMALL_BOWEL") for n in r.not_applicable) and not r.complete


def test_renamed_bowel_is_listed_as_unrecognised(hostile):
    r = report(hostile["renamed"], "A5")
    assert "Bowel_Sm" in r.unmatched_rois
    assert any("match no structure of the protocol" in w and "Bowel_Sm" in w for w in r.warnings)
    result = run("check", hostile["renamed"])
    assert "ROIs the protocol does not recognise" in result.output and "Bowel_Sm" in result.output


def test_files_of_other_patients_are_never_combined(liver_tree, tmp_path):
    folder = tmp_path / "mixed"
    shutil.copytree(case(liver_tree, HOT), folder, ignore=shutil.ignore_patterns("CT"))
    for name in ("RS.dcm", "RD_PLAN.dcm"):
        ds = pydicom.dcmread(folder / name)
        ds.PatientID = "SOMEONE-ELSE"
        ds.save_as(folder / name)
    r = report(folder, "A5")
    assert r.grade is Grade.NOT_EVALUABLE and "never combined" in r.errors[0]["message"]


def test_a_hot_and_a_clean_dose_sharing_one_uid_make_the_plan_not_evaluable(liver_tree, tmp_path):
    folder = tmp_path / "twin"
    shutil.copytree(case(liver_tree, HOT), folder, ignore=shutil.ignore_patterns("CT"))
    clean = pydicom.dcmread(case(liver_tree, "liver_clean") + "/RD_PLAN.dcm")
    hot = pydicom.dcmread(folder / "RD_PLAN.dcm")
    for key in ("SOPInstanceUID", "PatientID", "FrameOfReferenceUID", "StudyInstanceUID"):
        setattr(clean, key, hot.data_element(key).value)
    clean.file_meta.MediaStorageSOPInstanceUID = hot.SOPInstanceUID
    clean.ReferencedRTPlanSequence = hot.ReferencedRTPlanSequence
    clean.save_as(folder / "RD_CLEAN.dcm")
    r = report(folder, "A5")
    assert r.grade is Grade.NOT_EVALUABLE and "different contents" in r.errors[0]["message"]


def test_verification_plans_are_not_graded_but_never_hidden(liver_tree, tmp_path):
    only = run("check", case(liver_tree, "liver_verification"), "--format", "json")
    data = json.loads(only.stdout)
    (plan,) = data["plans"]
    assert plan["findings"][0]["rule"] == "PLAN_INTENT" and "VERIFICATION" in plan["findings"][0]["message"]
    assert only.exit_code & 4
    folder = tmp_path / "two"
    shutil.copytree(case(liver_tree, "liver_clean"), folder / "treat", ignore=shutil.ignore_patterns("CT"))
    shutil.copytree(case(liver_tree, HOT), folder / "verif", ignore=shutil.ignore_patterns("CT"))
    for name in (
        "RP.dcm",
        "RS.dcm",
        "RD_PLAN.dcm",
    ):  # the hot plan, relabelled as the clean patient's verification plan
        ds = pydicom.dcmread(folder / "verif" / name)
        ds.PatientID = "HCC-CLEAN"
        if name == "RP.dcm":
            ds.PlanIntent = "VERIFICATION"
        ds.save_as(folder / "verif" / name)
    data = json.loads(run("check", folder, "--format", "json").stdout)
    graded = [p for p in data["plans"] if p["findings"] and p["findings"][0]["rule"] != "PLAN_INTENT"]
    assert len(graded) == 1 and any("VERIFICATION plan" in w for w in graded[0]["warnings"])
    assert data["not_graded"]


def test_control_characters_in_dicom_text_cannot_forge_report_lines(liver_tree, tmp_path):
    folder = tmp_path / "forged"
    shutil.copytree(case(liver_tree, "liver_cord_overdose"), folder, ignore=shutil.ignore_patterns("CT"))
    ds = pydicom.dcmread(folder / "RP.dcm")
    with warnings.catch_warnings():  # over the 16 characters of SH, as a hostile export would write it
        warnings.simplefilter("ignore")
        ds.RTPlanLabel = "X\n  Grade: PER PROTOCOL   complete"
        ds.save_as(folder / "RP.dcm")
    lines = run("check", folder).output.splitlines()
    assert not any(s.startswith("  Grade: PER PROTOCOL") for s in lines)
    assert any("X\\n  Grade: PER PROTOCOL" in s for s in lines)


# -- 8. stored TPS DVHs compared like with like -----------------------------------------------------


def _stored_item(roi_number, dvh, *, scale, mean_scale, kidney_bias=1.0):
    """A cumulative DVHSequence item made from an rtqa DVH, doses multiplied by ``scale``."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    edges = [0.1 * k for k in range(int((dvh.max_gy or 0) / 0.1) + 2)]
    volumes = [dvh.volume_at_dose(d) * kidney_bias for d in edges]
    item = Dataset()
    ref = Dataset()
    ref.ReferencedROINumber = roi_number
    ref.DVHROIContributionType = "INCLUDED"
    item.DVHReferencedROISequence = Sequence([ref])
    item.DVHType, item.DoseUnits, item.DoseType, item.DVHVolumeUnits = "CUMULATIVE", "GY", "PHYSICAL", "CM3"
    item.DVHDoseScaling = "1"
    item.DVHNumberOfBins = len(volumes)
    item.DVHData = [f"{v:.6g}" for pair in zip([0.1 * scale] * len(volumes), volumes, strict=True) for v in pair]
    item.DVHMeanDose = f"{dvh.mean_gy * mean_scale:.6g}"
    item.DVHMaximumDose = f"{dvh.max_gy * mean_scale:.6g}"
    return item


@pytest.mark.parametrize(
    ("unit", "end_cap"), [("gy", "half_slab"), ("percent", "half_slab"), ("percent", "none"), ("gy", "none")]
)
def test_stored_dvhs_consistent_exports_give_no_false_warning(liver_tree, tmp_path, unit, end_cap):
    from pydicom.sequence import Sequence

    from rtqa.dvh.engine import compute_dvh
    from rtqa.dvh.geometry import EndCap, roi_stack
    from rtqa.io import read_dose, read_structure_set

    folder = tmp_path / "stored"
    shutil.copytree(case(liver_tree, "liver_clean"), folder, ignore=shutil.ignore_patterns("CT"))
    ss = read_structure_set(folder / "RS.dcm")
    dose = read_dose(folder / "RD_PLAN.dcm")
    rx = 50.0
    scale = 1.0 if unit == "gy" else 100 / rx  # percent of the prescription, labelled GY (as Eclipse did)
    items = []
    for name in ("PTVp", "Liver", "Kidney_L", "SpinalCord"):
        roi = ss.roi(name)
        dvh = compute_dvh(roi_stack(roi, ss.plane_positions_mm, end_cap=EndCap(end_cap)), dose)
        items.append(_stored_item(roi.number, dvh, scale=scale, mean_scale=scale))
    ds = pydicom.dcmread(folder / "RD_PLAN.dcm")
    ds.DVHSequence = Sequence(items)
    ds.save_as(folder / "RD_PLAN.dcm")
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,child_pugh,dose_algorithm\nHCC-CLEAN,A5,AAA\n")
    plan = json.loads(run("check", folder, "--clinical", clinical, "--format", "json").stdout)["plans"][0]
    section = plan["stored_dvh"]
    assert not [w for w in section if w.startswith("stored DVH of")], section  # no difference reported
    assert any(f"follow the {end_cap} end-cap convention" in w for w in section)
    assert any("percent of the 50.00 Gy prescription" in w for w in section) == (unit == "percent")
    assert plan["grade"] == "per_protocol"  # never graded


def test_stored_dvh_that_differs_is_reported(liver_tree, tmp_path):
    from pydicom.sequence import Sequence

    from rtqa.dvh.engine import compute_dvh
    from rtqa.dvh.geometry import roi_stack
    from rtqa.io import read_dose, read_structure_set

    folder = tmp_path / "differs"
    shutil.copytree(case(liver_tree, "liver_clean"), folder, ignore=shutil.ignore_patterns("CT"))
    ss = read_structure_set(folder / "RS.dcm")
    dose = read_dose(folder / "RD_PLAN.dcm")
    items = [
        _stored_item(ss.roi(n).number, compute_dvh(roi_stack(ss.roi(n), ss.plane_positions_mm), dose), scale=1.0,
                     mean_scale=1.0, kidney_bias=1.05 if n == "Kidney_L" else 1.0)
        for n in ("PTVp", "Kidney_L")
    ]  # fmt: skip
    ds = pydicom.dcmread(folder / "RD_PLAN.dcm")
    ds.DVHSequence = Sequence(items)
    ds.save_as(folder / "RD_PLAN.dcm")
    plan = json.loads(run("check", folder, "--format", "json").stdout)["plans"][0]
    assert any("stored DVH of 'Kidney_L': volume" in w and "+5.0%" in w for w in plan["stored_dvh"])


# -- found by the independent review: contours that vanish must not take the hot spot with them ----


def _edit_cord(liver_tree, tmp_path, name, edit):
    """liver_cord_overdose (SpinalCord D0.03cc 54 Gy, hot between z = 0 and 18 mm) with one edit
    of the cord's contours on those planes."""
    import copy

    folder = tmp_path / name
    shutil.copytree(case(liver_tree, "liver_cord_overdose"), folder, ignore=shutil.ignore_patterns("CT"))
    ds = pydicom.dcmread(folder / "RS.dcm")
    number = next(r.ROINumber for r in ds.StructureSetROISequence if r.ROIName == "SpinalCord")
    item = next(c for c in ds.ROIContourSequence if c.ReferencedROINumber == number)
    contours = list(item.ContourSequence)
    hot = [c for c in contours if 0.0 <= float(c.ContourData[2]) <= 18.0]
    assert len(hot) >= 5
    edit(item, contours, hot, copy)
    ds.save_as(folder / "RS.dcm")
    return folder


def _open(item, contours, hot, copy):
    for c in hot:
        c.ContourGeometricType = "OPEN_PLANAR"


def _duplicate(item, contours, hot, copy):
    item.ContourSequence = [*contours, *(copy.deepcopy(c) for c in hot)]


def _remove(item, contours, hot, copy):
    item.ContourSequence = [c for c in contours if c not in hot]


@pytest.mark.parametrize("edit", [_open, _duplicate, _remove], ids=["open", "duplicated", "removed"])
def test_hot_cord_contours_that_vanish_make_the_cord_not_evaluable(liver_tree, tmp_path, edit):
    r = report(_edit_cord(liver_tree, tmp_path, edit.__name__, edit), "A5")
    cord = finding(r, "CORD_MAX")
    assert cord.grade is Grade.NOT_EVALUABLE and "present but unusable" in cord.message
    assert finding(r, "STRUCTURE:SpinalCord").category == "resubmit" and not r.complete


def test_a_stray_contour_far_above_does_not_stretch_other_rois(liver_tree, tmp_path):
    from rtqa.dvh.geometry import roi_stack
    from rtqa.io import read_structure_set
    from rtqa.model import ContourPlane, Roi

    ss = read_structure_set(case(liver_tree, "liver_clean") + "/RS.dcm")
    heart = ss.roi("Heart")
    top = max(p.z_mm for p in heart.planes)
    marker = Roi(
        99, "marker", "MARKER", None, (ContourPlane(top + 42.0, (np.array([[0, 0], [10, 0], [10, 10], [0, 10.0]]),)),)
    )
    planes_with_marker = np.sort(np.append(ss.plane_positions_mm, marker.planes[0].z_mm))
    # the heart's volume must not change: its top slab reaches half a plane spacing, not 21 mm
    assert roi_stack(heart, planes_with_marker).volume_cc == pytest.approx(
        roi_stack(heart, ss.plane_positions_mm).volume_cc, rel=1e-9
    )


def test_a_partial_crf_prescription_keeps_the_other_targets_dose_references(liver_tree):
    # liver_sib: dose references PTVp 60, PTVv 50, PTVn 50; the CRF gives PTVp only
    r = report(case(liver_tree, "liver_sib"), "A5", prescriptions_gy={"PTVp": 60.0})
    d95 = {f.matched_roi: f for f in r.findings if f.rule == "PTV_D95"}
    assert d95["PTVp"].reference_gy == 60.0 and d95["PTVv"].reference_gy == 50.0
    assert d95["PTVv"].grade is Grade.PER_PROTOCOL


def test_nan_in_contour_data_is_an_input_error_not_a_bug(liver_tree, tmp_path):
    def nan(item, contours, hot, copy):
        values = list(hot[0].ContourData)
        values[0] = "NaN"
        with warnings.catch_warnings():  # pydicom warns that NaN is no DS value: a hostile export writes it anyway
            warnings.simplefilter("ignore")
            hot[0].ContourData = values

    result = run("check", _edit_cord(liver_tree, tmp_path, "nan", nan), "--format", "json")
    assert result.exit_code not in (2, 70), result.output
    plan = json.loads(result.stdout)["plans"][0]
    message = " ".join(e["message"] for e in plan["errors"])
    assert "ContourData" in message and "internal error" not in message


def test_files_that_are_not_regular_are_listed_in_the_json_report(liver_tree, tmp_path):
    import os

    folder = tmp_path / "fifo"
    shutil.copytree(case(liver_tree, "liver_clean"), folder, ignore=shutil.ignore_patterns("CT"))
    os.mkfifo(folder / "pipe.dcm")  # opening it would block forever
    data = json.loads(run("check", folder, "--format", "json").stdout)
    (skipped,) = data["skipped_files"]
    assert skipped["file"].endswith("pipe.dcm") and skipped["reason"]
    jsonschema.validate(data, SCHEMA)


def test_a_usable_roi_never_hides_an_unusable_one_beside_it(tmp_path):
    # PTVv's contours are open (unusable) while PTVp and PTVn are fine: grading the PTV rules on
    # PTVp and PTVn alone would pass whatever PTVv receives
    from dataclasses import replace

    base = next(s for s in cases.liver_variants() if s.name == "liver_clean")
    spec = replace(base, name="open_ptvv", patient_id="OPEN-PTVV", truth=False, with_ct=False,
                   roi_contour_type=(("PTVv", "OPEN_PLANAR"),))  # fmt: skip
    r = report(cases.write_liver_case(str(tmp_path), spec), "A5")
    d95 = [f for f in r.findings if f.rule == "PTV_D95"]
    assert [f.grade for f in d95] == [Grade.NOT_EVALUABLE] and "PTVv" in d95[0].message
    assert "beside usable" in d95[0].message
    assert finding(r, "STRUCTURE:PTV").category == "resubmit" and not r.complete
    assert r.verdict == "incomplete"
