"""DVH accuracy against the generator's truth (fixtures/phantoms.py, fixtures/truth.py).

The reference is the exact value of the contour-stack convention (polygons as written, slabs
halfway to neighbouring planes, half-slab end caps): that is what a correct engine must
reproduce. The gap to the analytic solid is a property of contouring, not of the engine, and
is recorded separately (``test_stack_differs_from_solid``).

Tolerances (issue 3):
* >= 5 cc: volume within 0.5 % (partial-volume sampling error only);
  mean, D98/D95/D50/D2 %, D2cc within max(1 % of value, 0.5 % of the 50 Gy reference), since
  point sampling with 2-3 mm dose voxels in a 1 Gy/mm gradient is the dominant error;
  Min/Max within max(2 %, 0.5 % of reference): extremes sit in one sample, hardest to resolve;
* 0.5-5 cc: volume and dose metrics within max(3 %, 0.5 % of reference);
* normal liver (Liver - GTVs): volume and mean within 0.5 %.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fixtures import cases, phantoms
from rtqa.dvh.engine import compute_dvh
from rtqa.dvh.geometry import EndCap, roi_stack
from rtqa.dvh.metrics import evaluate_metric
from rtqa.evaluation.casedvh import compute_case_dvhs
from rtqa.io import read_dose, read_structure_set
from tests.conftest import case

REFERENCE = phantoms.REFERENCE_DOSE_GY
CASES = [
    (shape, dose, spacing, grid)
    for shape in cases.PHANTOM_SHAPES
    for dose in phantoms.DOSES
    for spacing in cases.PHANTOM_SPACINGS
    for grid in cases.PHANTOM_GRIDS
]


def _tolerances(volume_cc: float) -> tuple[float, float, float]:
    """(volume rel, dose rel, extreme rel) with the absolute floor applied by the caller."""
    if volume_cc >= 5.0:
        return 0.005, 0.01, 0.02
    return 0.03, 0.03, 0.03


def _close(value: float, truth: float, rel: float) -> bool:
    return abs(value - truth) <= max(rel * abs(truth), 0.005 * REFERENCE)


@pytest.mark.parametrize(("shape", "dose", "spacing", "grid"), CASES, ids=lambda v: str(v))
def test_phantom_matches_contour_stack_truth(phantom_tree, shape, dose, spacing, grid):
    folder = case(phantom_tree, cases.phantom_case_name(shape, dose, spacing, grid))
    truth = json.loads(Path(folder + ".truth.json").read_text())["stack"]
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    dvh = compute_dvh(roi_stack(ss.rois[0], ss.plane_positions_mm), read_dose(os.path.join(folder, "RD.dcm")))
    vol_rel, dose_rel, ext_rel = _tolerances(truth["volume_cc"])
    assert abs(dvh.volume_cc - truth["volume_cc"]) <= vol_rel * truth["volume_cc"]
    assert dvh.uncovered_cc == 0.0
    assert _close(dvh.mean_gy, truth["mean_gy"], dose_rel)
    for p in (98, 95, 50, 2):
        got = evaluate_metric(dvh, f"D{p}%[Gy]")
        assert _close(got, truth[f"D{p}%"], dose_rel), (p, got, truth[f"D{p}%"])
    if "D2cc" in truth:
        assert _close(evaluate_metric(dvh, "D2cc[Gy]"), truth["D2cc"], dose_rel)
    assert _close(dvh.min_gy, truth["min_gy"], ext_rel)
    assert _close(dvh.max_gy, truth["max_gy"], ext_rel)


def test_uniform_dose_has_no_nearest_bin_plateau(phantom_tree):
    folder = case(phantom_tree, cases.phantom_case_name("sphere6", "uniform", 3.0, 3.0))
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    dvh = compute_dvh(roi_stack(ss.rois[0], ss.plane_positions_mm), read_dose(os.path.join(folder, "RD.dcm")))
    # a uniform 50 Gy gives D98% = 50 Gy (within one 0.01 Gy bin), never 0
    assert evaluate_metric(dvh, "D98%[Gy]") == pytest.approx(50.0, abs=0.011)
    assert dvh.volume_cc < 1.0 and not dvh.warnings


def test_stack_differs_from_solid_as_the_convention_says(phantom_tree):
    """The cylinder's stack is longer than the solid by the half-slab caps: (H + s)/H."""
    folder = case(phantom_tree, cases.phantom_case_name("cylinder15", "uniform", 5.0, 2.0))
    truth = json.loads(Path(folder + ".truth.json").read_text())
    ratio = truth["stack"]["volume_cc"] / truth["solid"]["volume_cc"]
    # planes at -20..20 every 5 mm: stack height 45 mm over a 40 mm solid; polygon area deficit ~0.1 %
    assert ratio == pytest.approx(45.0 / 40.0, rel=0.002)


