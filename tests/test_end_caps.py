"""Issue 19: the ``shape`` end cap on analytic shapes, DVHs of several conventions sampled once,
grades that know their convention, and ``rtqa dvh`` on a structure set and a dose alone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fixtures import cases, nelms
from rtqa.cli import cli
from rtqa.discovery.grouping import discover
from rtqa.discovery.load import load_case
from rtqa.dvh.engine import compute_dvh, compute_dvhs
from rtqa.dvh.geometry import EndCap, roi_stack
from rtqa.evaluation.evaluate import evaluate
from rtqa.model import ContourPlane, DoseGrid, Roi
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from tests.end_cap_protocols import SPHERE_PTV, write_protocol


def _roi(shape: str, spacing: float) -> tuple[Roi, np.ndarray]:
    planes = [
        ContourPlane(float(z), (ring,))
        for z in nelms.contour_planes(spacing)
        if (ring := nelms.section_ring(shape, float(z))) is not None
    ]
    n = round(nelms.RADIUS_MM / spacing)
    return Roi(1, shape, "PTV", None, tuple(planes)), (np.arange(-n - 3, n + 3) + 0.5) * spacing


@pytest.mark.parametrize("shape", nelms.SHAPES)
def test_the_shape_end_cap_closes_each_analytic_shape_where_it_ends(shape):
    # truth: the shapes of fixtures/nelms.py end at +-12 mm, half a 3 mm slice beyond the outer
    # contours; their volumes are closed forms
    roi, grid = _roi(shape, 3.0)
    true_cc = nelms.true_volume_mm3(shape) / 1000
    stack = roi_stack(roi, grid, end_cap=EndCap.SHAPE)
    assert stack.slabs[0].z_lo_mm == pytest.approx(-12.0, abs=0.05)
    assert stack.slabs[-1].z_hi_mm == pytest.approx(12.0, abs=0.05)
    assert stack.volume_cc == pytest.approx(true_cc, rel=0.007)
    half = roi_stack(roi, grid, end_cap=EndCap.HALF_SLAB)
    none = roi_stack(roi, grid, end_cap=EndCap.NONE)
    # at a closing end (dome, apex, a lying cylinder) the shape cap narrows: less than half a slab
    # of the last outline; at a flat end it is half a slab (a widening one, a cone's base, widens)
    assert none.volume_cc < stack.volume_cc
    if shape == "Cylinder":
        assert stack.volume_cc == pytest.approx(half.volume_cc, rel=1e-9)
    if shape in ("Sphere", "RtCylinder"):
        assert stack.volume_cc < half.volume_cc
        assert abs(stack.volume_cc - true_cc) < abs(half.volume_cc - true_cc)


def test_an_roi_of_one_plane_or_two_keeps_half_slabs_or_a_line_fit():
    roi, grid = _roi("Sphere", 3.0)
    one = Roi(1, "one", "PTV", None, roi.planes[3:4])
    assert roi_stack(one, grid, end_cap=EndCap.SHAPE).volume_cc == pytest.approx(
        roi_stack(one, grid, end_cap=EndCap.HALF_SLAB).volume_cc
    )
    two = Roi(1, "two", "PTV", None, roi.planes[3:5])
    assert roi_stack(two, grid, end_cap=EndCap.SHAPE).volume_cc > 0


def test_the_benchmark_truth_agrees_with_the_closed_forms():
    for shape in nelms.SHAPES:
        for gradient in nelms.GRADIENTS:
            t = nelms.truth(shape, gradient)
            assert t.volume_cc * 1000 == pytest.approx(nelms.true_volume_mm3(shape), rel=1e-9)
            assert (t.min_gy, t.max_gy) == (2.5, 26.5)
    # the sphere's mean is its centre's dose; the upright cone's along its axis is a quarter of
    # the height above the base (closed forms)
    assert nelms.truth("Sphere", "SI").mean_gy == pytest.approx(14.5, abs=1e-9)
    assert nelms.truth("Cone", "SI").mean_gy == pytest.approx(2.5 + 24 / 4, abs=1e-9)
    # D-values of the cylinder along its axis: the dose is uniform in volume (closed form)
    assert nelms.truth("Cylinder", "SI").D95 == pytest.approx(2.5 + 0.05 * 24, abs=1e-8)


def _linear_dose(step: float = 2.0) -> DoseGrid:
    ax = (np.arange(-9, 9) + 0.5) * step
    zz, yy, xx = np.meshgrid(ax, ax, ax, indexing="ij")
    return DoseGrid(14.5 + zz + 0.0 * xx + 0.0 * yy, ax.copy(), ax.copy(), ax.copy())


def test_the_conventions_share_their_interior_samples_and_give_the_same_dvhs_as_alone():
    roi, grid = _roi("Sphere", 2.0)
    dose = _linear_dose()
    stacks = [roi_stack(roi, grid, end_cap=c) for c in EndCap]
    together = compute_dvhs(stacks, dose)
    for stack, dvh in zip(stacks, together, strict=True):
        alone = compute_dvh(stack, dose)
        assert dvh.end_cap is stack.end_cap
        assert dvh.volume_cc == pytest.approx(alone.volume_cc, rel=1e-12)
        assert dvh.max_gy == pytest.approx(alone.max_gy, abs=1e-12)
        assert dvh.min_gy == pytest.approx(alone.min_gy, abs=1e-12)
        assert dvh.mean_gy == pytest.approx(alone.mean_gy, rel=1e-12)
        np.testing.assert_allclose(dvh.volume_ge_cc, alone.volume_ge_cc, rtol=1e-10, atol=1e-12)
    # none stops at the outer planes: its hottest point is a whole half slab cooler (1 Gy/mm)
    by = dict(zip(EndCap, together, strict=True))
    assert by[EndCap.HALF_SLAB].max_gy - by[EndCap.NONE].max_gy == pytest.approx(1.0, abs=0.05)


def _protocol(tmp_path: Path, end_cap: str, limit: float) -> str:
    return write_protocol(
        tmp_path,
        "p",
        end_cap,
        SPHERE_PTV
        + f"""\
