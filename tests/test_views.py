"""The image views of the HTML report: a hot spot lands on the right side of every view whatever
the orientation the dose was written in, the hottest point of an organ is found where the
fixture put it, and it reaches the finding (and the JSON report)."""

from __future__ import annotations

import itertools
import json
import math
import os
from importlib import resources

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from fixtures.writer import Patient, write_ct_series, write_dose
from rtqa.cli import cli
from rtqa.discovery.batch import Job, run_job
from rtqa.discovery.grouping import discover
from rtqa.dvh.geometry import EndCap, Slab, SlabStack
from rtqa.errors import InputError
from rtqa.evaluation.views import compute_slice_view, hottest_point_mm
from rtqa.io.ct import read_ct_series
from rtqa.io.dose import read_dose
from rtqa.protocol.loader import load_protocol
from rtqa.report.model import CheckResult
from rtqa.report.render import as_json
from tests.conftest import case

SCHEMA = json.loads(resources.files("rtqa").joinpath("schemas/report-v1.schema.json").read_text())

# the canonical test grid and a hot spot on one of its nodes, off centre along every axis:
# patient left (+x), posterior (+y) and towards the head (+z) (DICOM PS3.3 C.7.6.2.1.1)
X = -60.0 + 4.0 * np.arange(31)
Y = -50.0 + 4.0 * np.arange(26)
Z = -40.0 + 4.0 * np.arange(21)
HOT = (40.0, 30.0, 24.0)
# the letter each view must show on the side of the hot spot, from the same definition
EXPECTED = {
    "axial": ("L", "P"),  # horizontal: +x is the patient's left; vertical: +y is posterior
    "coronal": ("L", "S"),  # vertical: +z is superior
    "sagittal": ("P", "S"),  # horizontal: +y is posterior
}


def hot_dose() -> np.ndarray:
    zz, yy, xx = np.meshgrid(Z, Y, X, indexing="ij")
    r2 = (xx - HOT[0]) ** 2 + (yy - HOT[1]) ** 2 + (zz - HOT[2]) ** 2
    return 10.0 + 50.0 * np.exp(-r2 / (2 * 5.0**2))


def box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> SlabStack:
    ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=float)
    zs = np.arange(z0, z1 + 1e-9, 2.0)
    slabs = tuple(Slab(float(a), float(b), (ring,)) for a, b in itertools.pairwise(zs))
    return SlabStack("Box", slabs, EndCap.NONE)


@pytest.mark.parametrize("orientation", ["HFS", "FFS", "HFP", "DECUB_A"])
def test_hot_spot_lands_on_the_right_side_of_every_view(tmp_path, orientation):
    path = tmp_path / f"RD_{orientation}.dcm"
    write_dose(
        str(path),
        Patient.make("ORIENT"),
        sop_uid="1.2.3.4",
        dose_gy=hot_dose(),
        x_mm=X,
        y_mm=Y,
        z_mm=Z,
        plan_uids=[],
        orientation=orientation,
    )
    dose = read_dose(path)
    organ = box(-58.0, 58.0, -48.0, 48.0, -38.0, 38.0)
    point = hottest_point_mm(organ, dose)
    assert point is not None and math.dist(point, HOT) < 0.5  # the hot spot sits on a grid node
    for plane, (h_letter, v_letter) in EXPECTED.items():
        view = compute_slice_view(
            dose, point, plane, subject="Box", reason="test", structures={"Box": (organ, "#0067A5")}, isodoses=()
        )
        rows, cols = view.dose_gy.shape
        r, c = np.unravel_index(np.nanargmax(view.dose_gy), view.dose_gy.shape)
        left, right, top, bottom = view.letters
        assert (right if c > cols / 2 else left) == h_letter, (orientation, plane)
        assert (bottom if r > rows / 2 else top) == v_letter, (orientation, plane)
        # the marker of the view's point is on the hot pixel (within one view pixel)
        assert abs(view.marker_px[0] - c) <= 1 and abs(view.marker_px[1] - r) <= 1
        # the contour of the box is drawn and the mask covers the hot pixel
        assert view.contours[0].mask[r, c]


def test_ct_series_read_in_head_and_feet_first_orientations(tmp_path):
    patient = Patient.make("CTREAD")
    write_ct_series(str(tmp_path / "ct"), patient, [6.0, 0.0, 3.0], size=4, spacing_mm=10.0)
    ct = read_ct_series(sorted(str(p) for p in (tmp_path / "ct").iterdir()))
    # the writer's series: 4 x 4 pixels of 10 mm centred on 0, water (0 HU), z unsorted on disk
    assert ct.z_mm.tolist() == [0.0, 3.0, 6.0]
    assert ct.x_mm.tolist() == [-15.0, -5.0, 5.0, 15.0] and ct.y_mm.tolist() == [-15.0, -5.0, 5.0, 15.0]
    assert np.all(ct.hu == 0.0)


def test_ct_reader_refuses_duplicate_slices(tmp_path):
    patient = Patient.make("CTDUP")
    write_ct_series(str(tmp_path / "a"), patient, [0.0], size=4)
    write_ct_series(str(tmp_path / "b"), patient, [0.0], size=4)
    files = sorted(str(p) for p in tmp_path.rglob("*.dcm"))
    with pytest.raises(InputError, match=r"CT\.0001\.dcm: ImagePositionPatient \(0020,0032\): two slices at z = 0 mm"):
        read_ct_series(files)


