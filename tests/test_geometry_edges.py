"""Geometry at its edges: outlines drawn twice, degenerate rings, geometry collections.

Every expected area and volume is hand arithmetic on squares and triangles, written beside it.
"""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import GeometryCollection, LineString, MultiPolygon, Polygon

from rtqa.dvh.geometry import (
    MIN_VOLUME_CC,
    EndCap,
    Slab,
    SlabStack,
    _geometry_rings,
    coincident_rings,
    combine,
    evaluate_expression,
    roi_stack,
)
from rtqa.model import ContourPlane, Roi


def square(half: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    return np.array([[cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half], [cx - half, cy + half]])


def circle(r: float, n: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.column_stack([r * np.cos(t), r * np.sin(t)])


@pytest.mark.parametrize(
    "twin",
    [
        square(10),  # copied as is
        square(10)[::-1],  # winding reversed
        np.roll(square(10), 1, axis=0),  # start point moved
        square(10, cx=0.2),  # band 2 x 0.2 x 20 mm2 over 80 mm of outline: 0.1 mm wide
    ],
    ids=["copy", "reversed", "start_moved", "shifted_0.2mm"],
)
def test_an_outline_drawn_twice_is_recognised_however_it_was_redrawn(twin):
    assert coincident_rings((square(10), twin))
    assert coincident_rings((square(3, cx=40), square(10), twin))  # an island beside does not hide it


def test_small_outlines_drawn_twice_are_recognised_too():
    tri = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])  # three points, the fewest a contour has
    assert coincident_rings((tri, tri[::-1]))
    assert coincident_rings((square(0.4), square(0.4)))  # 0.64 mm2: a vessel drawn twice


def test_the_band_between_two_outlines_must_be_under_half_a_millimetre():
    # 20 mm squares 1 mm apart: band 2 x 1 x 20 = 40 mm2 over 80 mm of outline, exactly 0.5 mm wide
    assert not coincident_rings((square(10), square(10, cx=1.0)))


@pytest.mark.parametrize(
    "rings",
    [
        (square(10),),  # one ring
        (square(10), square(5)),  # a hole of a quarter of the area
        (circle(50), circle(40)),  # a 10 mm wall: areas 64 % apart, band 2827 mm2 / 314 mm = 9 mm
        (square(10), square(10, cx=30)),  # two islands of equal area
        (square(10), square(10, cx=2)),  # overlapping by 80 %: band 2 x 2 x 20 = 80 mm2 / 80 mm = 1 mm
        # a 2 mm vessel with a 0.6 mm lumen: band 4 - 0.36 mm2 over 8 mm = 0.45 mm, but areas 9 % apart
        (square(1), square(0.3)),
        # two rings that enclose nothing (points on one line): another check reports those
        (np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 0.0]]), np.array([[0.0, 0.0], [10.0, 0.0], [5.0, 0.0]])),
    ],
    ids=["single", "hole", "wall_10mm", "islands", "overlap_2mm", "small_lumen", "zero_area"],
)
def test_holes_walls_and_islands_are_not_taken_for_a_redrawn_outline(rings):
    assert not coincident_rings(rings)


# -- slabs and volumes ---------------------------------------------------------------------------

PLANES = np.arange(0.0, 31.0, 2.0)  # 16 planes, 2 mm apart


def roi(rings: list[np.ndarray], zs=PLANES[1:-1], name: str = "R") -> Roi:
    return Roi(1, name, "", None, tuple(ContourPlane(float(z), tuple(rings)) for z in zs))


def test_a_triangle_counts_like_any_other_contour():
    """Three points are the fewest a closed contour can have (DICOM C.8.8.6): nothing drops it."""
    tri = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])  # 50 mm2
    stack = roi_stack(roi([tri]), PLANES)
    assert stack.volume_cc == pytest.approx(14 * 2 * 50 / 1000)  # 14 planes x 2 mm x 50 mm2
    # the derived structure goes through shapely regions, not through the ring areas
    both = combine("&", stack, roi_stack(roi([square(20)]), PLANES))
    assert both.volume_cc == pytest.approx(14 * 2 * 50 / 1000)


def test_an_island_inside_a_hole_is_counted_by_parity():
    rings = [square(10), square(6), square(3)]  # 400 - 144 + 36 mm2
    stack = roi_stack(roi(rings), PLANES)
    assert stack.volume_cc == pytest.approx(14 * 2 * 292 / 1000)
    assert stack.slabs[0].region().area == pytest.approx(292)


