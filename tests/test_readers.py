"""Reading plans and structure sets, including pydicom's bundled RT test files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from fixtures.writer import BeamSpec, Patient, RoiSpec, uid, write_plan, write_structure_set
from rtqa.case import PrescriptionSource
from rtqa.errors import DoseGridError, InputError, UnsupportedObjectError
from rtqa.evaluation.prescription import derive_prescription
from rtqa.io import read_dose, read_header, read_plan, read_structure_set
from rtqa.io.common import NotDicomError


def test_pydicom_rtplan_is_read():
    plan = read_plan(get_testdata_file("rtplan.dcm"))
    assert plan.patient_id == "id00001"
    assert plan.fraction_groups[0].fractions_planned == 30
    assert [b.number for b in plan.beams] == [1]
    assert plan.fraction_groups[0].beams[0].beam_dose_gy == pytest.approx(1.0275401)


def test_pydicom_headerless_rtstruct_with_point_rois_is_read_with_warnings():
    path = get_testdata_file("rtstruct.dcm")
    ss = read_structure_set(path)
    assert read_header(path).headerless
    points = [r for r in ss.rois if r.skipped_contours]
    assert points and all(r.is_empty for r in points)
    assert any("POINT contour(s) skipped" in w for w in ss.warnings)
    assert any(not r.is_empty for r in ss.rois)


def test_pydicom_relative_rtdose_is_refused_with_reason():
    with pytest.raises(DoseGridError, match=r"rtdose.dcm: DoseUnits \(3004,0002\): is RELATIVE"):
        read_dose(get_testdata_file("rtdose.dcm"))


def test_three_unrelated_pydicom_files_do_not_group(tmp_path):
    from rtqa.discovery.grouping import discover

    files = [get_testdata_file(n) for n in ("rtplan.dcm", "rtstruct.dcm", "rtdose.dcm")]
    found = discover(files)
    plan = next(p for p in found.plan_sets if p.plans)
    assert any("references structure set" in p and "not in the input" in p for p in plan.problems)
    assert any(u.path.endswith("rtdose.dcm") and "dose with no plan" in u.reason for u in found.unassigned)


def test_not_dicom_is_told_apart_from_broken_dicom(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("hello, not a DICOM file\n" * 20)
    with pytest.raises(NotDicomError, match="not a DICOM file"):
        read_header(junk)


def _patient():
    return Patient.make("READ-1")


def test_rt_ion_plan_is_refused_by_name(tmp_path):
    path = str(tmp_path / "ion.dcm")
    write_plan(
        path,
        _patient(),
        sop_uid=uid("ion"),
        structure_set_uid=None,
        label="ION",
        fractions=5,
        beams=[BeamSpec(1, "B1", 0.0, 2.0)],
        ion=True,
    )
    with pytest.raises(UnsupportedObjectError, match=r"ion.dcm: SOPClassUID \(0008,0016\): is an RT Ion Plan"):
        read_plan(path)


def test_fractions_stored_as_text_and_prescription_from_beam_doses(tmp_path):
    path = str(tmp_path / "rp.dcm")
    write_plan(
        path,
        _patient(),
        sop_uid=uid("txt"),
        structure_set_uid=None,
        label="TXT",
        fractions="25.0",
        beams=[
            BeamSpec(1, "A", 0.0, 1.2),
            BeamSpec(2, "B", 180.0, 0.8),
            BeamSpec(3, "SETUP", 0.0, None, delivery_type="SETUP", modulated=False),
        ],
    )
    plan = read_plan(path)
    assert plan.fraction_groups[0].fractions_planned == 25
    assert [b.is_treatment for b in plan.beams] == [True, True, False]
    assert plan.beams[0].mlc_modulated and not plan.beams[2].mlc_modulated
    rx = derive_prescription(plan)
    assert rx.source is PrescriptionSource.BEAM_DOSES
    assert rx.total_gy == pytest.approx(50.0)  # (1.2 + 0.8) Gy x 25
    assert rx.per_fraction_gy == pytest.approx(2.0)
    assert any("point dose" in w for w in rx.warnings)


def test_malformed_fraction_count_names_the_attribute(tmp_path):
    path = str(tmp_path / "rp.dcm")
    write_plan(
        path,
        _patient(),
        sop_uid=uid("bad"),
        structure_set_uid=None,
        label="BAD",
        fractions="25.5",
        beams=[BeamSpec(1, "A", 0.0, 2.0)],
    )
    with pytest.raises(InputError, match=r"rp.dcm: NumberOfFractionsPlanned.*not a whole number"):
        read_plan(path)


def _square(z, half=10.0, n=4):
    t = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    return np.column_stack([t, np.full(len(t), z)])


def test_structure_set_problems_are_reported(tmp_path):
    path = str(tmp_path / "rs.dcm")
    tilted = _square(0.0)
    tilted[:, 2] = [0.0, 0.5, 1.0, 0.5]
    rois = [
        RoiSpec(1, "Liver", contours=[("CLOSED_PLANAR", _square(z)) for z in (0.0, 3.0, 6.0)]),
        RoiSpec(2, "Liver", contours=[("CLOSED_PLANAR", _square(0.0, 5.0))]),
        RoiSpec(4, "Empty"),
        RoiSpec(5, "Tilted", contours=[("CLOSED_PLANAR", tilted)]),
        RoiSpec(6, "Marker", contours=[("POINT", np.array([[1.0, 2.0, 3.0]]))]),
        # decimal jitter on one plane: z 3.0 and 3.02 are one plane
        RoiSpec(7, "Jitter", contours=[("CLOSED_PLANAR", _square(3.0)), ("CLOSED_PLANAR", _square(3.02, 4.0))]),
    ]
    write_structure_set(path, _patient(), rois, sop_uid=uid("rs"))
    ss = read_structure_set(path)
    text = "\n".join(ss.warnings)
    assert "ROI name 'Liver' is used by 2 ROIs" in text
    assert "'Empty': has no closed contours" in text
    assert "'Tilted': 1 non-axial contour(s) skipped" in text
    assert "'Marker': 1 POINT contour(s) skipped" in text
    jitter = next(r for r in ss.rois if r.name == "Jitter")
    assert len(jitter.planes) == 1 and len(jitter.planes[0].rings) == 2
    np.testing.assert_allclose(ss.plane_positions_mm, [0.0, 3.0, 6.0], atol=0.02)


def test_contour_point_count_mismatch_is_reported(tmp_path):
    import pydicom

    path = str(tmp_path / "rs.dcm")
    write_structure_set(
        path, _patient(), [RoiSpec(1, "Box", contours=[("CLOSED_PLANAR", _square(0.0))])], sop_uid=uid("rs2")
    )
    ds = pydicom.dcmread(path)
    ds.ROIContourSequence[0].ContourSequence[0].NumberOfContourPoints = 7
    ds.save_as(path)
    ss = read_structure_set(path)
    assert any("NumberOfContourPoints (3006,0046) says 7, ContourData holds 4" in w for w in ss.warnings)


def test_non_ascii_names_are_decoded(tmp_path):
    path = str(tmp_path / "rs.dcm")
    write_structure_set(
        path,
        _patient(),
        [RoiSpec(1, "肝脏", contours=[("CLOSED_PLANAR", _square(0.0))])],
        sop_uid=uid("gb"),
        charset="GB18030",
    )
    assert read_structure_set(path).rois[0].name == "肝脏"
    assert os.path.getsize(path) > 0
