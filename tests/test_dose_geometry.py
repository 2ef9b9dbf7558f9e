"""RT Dose geometry: orientations, frame offsets and refusals.

Reference positions come from the DICOM formula itself (PS3.3 C.7.6.2.1.1 and C.8.8.3.2):
P = IPP + column * dc * row_direction + row * dr * column_direction + offset * normal,
with the dose files written by hand here, not by the fixture writer.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rtqa.dvh.grid import compute_canonical_grid, interpolate_trilinear, resample, sum_doses
from rtqa.errors import DoseGridError, InputError
from rtqa.io import read_dose, read_dose_info
from rtqa.model import DoseGrid, DoseSummationType, Heterogeneity

ORIENTATIONS = {
    "HFS": (1, 0, 0, 0, 1, 0),
    "HFP": (-1, 0, 0, 0, -1, 0),
    "FFS": (-1, 0, 0, 0, 1, 0),
    "FFP": (1, 0, 0, 0, -1, 0),
    "HFDL": (0, -1, 0, 1, 0, 0),
    "HFDR": (0, 1, 0, -1, 0, 0),
    "FFDL": (0, 1, 0, 1, 0, 0),
    "FFDR": (0, -1, 0, -1, 0, 0),
}


def write_raw_dose(
    path,
    *,
    iop,
    ipp=(-10.0, 20.0, 30.0),
    spacing=(2.0, 3.0),
    offsets=(0.0, 4.0, 8.0, 12.0),
    shape=(4, 5, 6),
    hot=(2, 3, 4),
    units="GY",
    extra=None,
):
    """A dose of 1 Gy everywhere but 9 Gy at stored voxel hot=(frame, row, column)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "RTDOSE"
    ds.PatientID = "GEOM"
    ds.FrameOfReferenceUID = "1.2.3.4"
    ds.ImagePositionPatient = list(ipp)
    ds.ImageOrientationPatient = list(iop)
    ds.PixelSpacing = list(spacing)
    ds.NumberOfFrames, ds.Rows, ds.Columns = shape
    ds.GridFrameOffsetVector = list(offsets)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.DoseUnits = units
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = "0.001"
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    pixels = np.full(shape, 1000, dtype=np.uint16)
    pixels[hot] = 9000
    ds.PixelData = pixels.tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return path


def dicom_position(ipp, iop, spacing, offsets, hot):
    row_dir, col_dir = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = np.cross(row_dir, col_dir)
    f, r, c = hot
    return np.array(ipp) + c * spacing[1] * row_dir + r * spacing[0] * col_dir + offsets[f] * normal


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_each_orientation_places_the_hot_voxel_at_its_patient_coordinate(tmp_path, name):
    iop = ORIENTATIONS[name]
    path = write_raw_dose(tmp_path / "rd.dcm", iop=iop)
    grid = read_dose(path)
    expected = dicom_position((-10.0, 20.0, 30.0), iop, (2.0, 3.0), (0.0, 4.0, 8.0, 12.0), (2, 3, 4))
    iz, iy, ix = np.unravel_index(np.argmax(grid.dose_gy), grid.dose_gy.shape)
    assert grid.dose_gy.max() == pytest.approx(9.0)
    np.testing.assert_allclose([grid.x_mm[ix], grid.y_mm[iy], grid.z_mm[iz]], expected, atol=1e-6)
    for axis in (grid.x_mm, grid.y_mm, grid.z_mm):
        assert np.all(np.diff(axis) > 0)


def test_feet_first_planes_run_along_minus_z(tmp_path):
    info = read_dose_info(write_raw_dose(tmp_path / "rd.dcm", iop=ORIENTATIONS["FFS"]))
    np.testing.assert_allclose(info.z_mm, [18.0, 22.0, 26.0, 30.0])