def test_an_outline_drawn_twice_cancels_in_the_volume_as_in_the_region():
    """Parity: the two copies cancel, the island beside them stays (36 mm2)."""
    rings = [square(10), square(10)[::-1], square(3, cx=40)]
    stack = roi_stack(roi(rings), PLANES)
    assert stack.slabs[0].region().area == pytest.approx(36)
    assert stack.volume_cc == pytest.approx(14 * 2 * 36 / 1000)


def test_a_slab_without_rings_adds_no_volume():
    stack = SlabStack("S", (Slab(0.0, 2.0, ()), Slab(2.0, 4.0, (square(10),))), EndCap.HALF_SLAB)
    assert stack.volume_cc == pytest.approx(2 * 400 / 1000)


@pytest.mark.parametrize(
    ("extra_planes", "expected_mm"),
    [
        # a stray plane far away (a marker 30 mm off): the end slabs reach half a typical spacing
        ((-30.0, 60.0), 32.0),
        # 2.5 spacings away is beyond twice the typical spacing: the same
        ((-5.0, 35.0), 32.0),
        # exactly two spacings (one missing CT slice): halfway to it, 2 mm beyond each end
        ((-4.0, 34.0), 34.0),
    ],
    ids=["stray_30mm", "gap_2.5_spacings", "gap_2_spacings"],
)
def test_a_distant_neighbouring_plane_does_not_stretch_the_end_slabs(extra_planes, expected_mm):
    # the ROI covers every regular plane, 0 to 30 mm; the typical (median) spacing stays 2 mm
    planes = np.sort(np.concatenate([PLANES, extra_planes]))
    stack = roi_stack(roi([square(10)], zs=PLANES), planes)
    assert stack.slabs[0].z_lo_mm + stack.slabs[-1].z_hi_mm == pytest.approx(30.0)  # symmetric
    assert stack.volume_cc == pytest.approx(expected_mm * 400 / 1000)


def test_a_structure_set_of_two_planes_gives_slabs_halfway_between_them():
    stack = roi_stack(roi([square(10)], zs=[0.0, 3.0]), np.array([0.0, 3.0]))
    # half-slab end caps: 1.5 mm beyond each plane, 1.5 mm between them: 6 mm x 400 mm2
    assert stack.volume_cc == pytest.approx(6 * 400 / 1000)


@pytest.mark.parametrize("z", [40.0, -20.0], ids=["above", "below"])
def test_a_marker_contour_on_a_stray_plane_gets_one_typical_spacing(z):
    """The stray plane's only neighbour is far: its slab is one typical spacing thick (2 mm)."""
    planes = np.sort(np.concatenate([PLANES, [z]]))
    stack = roi_stack(roi([square(5)], zs=[z]), planes)
    assert (stack.slabs[0].z_lo_mm, stack.slabs[0].z_hi_mm) == pytest.approx((z - 1.0, z + 1.0))


def test_an_roi_plane_midway_between_two_structure_set_planes_takes_the_upper_one():
    """A convention, pinned so it cannot change unnoticed: the upper plane's neighbours bound the slab.

    Structure-set planes 10, 14, 16, 22 mm; the ROI plane 15 mm is 1 mm from 14 and from 16.
    Upper (16): halfway to 14 and to 22, 14.5 to 18.5 mm. Lower (14) would give 12.5 to 15.5 mm.
    """
    stack = roi_stack(roi([square(10)], zs=[15.0]), np.array([10.0, 14.0, 16.0, 22.0]))
    assert (stack.slabs[0].z_lo_mm, stack.slabs[0].z_hi_mm) == pytest.approx((14.5, 18.5))


# -- derived structures --------------------------------------------------------------------------


def test_an_intersection_that_also_touches_along_an_edge_keeps_its_area():
    """shapely returns a GeometryCollection (the square and the touching edge as a line)."""
    a = roi_stack(roi([square(5, cx=5, cy=5)]), PLANES)  # [0, 10] x [0, 10]
    # [5, 15] x [0, 10] and [-5, 0] x [0, 10], the second touching a's left edge
    left = np.array([[-5.0, 0.0], [0.0, 0.0], [0.0, 10.0], [-5.0, 10.0]])
    b = roi_stack(roi([square(5, cx=10, cy=5), left]), PLANES)
    both = combine("&", a, b)
    assert both.volume_cc == pytest.approx(14 * 2 * 50 / 1000)  # [5, 10] x [0, 10] on 14 slabs


