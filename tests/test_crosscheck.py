"""Cross-check with dicompyler-core 0.5.6, the common open-source reference (``tox -e crosscheck``).

dicompyler-core needs pydicom < 3, so it runs in its own interpreter, named by the
environment variable RTQA_DICOMPYLER_PYTHON (tox sets it; bench/dicompyler_env.py makes one).
These tests are deselected by default (marker ``crosscheck``).

What they document, each against the generator's truth:
* where both agree: large organs in the liver case (mean and D95 within 0.5 % of Rx);
* nearest-bin look-ups: dicompyler-core reports D95 = 0 Gy for a 4 cc GTV in a uniform
  52 Gy dose (a plateau of its cumulative histogram), rtqa reports 52 Gy;
* volumes of a 2 cc sphere: both within 2 % of the contour-stack truth (dicompyler-core takes
  the volume from the contours by default), rtqa within 0.2 %;
* point sampling on contour planes only: in a 1 Gy/mm gradient dicompyler-core's D2% of a sphere
  misses the hottest slab, rtqa's does not;
* its interpolation mode shifts dose by half a pixel: the mean of a sphere in an x gradient is
  biased by more than 1 Gy.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from fixtures import cases
from rtqa.dvh.engine import compute_dvh
from rtqa.dvh.geometry import roi_stack
from rtqa.dvh.metrics import evaluate_metric
from rtqa.evaluation.casedvh import compute_case_dvhs
from rtqa.io import read_dose, read_structure_set
from tests.conftest import case

pytestmark = pytest.mark.crosscheck
RUNNER = Path(__file__).resolve().parents[1] / "bench" / "dicompyler_runner.py"


def dicompyler(jobs: list[dict]) -> list[dict]:
    python = os.environ.get("RTQA_DICOMPYLER_PYTHON")
    if not python:
        pytest.fail("RTQA_DICOMPYLER_PYTHON is not set: run these tests with `tox -e crosscheck`")
    for job in jobs:
        job.setdefault("repeats", 1)
        job.setdefault("mode", "default")
    proc = subprocess.run([python, str(RUNNER)], input=json.dumps(jobs), capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def _phantom(tmp_path, shape, dose, spacing, grid):
    folder = cases.write_phantom_case(str(tmp_path), shape, dose, spacing, grid)
    truth = json.loads(Path(folder + ".truth.json").read_text())["stack"]
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    dvh = compute_dvh(roi_stack(ss.rois[0], ss.plane_positions_mm), read_dose(os.path.join(folder, "RD.dcm")))
    job = {"rs": os.path.join(folder, "RS.dcm"), "rd": os.path.join(folder, "RD.dcm"), "roi": 1, "pixel_mm": grid}
    return truth, dvh, job


def test_agreement_on_large_organs_of_the_liver_case(liver_tree):
    folder = case(liver_tree, "liver_clean")
    truth = json.loads(Path(folder + ".truth.json").read_text())["structures"]
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    names = ["Liver", "Kidney_L", "Kidney_R", "SpinalCord", "Stomach"]
    ours = {s.name: s.dvh for s in compute_case_dvhs(ss, read_dose(os.path.join(folder, "RD_PLAN.dcm")), names=names)}
    numbers = {r.name: r.number for r in ss.rois}
    theirs = dicompyler(
        [
            {
                "rs": os.path.join(folder, "RS.dcm"),
                "rd": os.path.join(folder, "RD_PLAN.dcm"),
                "roi": numbers[n],
                "pixel_mm": 3.0,
            }
            for n in names
        ]
    )
    for name, dc in zip(names, theirs, strict=True):
        assert dc["mean_gy"] == pytest.approx(ours[name].mean_gy, abs=0.25), name
        assert dc["D95"] == pytest.approx(evaluate_metric(ours[name], "D95%[Gy]"), abs=0.25), name
        assert ours[name].mean_gy == pytest.approx(truth[name]["mean_gy"], abs=0.25), name


def test_nearest_bin_plateau_gives_dicompyler_d95_of_zero_for_a_small_gtv(liver_tree):
    folder = case(liver_tree, "liver_clean")
    truth = json.loads(Path(folder + ".truth.json").read_text())["structures"]["GTVn"]
    ss = read_structure_set(os.path.join(folder, "RS.dcm"))
    (ours,) = compute_case_dvhs(ss, read_dose(os.path.join(folder, "RD_PLAN.dcm")), names=["GTVn"])
    (theirs,) = dicompyler(
        [
            {
                "rs": os.path.join(folder, "RS.dcm"),
                "rd": os.path.join(folder, "RD_PLAN.dcm"),
                "roi": ss.roi("GTVn").number,
                "pixel_mm": 3.0,
            }
        ]
    )
    assert theirs["D95"] < 1.0  # its D95 falls off the plateau of its histogram
    assert evaluate_metric(ours.dvh, "D95%[Gy]") == pytest.approx(truth["D95%"], abs=0.1)


def test_volumes_of_a_small_sphere_agree(tmp_path):
    # with calculate_full_volume (its default) dicompyler-core takes the volume from the contours
    results = [_phantom(tmp_path, "sphere8", "uniform", 1.0, grid) for grid in (2.0, 3.0)]
    theirs = dicompyler([job for _, _, job in results])
    truth = results[0][0]["volume_cc"]
    assert all(abs(dc["volume_cc"] - truth) / truth < 0.02 for dc in theirs)
    assert all(abs(dvh.volume_cc - truth) / truth < 0.002 for _, dvh, _ in results)


def test_dicompyler_misses_the_hottest_slab_in_a_z_gradient(tmp_path):
    truth, ours, job = _phantom(tmp_path, "sphere20", "zgrad", 3.0, 2.0)
    (theirs,) = dicompyler([job])
    assert abs(evaluate_metric(ours, "D2%[Gy]") - truth["D2%"]) < 0.05
    assert abs(theirs["D2"] - truth["D2%"]) > 0.5


def test_dicompyler_interpolation_shifts_dose_by_half_a_pixel(tmp_path):
    truth, ours, job = _phantom(tmp_path, "sphere20", "xgrad", 3.0, 3.0)
    (theirs,) = dicompyler([{**job, "mode": "interp"}])
    assert abs(ours.mean_gy - truth["mean_gy"]) < 0.01
    assert abs(theirs["mean_gy"] - truth["mean_gy"]) > 1.0