constraints:
  - {{id: PTV_MAX, structure: PTV, metric: "Max[Gy]", per_protocol: "<= {limit}",
     variation_acceptable: "<= {limit + 5}", source: "test"}}
  - {{id: PTV_MEAN, structure: PTV, metric: "Mean[Gy]", per_protocol: "<= 80", source: "test"}}
""",
    )


@pytest.fixture(scope="module")
def sphere_case(tmp_path_factory):
    # sphere of 20 mm on 3 mm planes in a dose of 50 Gy + 1 Gy/mm along z: the top contour is at
    # z = 18 mm, so Max is 68 Gy stopping there (none), 69.5 Gy half a slab beyond (half_slab)
    out = tmp_path_factory.mktemp("caps")
    folder = cases.write_phantom_case(str(out), "sphere20", "zgrad", 3.0, 3.0)
    (plan_set,) = [p for p in discover([folder]).plan_sets if p.plans]
    return load_case(plan_set)


def test_a_grade_that_depends_on_the_convention_says_so_and_flags_the_plan(sphere_case, tmp_path):
    protocol = load_protocol(_protocol(tmp_path, "none", 69.0))  # straddled: 68 (none) < 69 < 69.5
    report = evaluate(sphere_case, protocol)
    (f,) = [f for f in report.findings if f.rule == "PTV_MAX"]
    by = {e.end_cap: (e.value, e.grade) for e in f.by_end_cap}
    assert set(by) == {"half_slab", "none", "shape"}
    assert by["none"][1] is Grade.PER_PROTOCOL and f.grade is Grade.PER_PROTOCOL  # the protocol's convention
    assert by["half_slab"][1] is Grade.VARIATION_ACCEPTABLE
    assert by["half_slab"][0] > 69.0 > by["none"][0]
    assert f.convention_sensitive
    assert "convention-sensitive: per protocol with none" in f.message
    assert "variation acceptable with half_slab" in f.message
    assert report.convention_sensitive == ("PTV_MAX",)
    js = f.as_json()
    assert js["by_end_cap"]["half_slab"]["grade"] == "variation_acceptable"
    # a limit far from every convention's value: no flag
    (mean,) = [f for f in report.findings if f.rule == "PTV_MEAN"]
    assert not mean.convention_sensitive and "convention-sensitive" not in mean.message
    # the same plan under a protocol that chose half_slab: graded variation acceptable, flagged too
    report2 = evaluate(sphere_case, load_protocol(_protocol(tmp_path, "half_slab", 69.0)))
    (f2,) = [f for f in report2.findings if f.rule == "PTV_MAX"]
    assert f2.grade is Grade.VARIATION_ACCEPTABLE and f2.convention_sensitive


def test_the_report_json_with_by_end_cap_follows_the_schema(sphere_case, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    from rtqa.report.model import CheckResult
    from rtqa.report.render import as_json

    protocol = load_protocol(_protocol(tmp_path, "shape", 69.0))
    report = evaluate(sphere_case, protocol)
    doc = as_json(CheckResult(protocol, (report,), ()))
    schema = json.loads((Path(__file__).parents[1] / "rtqa/schemas/report-v1.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert all("by_end_cap" in f for f in doc["plans"][0]["findings"] if f["rule"].startswith("PTV_"))


def test_rtqa_dvh_on_a_structure_set_and_a_dose_without_a_plan(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    rs = nelms.write_structure(str(folder), "Sphere", 2.0)
    nelms.write_dose_grid(str(folder), "2", "SI")
    res = CliRunner().invoke(cli, ["dvh", str(folder), "--format", "json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    text = json.dumps(doc)
    assert "no RT Plan" in text and "FrameOfReferenceUID" in text and "relative values need --rx" in text
    res = CliRunner().invoke(cli, ["dvh", str(folder), "--rx", "20"])
    assert res.exit_code == 0, res.output
    assert "20.00 Gy from --rx" in res.stdout and "Sphere" in res.stdout
    # the volume of the sphere's contour stack with half slabs (about 7.26 cc)
    assert "7.2" in res.stdout
    # a dose whose structure set is absent stays unassigned: not evaluable, said
    Path(rs).unlink()
    res = CliRunner().invoke(cli, ["dvh", str(folder)])
    assert res.exit_code != 0
    assert "no structure set shares the dose's PatientID" in res.output
