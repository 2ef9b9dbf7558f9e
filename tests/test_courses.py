"""Treatment courses (DOMAIN.md section 8): every fraction group of a plan, every treatment plan of a
patient in one frame of reference, the course's organ doses graded on its composite dose.

The cases come from the liver generator (fixtures/cases.py): an unlinked boost (primary 50 Gy /
25 fx with a 52 Gy hot spot in the duodenum, boost 10 Gy / 5 fx adding 10.4 Gy on the same
spot), the same boost on a 4 mm grid with a dose linear in position, a boost without its dose,
and one plan of two fraction groups (25 + 5 x 2 Gy).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from click.testing import CliRunner

from fixtures import cases
from rtqa.cli.app import cli
from rtqa.discovery.batch import run_batch
from rtqa.discovery.grouping import discover
from rtqa.discovery.load import load_case
from rtqa.dvh.grid import compute_common_grid, sum_on_grid
from rtqa.io import read_dose
from rtqa.model import DoseGrid
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from rtqa.report.model import PlanReport

PROTOCOL = load_protocol()
SCHEMA = json.loads((Path(__file__).parents[1] / "rtqa" / "schemas" / "report-v1.schema.json").read_text())


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("courses")
    cases.write_unlinked_boost(str(out))
    cases.write_unlinked_boost(str(out), name="liver_boost_grid", patient_id="HCC-BOOSTGRID", boost_grid="linear")
    cases.write_unlinked_boost(str(out), name="liver_boost_no_dose", patient_id="HCC-NODOSE", boost_dose=False)
    cases.write_two_fraction_groups(str(out))
    return out


def check(*paths: str | Path) -> list[PlanReport]:
    found = discover([str(p) for p in paths])
    return run_batch(found.plan_sets, PROTOCOL)


def findings(report: PlanReport, rule: str) -> list:
    return [f for f in report.findings if f.rule == rule]


def grade_of(report: PlanReport, rule: str) -> Grade:
    (f,) = findings(report, rule)
    return f.grade


# -- the composite grid: closed forms ----------------------------------------------------------


def linear(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return 1.0 + 0.5 * x - 0.25 * y + 0.125 * z


def grid(origin: tuple[float, float, float], step: float, shape: tuple[int, int, int], f) -> DoseGrid:
    nz, ny, nx = shape
    x = origin[0] + step * np.arange(nx)
    y = origin[1] + step * np.arange(ny)
    z = origin[2] + step * np.arange(nz)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    return DoseGrid(f(xx, yy, zz), x, y, z)


def test_doses_on_different_grids_sum_on_the_finest_grid_over_both_extents_exactly_for_linear_doses():
    """Trilinear interpolation reproduces a function linear in x, y and z exactly between the
    nodes of its grid: the composite at every common node inside the coarse grid's nodes must be
    the sum of the two closed forms (to float rounding)."""
    fine = grid((0.0, 0.0, 0.0), 2.0, (10, 12, 14), linear)
    coarse = grid((3.3, -5.1, 1.7), 3.0, (6, 7, 9), lambda x, y, z: 2.0 * linear(x, y, z))
    common = compute_common_grid([fine, coarse], names=["primary", "boost"])
    assert common.resampled == (1,)  # the finest grid keeps its nodes
    assert "resampled trilinearly onto it: boost (3 x 3 x 3 mm)" in common.statement
    np.testing.assert_allclose(np.diff(common.x_mm), 2.0)
    # the common grid covers both grids' extents (whole voxels: half a step beyond the outer nodes)
    pairs = zip("xyz", (fine.x_mm, fine.y_mm, fine.z_mm), (coarse.x_mm, coarse.y_mm, coarse.z_mm), strict=True)
    for axis, f, c in pairs:
        ax = getattr(common, f"{axis}_mm")
        assert ax[0] <= min(f[0], c[0] - 1.5) + 2.0 and ax[-1] >= max(f[-1], c[-1] + 1.5) - 2.0
        assert np.isin(np.round(f, 6), np.round(ax, 6)).all()  # the fine grid's own nodes are kept
    total = sum_on_grid([fine, coarse], common)
    zz, yy, xx = np.meshgrid(common.z_mm, common.y_mm, common.x_mm, indexing="ij")
    inside = (
        (xx >= coarse.x_mm[0]) & (xx <= coarse.x_mm[-1]) & (yy >= coarse.y_mm[0]) & (yy <= coarse.y_mm[-1])
        & (zz >= coarse.z_mm[0]) & (zz <= coarse.z_mm[-1])
        & (xx >= fine.x_mm[0]) & (xx <= fine.x_mm[-1]) & (yy >= fine.y_mm[0]) & (yy <= fine.y_mm[-1])
        & (zz >= fine.z_mm[0]) & (zz <= fine.z_mm[-1])
    )  # fmt: skip
    assert inside.sum() > 100
    np.testing.assert_allclose(total.dose_gy[inside], 3.0 * linear(xx, yy, zz)[inside], rtol=0, atol=1e-9)
    # far outside a grid (beyond half a voxel) its dose is 0 Gy, never spread
    far = (xx > fine.x_mm[-1] + 1.0 + 1e-9) & ~((xx <= coarse.x_mm[-1] + 1.5) & (xx >= coarse.x_mm[0] - 1.5))
    assert not far.any() or np.all(total.dose_gy[far] == 0.0)


def test_doses_on_one_grid_are_summed_without_resampling():
    a = grid((0.0, 0.0, 0.0), 3.0, (4, 5, 6), linear)
    common = compute_common_grid([a, a])
    assert common.resampled == () and common.statement == "the doses share one grid: no resampling"
    np.testing.assert_array_equal(sum_on_grid([a, a], common).dose_gy, 2 * a.dose_gy)


# -- fraction groups -----------------------------------------------------------------------------


def test_a_plan_of_two_fraction_groups_is_read_over_both_groups(tree):
    """Issue 17: 25 + 5 x 2 Gy read from group 1 alone gave 2.40 Gy per fraction (60 Gy / 25) and a
    16.7 % disagreement (BeamDose 50 Gy against the 60 Gy dose reference)."""
    (report,) = check(tree / "liver_two_groups")
    rx = report.prescription
    assert rx is not None and rx["total_gy"] == 60.0 and rx["fractions"] == 30 and rx["per_fraction_gy"] == 2.0
    per_fraction = findings(report, "FX_DOSE_PER_FRACTION")
    assert [f.value for f in per_fraction] == [2.0, 2.0]
    assert all(f.grade is Grade.PER_PROTOCOL for f in per_fraction)
    assert ["fraction group 1: 25 fractions" in f.message for f in per_fraction] == [True, False]
    assert "fraction group 2: 5 fractions" in per_fraction[1].message
    assert grade_of(report, "RX_AGREEMENT") is Grade.PER_PROTOCOL
    assert grade_of(report, "FX_TOTAL_DOSE") is Grade.PER_PROTOCOL
    assert not [w for w in report.warnings if "disagree" in w]
    assert report.course is not None
    (plan,) = report.course["plans"]
    assert plan["fraction_groups"] == [
        {"number": 1, "fractions": 25, "per_fraction_gy": 2.0},
        {"number": 2, "fractions": 5, "per_fraction_gy": 2.0},
    ]


# -- unlinked boost: the course ------------------------------------------------------------------


def test_an_unlinked_boost_joins_its_primary_in_one_course(tree):
    (ps,) = [p for p in discover([str(tree / "liver_unlinked_boost")]).plan_sets if p.plans]
    assert [h.plan_label for h in ps.plans] == ["HCC IMRT", "HCC boost"]
    assert ps.course is not None and ps.course.key == ("rtqa synthetic centre", "HCC-UNLINKED")
    (link,) = ps.course.links
    assert "not linked by a plan reference" in link


def test_each_plan_alone_passes_the_duodenum_and_the_course_does_not(tree):
    folder = tree / "liver_unlinked_boost"
    ss = folder / "RS.dcm"
    (primary,) = check(folder / "RP.dcm", ss, folder / "RD_PLAN.dcm")
    (boost,) = check(folder / "RP_BOOST.dcm", ss, folder / "RD_BOOST.dcm")
    assert grade_of(primary, "DUODENUM_MAX") is Grade.PER_PROTOCOL
    assert grade_of(boost, "DUODENUM_MAX") is Grade.PER_PROTOCOL
    # the boost alone is the false "10 Gy total" deviation of the issue
    assert grade_of(boost, "FX_TOTAL_DOSE") is Grade.DEVIATION_UNACCEPTABLE
    (course,) = check(folder)
    (duodenum,) = findings(course, "DUODENUM_MAX")
    # D0.03cc of the sum is at least the larger plan's and at most the sum of the two plans' maxima
    first, second = (findings(r, "DUODENUM_MAX")[0].value for r in (primary, boost))
    assert duodenum.grade is Grade.DEVIATION_UNACCEPTABLE
    assert max(first, second) < duodenum.value <= first + second + 0.01
    assert duodenum.value > 58.0
    assert grade_of(course, "FX_TOTAL_DOSE") is Grade.PER_PROTOCOL  # 50 + 10 Gy
    assert [f.value for f in findings(course, "FX_DOSE_PER_FRACTION")] == [2.0, 2.0]
    assert course.plan_uids == (primary.plan_uid, boost.plan_uid)
    assert course.course is not None and course.course["composite"].endswith("no resampling")
    assert [p["own_dose"] for p in course.course["plans"]] == [True, True]


def test_a_boost_on_another_grid_is_resampled_exactly_and_the_report_says_so(tree):
    """The boost's dose is linear in position on a 4 mm grid offset from the primary's 3 mm grid:
    the composite minus the primary's own dose must give back the closed form at every node
    inside the boost grid's nodes (to the 16-bit quantisation of the stored doses)."""
    folder = tree / "liver_boost_grid"
    (ps,) = [p for p in discover([str(folder)]).plan_sets if p.plans]
    case = load_case(ps)
    assert case.dose is not None and case.composite is not None
    assert "resampled trilinearly onto it: HCC boost (4 x 4 x 4 mm)" in case.composite
    primary = read_dose(str(folder / "RD_PLAN.dcm"))
    np.testing.assert_allclose(case.dose.x_mm, primary.x_mm)  # the boost grid lies inside the primary's
    boost = case.dose.dose_gy - primary.dose_gy
    zz, yy, xx = np.meshgrid(case.dose.z_mm, case.dose.y_mm, case.dose.x_mm, indexing="ij")
    g = cases.BOOST_LINEAR_GRID
    lo = np.array(g["origin_mm"])
    hi = lo + g["spacing_mm"] * (np.array(g["shape"][::-1]) - 1)
    inside = (xx >= lo[0]) & (xx <= hi[0]) & (yy >= lo[1]) & (yy <= hi[1]) & (zz >= lo[2]) & (zz <= hi[2])
    assert inside.sum() > 10_000
    expected = cases.boost_linear_dose(xx, yy, zz)
    # stored as 32-bit integers times DoseGridScaling: well under 1e-4 Gy at these doses
    np.testing.assert_allclose(boost[inside], expected[inside], atol=1e-4)
    # beyond half a boost voxel outside its grid the boost adds nothing
    outside = (xx < lo[0] - 2.0 - 1e-6) | (xx > hi[0] + 2.0 + 1e-6)
    assert np.all(boost[outside] == 0.0)
    assert [p.fractions for p in case.plan_doses] == [25, 5]  # each plan keeps its own dose and fractions (EQD2)
    assert all(p.dose is not None for p in case.plan_doses)
    (report,) = check(folder)
    assert "HCC boost (4 x 4 x 4 mm)" in report.course["composite"]
    # each plan's own grid is graded: the 4 mm boost grid is a variation, not hidden by the 3 mm sum
    grids = findings(report, "DOSE_GRID")
    assert [(f.value, f.grade) for f in grids] == [(3.0, Grade.PER_PROTOCOL), (4.0, Grade.VARIATION_ACCEPTABLE)]
    assert "plan HCC boost" in grids[1].message


