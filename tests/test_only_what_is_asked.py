"""Work the report does not need is not done (issue 21), and what it gives is unchanged.

* The coverage checks need only the volume of each ROI outside the dose grid: when every
  end-cap variant of an ROI lies inside the grid's coverage, that volume is 0 without a DVH
  (``CaseContext.uncovered_by_end_cap``, ``rtqa.dvh.engine.within_coverage``).
* A structure that no rule grades is listed in the report under the protocol's convention only
  (``CaseContext.dvh(..., all_conventions=False)``); a rule that asks later gets the others.

The reference each time is the value a fresh context gives by computing every DVH.
"""

from __future__ import annotations

import numpy as np
import pytest

from rtqa.case import LoadedCase, PlanSet
from rtqa.dvh.engine import compute_dvh, within_coverage
from rtqa.dvh.geometry import EndCap, Slab, SlabStack
from rtqa.errors import RtqaError
from rtqa.evaluation.context import CaseContext
from rtqa.model import ContourPlane, DoseGrid, Roi, StructureSet
from rtqa.protocol.loader import load_protocol

PROTOCOL = load_protocol()
ZS = (0.0, 2.0, 4.0, 6.0)


def _grid() -> DoseGrid:
    """A 2 mm grid over x, y in [0, 100] mm and z in [-4, 10] mm, a gradient along x."""
    x = np.arange(0.0, 100.01, 2.0)
    z = np.arange(-4.0, 10.01, 2.0)
    _, _, xx = np.meshgrid(z, x, x, indexing="ij")
    return DoseGrid(10.0 + 0.2 * xx, x, x.copy(), z)


def _roi(number: int, name: str, x0: float, size: float = 20.0) -> Roi:
    ring = np.array([[x0, 10.0], [x0 + size, 10.0], [x0 + size, 10.0 + size], [x0, 10.0 + size]])
    return Roi(number, name, "", None, tuple(ContourPlane(z, (ring,)) for z in ZS))


def _context(rois: list[Roi]) -> CaseContext:
    ss = StructureSet("ss.dcm", "1.2.3", "P1", "Doe", "SS", None, tuple(rois))
    case = LoadedCase(PlanSet("P1", (), None, ()), (), ss, _grid(), None, (), ("read",))
    return CaseContext(case, PROTOCOL, None)


# inside; reaching past the grid's last column (100 mm + 1 mm of coverage); ending exactly on
# the coverage limit (101 mm), where the shortcut must not guess
ROIS = [_roi(1, "Stomach", 30.0), _roi(2, "Duodenum", 90.0), _roi(3, "Heart", 81.0)]


@pytest.mark.parametrize(("structure", "index"), [("Stomach", 0), ("Duodenum", 1), ("Heart", 2)])
def test_the_uncovered_volume_without_a_dvh_is_the_dvh_s(structure, index):
    reference = {cap: d.uncovered_cc for cap, d in _context(ROIS).dvh_by_end_cap(structure, (index,)).items()}
    c = _context(ROIS)
    got = c.uncovered_by_end_cap(structure, (index,))
    assert got == pytest.approx(reference, abs=1e-12)
    assert set(got) == set(EndCap)
    if structure == "Stomach":
        assert all(v == 0 for v in got.values())
        assert (structure, ()) not in c.dvhs  # no DVH was needed to know it
    if structure == "Duodenum":
        assert all(v > 0.1 for v in got.values())  # 9 mm of 20 beyond the coverage


def test_within_coverage_answers_yes_only_with_a_margin():
    dose = _grid()
    inside = SlabStack("in", (Slab(-1.0, 1.0, (np.array([[0.0, 0.0], [99.0, 0.0], [99.0, 99.0]]),)),), EndCap.NONE)
    assert within_coverage(inside, dose) and compute_dvh(inside, dose).uncovered_cc == 0.0
    ring = np.array([[0.0, 0.0], [101.0, 0.0], [101.0, 50.0]])  # on the coverage limit in x
    assert not within_coverage(SlabStack("edge", (Slab(-1.0, 1.0, (ring,)),), EndCap.NONE), dose)
    low = SlabStack("low", (Slab(-5.5, -4.0, (np.array([[0.0, 0.0], [9.0, 0.0], [9.0, 9.0]]),)),), EndCap.NONE)
    assert not within_coverage(low, dose)  # below the first plane's half interval (-5 mm)
    assert not within_coverage(SlabStack("empty", (), EndCap.NONE), dose)