def test_rings_are_taken_from_every_part_of_a_nested_collection():
    poly = Polygon([(0, 0), (4, 0), (4, 4), (0, 4)], [[(1, 1), (2, 1), (2, 2), (1, 2)]])
    multi = MultiPolygon([Polygon([(10, 0), (12, 0), (12, 2)]), Polygon([(20, 0), (22, 0), (22, 2)])])
    nested = GeometryCollection([GeometryCollection([multi]), LineString([(0, 0), (5, 5)]), poly])
    rings = _geometry_rings(nested)
    # 2 triangles of the multipolygon, the exterior and the hole of the square; nothing of the line
    assert sorted(len(r) for r in rings) == [3, 3, 4, 4]
    assert all(r.shape[1] == 2 for r in rings)


def test_combinations_on_slab_limits_between_whole_millimetres_are_exact():
    planes = np.arange(0.0, 26.0, 2.5)  # slab limits at 1.25, 3.75, ... mm
    a = roi_stack(roi([square(10)], zs=planes[1:-1]), planes)
    b = roi_stack(roi([square(4, cx=20)], zs=planes[3:6]), planes)
    union = combine("|", a, b)
    # a: 9 planes x 2.5 mm x 400 mm2; b: 3 planes x 2.5 mm x 64 mm2, disjoint in x
    assert union.volume_cc == pytest.approx((9 * 2.5 * 400 + 3 * 2.5 * 64) / 1000)
    assert [s.z_lo_mm for s in union.slabs][:2] == pytest.approx([1.25, 3.75])


def test_a_derived_structure_of_exactly_the_smallest_volume_is_kept():
    """0.01 cc is the smallest volume rtqa grades (MIN_VOLUME_CC): a 5 mm x 1 mm strip on one 2 mm slab."""
    strip = np.array([[0.0, 0.0], [5.0, 0.0], [5.0, 1.0], [0.0, 1.0]])
    a = roi_stack(roi([square(10)], zs=[10.0]), PLANES)
    b = roi_stack(roi([strip], zs=[10.0]), PLANES)
    assert combine("&", a, b).volume_cc == MIN_VOLUME_CC  # 5 mm2 x 2 mm = 10 mm3, exact in binary


def test_an_expression_result_is_named_and_keeps_the_end_cap():
    stacks = {
        "Liver": roi_stack(roi([square(10)], name="Liver"), PLANES, end_cap=EndCap.NONE),
        "GTV": roi_stack(roi([square(3)], name="GTV"), PLANES, end_cap=EndCap.NONE),
    }
    assert evaluate_expression("Liver - GTV", stacks).name == "Liver - GTV"
    named = evaluate_expression("Liver - GTV", stacks, name="Liver-GTV")
    assert named.name == "Liver-GTV" and named.end_cap is EndCap.NONE


def test_the_area_of_rings_by_parity_closed_forms():
    """shoelace_area and _rings_area against closed forms: fewer than three points enclose
    nothing; disjoint rings add (a triangle of 8 mm² and a square of 4 mm², an L of 64 mm² and a square of
    4 mm² in its notch); nested rings
    alternate by depth (squares of side 10, 8, 6 and 4 mm: 100 - 64 + 36 - 16 = 56 mm²)."""
    from rtqa.dvh.geometry import _rings_area, shoelace_area

    def square(side: float) -> np.ndarray:
        h = side / 2
        return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])

    line = np.array([[0.0, 0.0], [5.0, 5.0]])
    assert shoelace_area(line) == 0.0 and _rings_area((line,)) == 0.0 and _rings_area((line, line)) == 0.0
    triangle = np.array([[20.0, 0.0], [24.0, 0.0], [20.0, 4.0]])
    assert _rings_area((triangle, square(2.0) + 50.0)) == pytest.approx(8.0 + 4.0)
    assert _rings_area(tuple(square(s) for s in (10.0, 8.0, 6.0, 4.0))) == pytest.approx(56.0)
    assert _rings_area((square(4.0), square(10.0), square(6.0), square(8.0))) == pytest.approx(56.0)  # any order
    # a square in the notch of an L (inside its bounding box, not inside it): they add
    ell = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 4.0], [4.0, 4.0], [4.0, 10.0], [0.0, 10.0]])
    notch = square(2.0) + 7.0
    assert _rings_area((ell, notch)) == pytest.approx(64.0 + 4.0)