def test_relative_and_absolute_frame_offsets_give_the_same_grid(tmp_path):
    rel = read_dose(write_raw_dose(tmp_path / "rel.dcm", iop=ORIENTATIONS["HFS"], offsets=(0, 4, 8, 12)))
    absolute = read_dose(write_raw_dose(tmp_path / "abs.dcm", iop=ORIENTATIONS["HFS"], offsets=(30, 34, 38, 42)))
    np.testing.assert_allclose(rel.z_mm, absolute.z_mm)
    np.testing.assert_allclose(rel.dose_gy, absolute.dose_gy)


def test_decreasing_and_non_uniform_offsets(tmp_path):
    dec = read_dose(write_raw_dose(tmp_path / "dec.dcm", iop=ORIENTATIONS["HFS"], offsets=(0, -3, -6, -12)))
    np.testing.assert_allclose(dec.z_mm, [18.0, 24.0, 27.0, 30.0])
    # stored frame 2 (offset -6) holds the hot voxel: z = 30 - 6 = 24
    iz = np.unravel_index(np.argmax(dec.dose_gy), dec.dose_gy.shape)[0]
    assert dec.z_mm[iz] == pytest.approx(24.0)


SAGITTAL = (0, 1, 0, 0, 0, -1)  # rows along +y, columns along -z: the frames run along -x
CORONAL = (1, 0, 0, 0, 0, -1)  # rows along +x, columns along -z: the frames run along +y


@pytest.mark.parametrize(("iop", "axis"), [(SAGITTAL, "x"), (CORONAL, "y")])
def test_a_sagittal_or_coronal_dose_needs_equal_frame_steps_and_is_placed_by_the_dicom_formula(tmp_path, iop, axis):
    # equal steps: the hot voxel where PS3.3's formula puts it
    grid = read_dose(write_raw_dose(tmp_path / "even.dcm", iop=iop))
    expected = dicom_position((-10.0, 20.0, 30.0), iop, (2.0, 3.0), (0.0, 4.0, 8.0, 12.0), (2, 3, 4))
    iz, iy, ix = np.unravel_index(np.argmax(grid.dose_gy), grid.dose_gy.shape)
    np.testing.assert_allclose([grid.x_mm[ix], grid.y_mm[iy], grid.z_mm[iz]], expected, atol=1e-6)
    # unequal steps along x or y: refused when read, naming the file, the attribute and the axis
    path = write_raw_dose(tmp_path / "uneven.dcm", iop=iop, offsets=(0.0, 4.0, 8.0, 14.0))
    with pytest.raises(
        InputError, match=rf"GridFrameOffsetVector \(3004,000C\).*along the patient's {axis} axis"
    ) as info:
        read_dose(path)
    assert str(path) in str(info.value) and "from 4 to 6 mm" in str(info.value)
    # an axial dose may space its planes unequally (z is not sampled by rows of a lattice)
    assert (
        read_dose(write_raw_dose(tmp_path / "axial.dcm", iop=ORIENTATIONS["HFS"], offsets=(0, 4, 8, 14))).z_mm[-1]
        == 44.0
    )


def test_the_reader_refuses_exactly_the_frame_steps_the_dvh_engine_would(tmp_path):
    """Found by review: the reader compared the steps with the first stored one, the engine with
    the first along the patient axis (the last stored one when the axis is flipped), so a dose
    the reader accepted could still be refused by the engine without file or attribute."""
    from rtqa.dvh.engine import prepare_dose

    outcomes = set()
    for n, (iop, sign, wiggle) in enumerate(
        (iop, sign, wiggle) for iop in (SAGITTAL, CORONAL) for sign in (1, -1) for wiggle in (0.5e-4, 0.9e-4, 1.5e-4)
    ):
        steps = 3.0 * np.array([1.0, 1.0 - wiggle, 1.0 - wiggle, 1.0 + wiggle])
        offsets = sign * np.concatenate([[0.0], np.cumsum(steps)])
        path = write_raw_dose(tmp_path / f"d{n}.dcm", iop=iop, offsets=tuple(offsets), shape=(5, 5, 6), hot=(2, 3, 4))
        try:
            grid = read_dose(path)
        except InputError as exc:
            assert "GridFrameOffsetVector (3004,000C)" in str(exc)
            outcomes.add("refused when read")
            continue
        prepare_dose(grid)  # raises GeometryError if the engine would refuse what was read
        outcomes.add("read and used")
    assert outcomes == {"refused when read", "read and used"}


