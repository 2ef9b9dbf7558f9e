"""Property-based tests (Hypothesis) of the readers and the structure geometry.

Random valid and invalid edits of the generated demo plan never make a reader raise anything
but rtqa's own errors, never make ``rtqa check`` exit 70, and every report parses. Examples
are few (the readers parse megabytes per example); the bomb inputs of issue 9 are tested one
by one in test_hostile_bounds.py.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from hostile_edits import DEMO, FILES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag

from rtqa.cli import cli
from rtqa.dvh.engine import compute_dvh
from rtqa.dvh.geometry import roi_stack
from rtqa.errors import RtqaError
from rtqa.io import read_dose, read_dose_info, read_header, read_plan, read_structure_set
from rtqa.model import ContourPlane, DoseGrid, Roi, group_planes

# numbers and text a careless or hostile export may hold, as the raw bytes of a value
HOSTILE_TEXT = st.one_of(
    st.sampled_from(["NaN", "nan", "inf", "-inf", "Infinity", "1e400", "-1e400", "-50", "0", "", "1" + "0" * 400]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**30), max_value=10**30).map(str),
    st.text(max_size=40),
    st.sampled_from(["\\".join(["1"] * 5000), "1\\2\\3", "\\\\\\", "x" * 70_000]),
)

# (file, path to the element: sequence keywords and item indices, then the attribute)
TARGETS: list[tuple[str, tuple[str | int, ...], str]] = [
    ("plan", ("DoseReferenceSequence", 0), "TargetPrescriptionDose"),
    ("plan", ("FractionGroupSequence", 0), "NumberOfFractionsPlanned"),
    ("plan", ("FractionGroupSequence", 0, "ReferencedBeamSequence", 0), "BeamDose"),
    ("plan", ("BeamSequence", 0), "BeamNumber"),
    ("plan", ("BeamSequence", 0, "ControlPointSequence", 0), "NominalBeamEnergy"),
    ("plan", (), "RTPlanDate"),
    ("plan", (), "PatientID"),
    ("dose", (), "DoseGridScaling"),
    ("dose", (), "PixelSpacing"),
    ("dose", (), "ImagePositionPatient"),
    ("dose", (), "ImageOrientationPatient"),
    ("dose", (), "GridFrameOffsetVector"),
    ("dose", (), "NumberOfFrames"),
    ("dose", (), "Rows"),
    ("dose", (), "DoseUnits"),
    ("dose", (), "DoseSummationType"),
    ("structures", ("ROIContourSequence", 0, "ContourSequence", 0), "ContourData"),
    ("structures", ("ROIContourSequence", 0, "ContourSequence", 0), "NumberOfContourPoints"),
    ("structures", ("ROIContourSequence", 0, "ContourSequence", 0), "ContourGeometricType"),
    ("structures", ("StructureSetROISequence", 0), "ROINumber"),
    ("structures", ("StructureSetROISequence", 0), "ROIName"),
    ("structures", ("ROIContourSequence", 0), "ReferencedROINumber"),
]

READERS = {
    "plan": [read_header, read_plan],
    "dose": [read_header, read_dose_info, read_dose],
    "structures": [read_header, read_structure_set],
}


def _small_structure_set() -> Dataset:
    """The demo structure set cut to four ROIs, so that an example parses quickly."""
    ds = pydicom.dcmread(DEMO / FILES["structures"])
    keep = {"Liver", "GTVp", "PTVp", "Bowel_Small"}
    numbers = {r.ROINumber for r in ds.StructureSetROISequence if r.ROIName in keep}
    ds.StructureSetROISequence = [r for r in ds.StructureSetROISequence if r.ROINumber in numbers]
    ds.ROIContourSequence = [c for c in ds.ROIContourSequence if c.ReferencedROINumber in numbers]
    ds.RTROIObservationsSequence = [o for o in ds.RTROIObservationsSequence if o.ReferencedROINumber in numbers]
    return ds


@pytest.fixture(scope="module")
def originals() -> dict[str, Dataset]:
    return {
        "plan": pydicom.dcmread(DEMO / FILES["plan"]),
        "dose": pydicom.dcmread(DEMO / FILES["dose"]),
        "structures": _small_structure_set(),
    }


def _apply(ds: Dataset, where: tuple[str | int, ...], keyword: str, raw: bytes) -> None:
    node: Dataset = ds
    for step in where:
        node = node[step] if isinstance(step, int) else getattr(node, step)  # type: ignore[index, assignment]
    tag = Tag(keyword)
    vr = pydicom.datadict.dictionary_VR(tag)
    node[tag] = RawDataElement(BaseTag(tag), vr, len(raw), raw, 0, False, True)  # type: ignore[assignment]


def _write(ds: Dataset, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.save_as(path)
    return path


EDIT = st.tuples(st.sampled_from(TARGETS), HOSTILE_TEXT)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=EDIT)
def test_readers_raise_only_rtqa_errors_on_random_edits(tmp_path, originals, edit):
    (which, where, keyword), value = edit
    ds = copy.deepcopy(originals[which])
    raw = value.encode("utf-8", "surrogatepass")
    _apply(ds, where, keyword, raw + b" " * (len(raw) % 2))
    path = _write(ds, tmp_path / f"edited_{which}.dcm")
    for reader in READERS[which]:
        try:
            reader(path)
        except RtqaError as exc:
            message = str(exc)
            assert str(path) in message
            assert len(message) < 1000, "a message quotes at most a short excerpt"


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edit=EDIT)
def test_check_never_exits_70_and_its_json_always_parses(tmp_path_factory, originals, edit):
    (which, where, keyword), value = edit
    case = tmp_path_factory.mktemp("case")
    for name in FILES.values():
        shutil.copy(DEMO / name, case / name)
    _write(originals["structures"], case / FILES["structures"])
    ds = copy.deepcopy(originals[which])
    raw = value.encode("utf-8", "surrogatepass")
    _apply(ds, where, keyword, raw + b" " * (len(raw) % 2))
    _write(ds, case / FILES[which])
    result = CliRunner().invoke(cli, ["check", str(case), "--format", "json"])
    assert result.exit_code in (0, 1, 4, 5, 8, 9, 12, 13), result.output
    report = json.loads(result.stdout)
    assert all(not any("InternalError" == e["type"] for e in p["errors"]) for p in report["plans"])


# ----------------------------------------------------------------------------------------------
# structure geometry

# finite coordinates only: NaN and infinities never reach the geometry, the reader refuses them
# (test_readers_raise_only_rtqa_errors_on_random_edits, test_hostile_numbers.py)
COORD = st.one_of(
    st.floats(min_value=-60, max_value=60, allow_nan=False),
    st.sampled_from([1e300, -1e300, 1e9, 0.0]),
)
RING = st.lists(st.tuples(COORD, COORD), min_size=0, max_size=12)
PLANES = st.lists(
    st.tuples(st.sampled_from([-6.0, -3.0, 0.0, 3.0, 6.0, 1e9]), st.lists(RING, min_size=1, max_size=3)),
    min_size=1,
    max_size=4,
)


def _dose() -> DoseGrid:
    """A 3 mm grid of a linear dose (0.1 Gy/mm along x, 30 Gy at x = 0), 120 mm wide."""
    x = np.arange(-60.0, 61.0, 3.0)
    y = np.arange(-60.0, 61.0, 3.0)
    z = np.arange(-12.0, 13.0, 3.0)
    dose = np.broadcast_to(30.0 + 0.1 * x[None, None, :], (z.size, y.size, x.size)).copy()
    return DoseGrid(dose_gy=dose, x_mm=x, y_mm=y, z_mm=z)


DOSE = _dose()


@settings(max_examples=60, deadline=None)
@given(planes=PLANES)
def test_random_contours_give_a_dvh_or_an_rtqa_error(planes):
    contour_planes = tuple(
        ContourPlane(z_mm=z, rings=tuple(np.asarray(r, dtype=np.float64).reshape(-1, 2) for r in rings))
        for z, rings in planes
    )
    roi = Roi(1, "random", "ORGAN", None, contour_planes)
    try:
        positions = group_planes(np.asarray([p.z_mm for p in contour_planes], dtype=np.float64))
        stack = roi_stack(roi, positions)
        dvh = compute_dvh(stack, DOSE)
    except RtqaError:
        return
    assert math.isfinite(dvh.volume_cc) and dvh.volume_cc >= 0
    assert np.all(np.isfinite(dvh.volume_ge_cc))
    if dvh.min_gy is not None and dvh.max_gy is not None:
        # the dose of the grid lies in [24, 36] Gy; sampling spreads it by at most one gradient step
        assert 23.0 <= dvh.min_gy <= dvh.max_gy <= 37.0