def test_a_structure_listed_under_one_convention_gets_the_others_when_a_rule_asks():
    reference = _context(ROIS).dvh_by_end_cap("Stomach", (0,))
    c = _context(ROIS)
    listed = c.dvh("Stomach", all_conventions=False)
    assert listed.mean_gy == reference[PROTOCOL.end_cap].mean_gy
    later = c.dvh_by_end_cap("Stomach")
    assert later[PROTOCOL.end_cap] is listed  # the protocol's DVH is kept, the others added
    assert set(later) == set(reference)
    for cap, dvh in reference.items():
        assert later[cap].volume_cc == dvh.volume_cc and later[cap].mean_gy == dvh.mean_gy
        assert later[cap].max_gy == dvh.max_gy and later[cap].min_gy == dvh.min_gy
        # and each is that convention's own (the engine on the convention's stack, not through
        # the context): 20 x 20 mm over 8 mm with half slabs at the ends, 6 mm without
        assert later[cap].volume_cc == compute_dvh(c.stack("Stomach", (), cap), c.dose).volume_cc
    assert later[EndCap.NONE].volume_cc == pytest.approx(2.4) and later[EndCap.HALF_SLAB].volume_cc == pytest.approx(
        3.2
    )


def test_a_grid_uniform_only_to_1e4_or_not_at_all_gets_no_shortcut():
    # found by review: the engine places column j at x[0] + j dx; on an axis whose first step is
    # 1e-4 mm short (accepted as uniform) its coverage ends 0.02 mm before x[-1] + dx / 2, and an
    # ROI ending between the two was "inside" for the shortcut and 0.16 cc outside for the DVH
    n = 201
    x = np.concatenate([[0.0], 2.4999 + 2.5 * np.arange(n - 1)])
    y, z = np.arange(0.0, 200.01, 2.5), np.arange(-10.0, 60.01, 2.5)
    dose = DoseGrid(np.full((z.size, y.size, x.size), 10.0), x, y.copy(), z)
    x1 = x[-1] + 2.4999 / 2 - 0.001
    ring = np.array([[x1 - 60, 20.0], [x1, 20.0], [x1, 180.0], [x1 - 60, 180.0]])
    stack = SlabStack(
        "edge", tuple(Slab(zz - 1.25, zz + 1.25, (ring,)) for zz in np.arange(0.0, 50.01, 2.5)), EndCap.NONE
    )
    assert compute_dvh(stack, dose).uncovered_cc > 0.1
    assert not within_coverage(stack, dose)
    # an axis the engine refuses as not uniform: no answer from the shortcut either
    bent = np.concatenate([np.arange(0.0, 100.0, 2.5), 100.0 + np.arange(0.0, 100.01, 2.0)])
    odd = DoseGrid(np.full((z.size, y.size, bent.size), 10.0), bent, y.copy(), z)
    inside = SlabStack("in", (Slab(0.0, 2.5, (np.array([[50.0, 50.0], [60.0, 50.0], [60.0, 60.0]]),)),), EndCap.NONE)
    assert not within_coverage(inside, odd)


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> SlabStack:
    ring = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return SlabStack("box", (Slab(z0, z1, (ring,)),), EndCap.NONE)


# inward distance of a face from the coverage limit (mm) -> whether the shortcut may say inside;
# the margin is 1e-6 of the larger in-plane spacing (3e-6 mm here)
FACE_OFFSETS = [(0.01, True), (1e-4, True), (1e-6, False), (1e-7, False), (0.0, False), (-0.01, False), (-2.0, False)]