def test_a_sagittal_dose_of_one_frame_or_absolute_offsets_is_refused_saying_why(tmp_path):
    one = write_raw_dose(tmp_path / "one.dcm", iop=SAGITTAL, offsets=(0.0,), shape=(1, 5, 6), hot=(0, 3, 4))
    with pytest.raises(InputError, match=r"NumberOfFrames \(0028,0008\): 1 frame: .* along the patient's x axis"):
        read_dose(one)
    absolute = write_raw_dose(tmp_path / "abs.dcm", iop=SAGITTAL, offsets=(30.0, 34.0, 38.0, 42.0))
    with pytest.raises(InputError, match=r"first value 30 is not 0: with orientation \(0,1,0,0,0,-1\) the offsets"):
        read_dose(absolute)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iop": (0.9, 0.1, 0, 0, 1, 0)}, r"ImageOrientationPatient \(0020,0037\).*oblique"),
        ({"iop": (1, 0, 0, 0, 1, 0), "offsets": (5, 9, 13, 17)}, r"GridFrameOffsetVector \(3004,000C\).*neither 0"),
        ({"iop": (1, 0, 0, 0, 1, 0), "offsets": (0, 4, 4, 8)}, r"GridFrameOffsetVector.*strictly"),
        ({"iop": (1, 0, 0, 0, 1, 0), "units": "RELATIVE"}, r"DoseUnits \(3004,0002\): is RELATIVE"),
        (
            {"iop": (1, 0, 0, 0, 1, 0), "extra": {"SpatialTransformOfDose": "RIGID"}},
            r"SpatialTransformOfDose \(3004,0005\): is RIGID",
        ),
        ({"iop": (1, 0, 0, 0, 1, 0), "offsets": (0, 4, 8)}, r"GridFrameOffsetVector.*3 values; expected 4"),
    ],
)
def test_bad_dose_grids_are_refused_naming_file_and_attribute(tmp_path, kwargs, match):
    path = write_raw_dose(tmp_path / "bad.dcm", **kwargs)
    with pytest.raises(InputError, match=match) as info:
        read_dose(path)
    assert str(path) in str(info.value)


def test_heterogeneity_states(tmp_path):
    iop = ORIENTATIONS["HFS"]
    off = read_dose_info(write_raw_dose(tmp_path / "a.dcm", iop=iop, extra={"TissueHeterogeneityCorrection": "WATER"}))
    on = read_dose_info(
        write_raw_dose(tmp_path / "b.dcm", iop=iop, extra={"TissueHeterogeneityCorrection": ["IMAGE", "ROI_OVERRIDE"]})
    )
    unknown = read_dose_info(write_raw_dose(tmp_path / "c.dcm", iop=iop))
    assert (off.heterogeneity, on.heterogeneity, unknown.heterogeneity) == (
        Heterogeneity.OFF,
        Heterogeneity.ON,
        Heterogeneity.UNKNOWN,
    )
    assert unknown.summation_type is DoseSummationType.PLAN


def test_canonical_grid_refuses_parallel_directions():
    with pytest.raises(DoseGridError, match=r"oblique|parallel"):
        compute_canonical_grid(
            position_mm=(0, 0, 0),
            orientation=(1, 0, 0, 1, 0, 0),
            pixel_spacing_mm=(1, 1),
            frame_offsets_mm=np.zeros(1),
            rows=2,
            columns=2,
        )


def _linear_grid(x, y, z):
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return DoseGrid(dose_gy=1.0 + 0.5 * xx - 0.25 * yy + 2.0 * zz, x_mm=x, y_mm=y, z_mm=z)