def test_a_course_without_the_dose_of_one_plan_is_a_query_naming_the_plan(tree):
    (report,) = check(tree / "liver_boost_no_dose")
    (f,) = report.findings
    assert f.rule == "COURSE_DOSE" and f.grade is Grade.NOT_EVALUABLE and f.category == "query"
    assert "HCC boost" in f.message and "plans without dose: HCC boost" == f.value_text
    assert report.grade is Grade.NOT_EVALUABLE and not report.complete and report.verdict == "not_evaluable"
    assert not report.resubmit  # a question to the centre, not a broken export
    assert [p["plan_label"] for p in report.course["plans"]] == ["HCC IMRT", "HCC boost"]


def test_a_linked_boost_is_the_same_course(tmp_path):
    """A boost linked to its primary (PRIOR: delivered before this plan) forms the same course and
    is graded on the same composite as the unlinked one."""
    cases.write_unlinked_boost(str(tmp_path), name="linked", patient_id="HCC-LINKED", boost_relationship="PRIOR")
    (report,) = check(tmp_path / "linked")
    assert len(report.plan_uids) == 2
    assert grade_of(report, "DUODENUM_MAX") is Grade.DEVIATION_UNACCEPTABLE


def test_the_json_report_carries_the_course_and_validates(tree):
    result = CliRunner().invoke(cli, ["check", str(tree), "--format", "json"])
    assert result.exit_code & 1 and result.exit_code & 4, result.output  # deviations; a course not evaluable
    doc = json.loads(result.stdout)
    jsonschema.validate(doc, SCHEMA)
    by_patient = {p["patient_id"]: p for p in doc["plans"]}
    unlinked = by_patient["HCC-UNLINKED"]["course"]
    assert [p["plan_label"] for p in unlinked["plans"]] == ["HCC IMRT", "HCC boost"]
    assert [p["total_gy"] for p in unlinked["plans"]] == [50.0, 10.0]
    assert by_patient["HCC-NODOSE"]["findings"][0]["category"] == "query"
    assert os.path.basename(by_patient["HCC-2FG"]["inputs"][0]["path"]) == "RP.dcm"