@pytest.mark.parametrize("face", ["x0", "x1", "y0", "y1", "z0", "z1"])
@pytest.mark.parametrize(("inward", "inside"), FACE_OFFSETS)
def test_within_coverage_on_every_face_of_the_grid(face, inward, inside):
    """A box with one face moved to the grid's coverage limit (half a voxel beyond the outermost
    nodes, half an interval along z) give or take ``inward``; every other face well inside. The
    shortcut says inside only beyond its margin, and then the engine finds nothing uncovered."""
    x = np.arange(-4.5, 40.0, 3.0)  # nodes -4.5 .. 37.5, coverage -6 .. 39 (x[0] not 0: the limits use it)
    y = np.arange(7.0, 40.0, 2.5)  # nodes 7 .. 39.5, coverage 5.75 .. 40.75
    z = np.arange(-3.0, 20.0, 2.0)  # planes -3 .. 19, coverage -4 .. 20
    dose = DoseGrid(np.full((z.size, y.size, x.size), 10.0), x, y, z)
    limits = {"x0": -6.0, "x1": 39.0, "y0": 5.75, "y1": 40.75, "z0": -4.0, "z1": 20.0}
    faces = {"x0": 0.0, "x1": 20.0, "y0": 15.0, "y1": 30.0, "z0": 2.0, "z1": 10.0}
    sign = 1.0 if face.endswith("0") else -1.0  # inward is up from a low face, down from a high one
    faces[face] = limits[face] + sign * inward
    box = _box(*(faces[k] for k in ("x0", "x1", "y0", "y1", "z0", "z1")))
    assert within_coverage(box, dose) is inside
    if inside:
        assert compute_dvh(box, dose).uncovered_cc == 0.0
    if inward < -1.0:  # the engine resolves a tenth of a voxel in plane and a sub-slab along z
        assert compute_dvh(box, dose).uncovered_cc > 0.0


def test_within_coverage_at_exactly_its_margin_and_on_small_or_odd_grids():
    x = np.arange(-4.5, 40.0, 3.0)
    y = np.arange(7.0, 40.0, 2.5)
    z = np.arange(-3.0, 20.0, 2.0)
    dose = DoseGrid(np.full((z.size, y.size, x.size), 10.0), x, y, z)
    margin = 1e-6 * 3.0
    on_margin = {
        "x0": (x[0] - 3.0 / 2 + margin, 20.0, 15.0, 30.0, 2.0, 10.0),
        "y0": (0.0, 20.0, y[0] - 2.5 / 2 + margin, 30.0, 2.0, 10.0),
        "z0": (0.0, 20.0, 15.0, 30.0, -4.0 + margin, 10.0),
        "x1": (0.0, x[-1] + 3.0 / 2 - margin, 15.0, 30.0, 2.0, 10.0),
        "y1": (0.0, 20.0, 15.0, y[-1] + 2.5 / 2 - margin, 2.0, 10.0),
        "z1": (0.0, 20.0, 15.0, 30.0, 2.0, 20.0 - margin),
    }
    for face, bounds in on_margin.items():
        assert not within_coverage(_box(*bounds), dose), face  # strictly beyond the margin only
    # a single column or row: no answer; two of each: an answer
    one = DoseGrid(np.full((z.size, y.size, 1), 10.0), np.array([0.0]), y, z)
    assert not within_coverage(_box(-0.5, 0.5, 15.0, 30.0, 2.0, 10.0), one)
    single_row = DoseGrid(np.full((z.size, 1, x.size), 10.0), x, np.array([20.0]), z)
    assert not within_coverage(_box(0.0, 20.0, 19.5, 20.5, 2.0, 10.0), single_row)
    two = DoseGrid(np.full((z.size, 2, 2), 10.0), np.array([0.0, 3.0]), np.array([10.0, 12.5]), z)
    assert within_coverage(_box(-1.0, 4.0, 9.0, 13.0, 2.0, 10.0), two)
    # one plane: its coverage along z is one column spacing either side
    flat = DoseGrid(np.full((1, y.size, x.size), 10.0), x, y, np.array([5.0]))
    assert within_coverage(_box(0.0, 20.0, 15.0, 30.0, 2.1, 7.9), flat)
    assert not within_coverage(_box(0.0, 20.0, 15.0, 30.0, 1.9, 7.9), flat)
    # steps uniform to 5e-5 (within the engine's 1e-4): an answer; y uneven by 2 %: none
    wobbly = x + np.where(np.arange(x.size) % 2, 3.0 * 5e-5, 0.0)
    assert within_coverage(_box(0.0, 20.0, 15.0, 30.0, 2.0, 10.0), DoseGrid(dose.dose_gy, wobbly, y, z))
    wobbly_y = y + np.where(np.arange(y.size) % 2, 2.5 * 5e-5, 0.0)
    assert within_coverage(_box(0.0, 20.0, 15.0, 30.0, 2.0, 10.0), DoseGrid(dose.dose_gy, x, wobbly_y, z))
    uneven = y + np.where(np.arange(y.size) % 2, 0.05, 0.0)
    assert not within_coverage(_box(0.0, 20.0, 15.0, 30.0, 2.0, 10.0), DoseGrid(dose.dose_gy, x, uneven, z))
    # a slab whose only ring has two points encloses nothing: no answer
    line = SlabStack("line", (Slab(2.0, 10.0, (np.array([[0.0, 20.0], [10.0, 20.0]]),)),), EndCap.NONE)
    assert not within_coverage(line, dose)