def test_end_cap_none_removes_half_a_slab_at_each_end(phantom_tree):
    folder = case(phantom_tree, cases.phantom_case_name("cylinder15", "uniform", 5.0, 2.0))
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    half = roi_stack(ss.rois[0], ss.plane_positions_mm)
    none = roi_stack(ss.rois[0], ss.plane_positions_mm, end_cap=EndCap.NONE)
    area = ss.rois[0].planes[0].rings[0]
    import shapely

    one_slab_cc = shapely.Polygon(area).area * 5.0 / 1000
    assert half.volume_cc - none.volume_cc == pytest.approx(one_slab_cc, rel=1e-6)


LIVER_KEYS = cases.TRUTH_STRUCTURES


@pytest.mark.parametrize("name", ["liver_clean", "liver_high_liver_mean"])
def test_liver_case_matches_generator_truth(liver_tree, name):
    folder = case(liver_tree, name)
    truth = json.loads(Path(folder + ".truth.json").read_text())["structures"]
    rx = 50.0
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    dose = read_dose(os.path.join(folder, "RD_PLAN.dcm"))
    results = {
        s.name: s
        for s in compute_case_dvhs(ss, dose, names=LIVER_KEYS, derived=[("Liver-GTV", "Liver - (GTVp | GTVv | GTVn)")])
    }
    normal = results["Liver-GTV"].dvh
    assert normal.volume_cc == pytest.approx(truth["Liver-GTV"]["volume_cc"], rel=0.005)
    assert normal.mean_gy == pytest.approx(truth["Liver-GTV"]["mean_gy"], rel=0.005)
    for key in LIVER_KEYS:
        dvh, t = results[key].dvh, truth[key]
        vol_rel, dose_rel, _ = _tolerances(t["volume_cc"])
        assert abs(dvh.volume_cc - t["volume_cc"]) <= vol_rel * t["volume_cc"], key
        assert abs(dvh.mean_gy - t["mean_gy"]) <= max(dose_rel * t["mean_gy"], 0.005 * rx), key
        for p in (98, 95, 50, 2):
            got, want = evaluate_metric(dvh, f"D{p}%[Gy]"), t[f"D{p}%"]
            assert abs(got - want) <= max(dose_rel * want, 0.005 * rx), (key, p, got, want)


def test_dose_grid_not_covering_the_liver_reports_uncovered_volume(liver_tree):
    folder = case(liver_tree, "liver_dose_not_covering")
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    dose = read_dose(os.path.join(folder, "RD_PLAN.dcm"))
    (liver,) = compute_case_dvhs(ss, dose, names=["Liver"])
    assert liver.dvh.uncovered_cc > 50
    # the uncovered part is kept out of the bins: the curve starts at the covered volume
    assert liver.dvh.volume_ge_cc[0] == pytest.approx(liver.dvh.covered_cc, rel=1e-9)
    assert any("outside the dose grid" in w for w in liver.dvh.warnings)


def test_missing_and_empty_structures_are_not_zero_dose(liver_tree):
    folder = case(liver_tree, "liver_empty_roi")
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    dose = read_dose(os.path.join(folder, "RD_PLAN.dcm"))
    res = {s.name: s for s in compute_case_dvhs(ss, dose, names=["Stomach", "Pancreas"])}
    assert res["Stomach"].dvh is None and "no closed contours" in res["Stomach"].problem
    assert res["Pancreas"].dvh is None and "no ROI named 'Pancreas'" in res["Pancreas"].problem