def test_trilinear_interpolation_is_exact_for_a_linear_dose_and_nan_outside():
    grid = _linear_grid(np.arange(0, 10.0, 2), np.arange(0, 9.0, 3), np.array([0.0, 1.0, 5.0]))
    px, py, pz = np.array([1.3, 7.9, 100.0]), np.array([0.5, 5.5, 1.0]), np.array([0.4, 3.3, 1.0])
    out = interpolate_trilinear(grid, px, py, pz)
    np.testing.assert_allclose(out[:2], 1.0 + 0.5 * px[:2] - 0.25 * py[:2] + 2.0 * pz[:2])
    assert np.isnan(out[2])


def test_sum_resamples_other_grids_trilinearly():
    a = _linear_grid(np.arange(0, 20.0, 2), np.arange(0, 20.0, 2), np.arange(0, 10.0, 2))
    b = _linear_grid(np.arange(-1, 21.0, 3), np.arange(-1, 21.0, 3), np.arange(-1, 11.0, 3))
    total = sum_doses([a, b])
    np.testing.assert_allclose(total.dose_gy, 2 * a.dose_gy, atol=1e-9)
    # resampling onto a grid that differs (3 mm nodes shifted by 1 mm onto 2 mm nodes) reproduces
    # the linear field exactly: trilinear interpolation is exact for a linear dose
    assert not np.array_equal(b.x_mm, a.x_mm)
    np.testing.assert_allclose(resample(b, onto=a), a.dose_gy, atol=1e-9)
    # outside the other grid the dose is 0 Gy, not extrapolated
    far = _linear_grid(np.arange(100, 110.0, 2), np.arange(0, 20.0, 2), np.arange(0, 10.0, 2))
    np.testing.assert_array_equal(resample(b, onto=far), 0.0)


def test_the_demo_plan_with_its_dose_stored_sagittally_gets_the_same_report(tmp_path):
    """The demo's axial dose rewritten as a sagittal one (the same voxels, stored as frames
    along -x of rows along -z and columns along +y): the same grid once read, the same report."""
    import json
    import shutil

    import pydicom
    from click.testing import CliRunner

    from rtqa.cli import cli

    demo = "fixtures/demo/liver_clean"
    folder = tmp_path / "sagittal"
    shutil.copytree(demo, folder)
    ds = pydicom.dcmread(folder / "RD_PLAN.dcm")
    axial = ds.pixel_array  # [z, y, x]
    x0, y0, z0 = (float(v) for v in ds.ImagePositionPatient)
    dy, dx = (float(v) for v in ds.PixelSpacing)
    dz = float(ds.GridFrameOffsetVector[1]) - float(ds.GridFrameOffsetVector[0])
    nz, _, nx = axial.shape
    stored = np.ascontiguousarray(axial[::-1, :, ::-1].transpose(2, 0, 1))  # [frame, row, column]
    ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    ds.ImagePositionPatient = [x0 + (nx - 1) * dx, y0, z0 + (nz - 1) * dz]
    ds.PixelSpacing = [dz, dy]
    ds.NumberOfFrames, ds.Rows, ds.Columns = stored.shape
    ds.GridFrameOffsetVector = [i * dx for i in range(nx)]
    ds.PixelData = stored.tobytes()
    ds.save_as(folder / "RD_PLAN.dcm")

    before, after = read_dose(f"{demo}/RD_PLAN.dcm"), read_dose(folder / "RD_PLAN.dcm")
    for axis in ("x_mm", "y_mm", "z_mm", "dose_gy"):
        np.testing.assert_array_equal(getattr(after, axis), getattr(before, axis))

    def findings(path):
        out = CliRunner().invoke(
            cli, ["check", str(path), "--clinical", "fixtures/demo/clinical.csv", "--format", "json"]
        )
        (plan,) = json.loads(out.stdout)["plans"]
        return plan["verdict"], [(f["rule"], f["value"], f["grade"]) for f in plan["findings"]]

    assert findings(folder) == findings(demo)