def test_cord_hot_spot_is_located_where_the_fixture_put_it(liver_tree):
    plan_set = next(p for p in discover([case(liver_tree, "liver_cord_overdose")]).plan_sets if p.plans)
    report = run_job(Job(plan_set, load_protocol().path, None, views=True))
    cord = next(f for f in report.findings if f.rule == "CORD_MAX")
    # fixtures/cases.py liver_dose: the cord hot spot is a Gaussian centred at (0, 85, 10) mm;
    # the dose grid is 3 mm with nodes 1.5 mm off that centre, so within one voxel diagonal
    assert cord.location_mm is not None and math.dist(cord.location_mm, (0.0, 85.0, 10.0)) < 3 * math.sqrt(3) / 2
    assert {v.subject for v in report.views} >= {"SpinalCord"}
    assert [v.plane for v in report.views if v.subject == "SpinalCord"] == ["axial", "coronal", "sagittal"]
    cord_views = [v for v in report.views if v.subject == "SpinalCord"]
    assert all(any(label.startswith("CORD_MAX limit 45 Gy") for label, _ in v.isodoses) for v in cord_views)
    data = as_json(CheckResult(load_protocol(), (report,), ()))
    jsonschema.validate(data, SCHEMA)
    located = [f for f in data["plans"][0]["findings"] if "location_mm" in f]
    assert located and all(f["grade"] != "per_protocol" for f in located)


def test_targets_get_views_through_their_centre_with_ct(liver_tree):
    plan_set = next(p for p in discover([case(liver_tree, "liver_clean")]).plan_sets if p.plans)
    assert plan_set.ct_images  # the fixture writes a CT series beside the clean case
    report = run_job(Job(plan_set, load_protocol().path, None, views=True))
    # the clean plan has no finding worse than per protocol: views of its targets only, the
    # GTVs sharing their PTVs' views (centres closer than 15 mm)
    assert {v.subject for v in report.views} == {"PTVp", "PTVv", "PTVn"} and len(report.views) == 9
    assert all(v.ct_hu is not None and np.isfinite(v.ct_hu).any() for v in report.views)
    assert all(f.location_mm is None for f in report.findings)


@pytest.mark.parametrize("orientation", ["HFP", "FFS"])
def test_ct_of_other_orientations_reads_to_the_same_volume(tmp_path, orientation):
    """A CT slice stored with rows along -x and/or columns along -y (ImageOrientationPatient of
    HFP or FFS, PS3.3 C.7.6.2.1.1) reads to the same canonical volume as its HFS twin."""
    import pydicom

    patient = Patient.make("CTORIENT")
    write_ct_series(str(tmp_path / "hfs"), patient, [0.0, 3.0], size=4, spacing_mm=10.0)
    hfs_files = sorted(str(p) for p in (tmp_path / "hfs").iterdir())
    # give the HFS slices a pattern: HU = 10 x column + 100 x row (+x and +y increasing)
    pattern = (10 * np.arange(4)[None, :] + 100 * np.arange(4)[:, None]).astype(np.int16)
    flips = {"HFP": (-1, -1), "FFS": (-1, 1)}[orientation]
    os.makedirs(tmp_path / "other")
    for i, path in enumerate(hfs_files):
        ds = pydicom.dcmread(path)
        ds.PixelData = (pattern + 1024).astype(np.int16).tobytes()
        ds.save_as(path)
        stored = pattern[:: flips[1], :: flips[0]]  # rows follow y, columns follow x
        ds.ImageOrientationPatient = [flips[0], 0, 0, 0, flips[1], 0]
        ds.ImagePositionPatient = [15.0 * -flips[0], 15.0 * -flips[1], float(ds.ImagePositionPatient[2])]
        ds.PixelData = (stored + 1024).astype(np.int16).tobytes()
        ds.save_as(str(tmp_path / "other" / f"CT{i}.dcm"))
    hfs = read_ct_series(hfs_files)
    other = read_ct_series(sorted(str(p) for p in (tmp_path / "other").iterdir()))
    assert other.x_mm.tolist() == hfs.x_mm.tolist() and other.y_mm.tolist() == hfs.y_mm.tolist()
    np.testing.assert_array_equal(other.hu, hfs.hu)
    assert hfs.hu[0, 1, 2] == pattern[1, 2]  # y index 1, x index 2


def test_json_report_carries_the_hot_spot_location(liver_tree):
    result = CliRunner().invoke(cli, ["check", case(liver_tree, "liver_cord_overdose"), "--format", "json"])
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)
    (cord,) = [f for f in data["plans"][0]["findings"] if f["rule"] == "CORD_MAX"]
    # the fixture's Gaussian hot spot at (0, 85, 10) mm, within one 3 mm voxel diagonal
    assert math.dist(cord["location_mm"], (0.0, 85.0, 10.0)) < 3 * math.sqrt(3) / 2
    assert all("location_mm" not in f for f in data["plans"][0]["findings"] if f["grade"] == "per_protocol")