@pytest.mark.parametrize("whole", [True, False], ids=["the structure", "its ROI"])
def test_a_structure_inside_the_grid_under_the_protocol_s_convention_only_is_measured_under_the_others(whole):
    """Protocol convention none; an ROI whose last plane (10.6 mm) lies inside the grid's
    coverage (to 11 mm) while its half slab reaches 11.9 mm: the shortcut must not answer 0 for
    every convention from the protocol's stack. The reference is a fresh context's DVHs."""
    import dataclasses

    protocol = dataclasses.replace(PROTOCOL, end_cap=EndCap.NONE)
    ring = np.array([[30.0, 10.0], [50.0, 10.0], [50.0, 30.0], [30.0, 30.0]])
    roi = Roi(1, "Stomach", "", None, tuple(ContourPlane(z, (ring,)) for z in (4.0, 6.0, 8.0, 10.6)))

    def fresh() -> CaseContext:
        ss = StructureSet("ss.dcm", "1.2.3", "P1", "Doe", "SS", None, (roi,))
        case = LoadedCase(PlanSet("P1", (), None, ()), (), ss, _grid(), None, (), ("read",))
        return CaseContext(case, protocol, None)

    rois = () if whole else (0,)
    reference = {cap: d.uncovered_cc for cap, d in fresh().dvh_by_end_cap("Stomach", rois).items()}
    assert reference[EndCap.NONE] == 0.0 and reference[EndCap.HALF_SLAB] > 0.3  # 0.9 mm of 20 x 20 mm
    assert fresh().uncovered_by_end_cap("Stomach", rois) == pytest.approx(reference, abs=1e-12)


def test_the_uncovered_volume_of_one_roi_of_a_structure_is_that_roi_s():
    """PTV matches two ROIs, one inside the grid and one reaching beyond it: asked for one ROI,
    the shortcut measures that ROI, not the structure (reference: a fresh context's DVHs)."""
    rois = [_roi(1, "PTVp", 30.0), _roi(2, "PTVv", 90.0)]
    for index in (0, 1):
        reference = {cap: d.uncovered_cc for cap, d in _context(rois).dvh_by_end_cap("PTV", (index,)).items()}
        assert _context(rois).uncovered_by_end_cap("PTV", (index,)) == pytest.approx(reference, abs=1e-12)
        assert all((v > 0.1) is (index == 1) for v in reference.values())


def test_the_uncovered_volume_of_an_ambiguous_structure_is_refused_with_the_ambiguity():
    c = _context([_roi(1, "Stomach", 30.0), _roi(2, "stomach", 60.0)])
    assert "Stomach" in c.ambiguous
    with pytest.raises(RtqaError) as info:
        c.uncovered_by_end_cap("Stomach")
    assert str(info.value) == c.ambiguous["Stomach"]
