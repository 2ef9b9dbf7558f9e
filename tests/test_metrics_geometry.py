"""Metric syntax and evaluation, derived structures and parity, on hand-built geometry."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rtqa.dvh.engine import DVH, compute_dvh, prepare_dose
from rtqa.dvh.geometry import EndCap, combine, evaluate_expression, expression_names, roi_stack
from rtqa.dvh.metrics import Metric, MetricError, evaluate_metric, parse_metric
from rtqa.errors import GeometryError, MetricSyntaxError, MissingStructureError
from rtqa.model import ContourPlane, DoseGrid, Roi

PLANES = np.arange(0.0, 31.0, 2.0)  # 16 planes, 2 mm apart


def square(half: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    return np.array([[cx - half, cy - half], [cx + half, cy - half], [cx + half, cy + half], [cx - half, cy + half]])


def box_roi(name: str, rings: list[np.ndarray], zs=PLANES[1:-1]) -> Roi:
    return Roi(
        number=1,
        name=name,
        interpreted_type="",
        color=None,
        planes=tuple(ContourPlane(float(z), tuple(rings)) for z in zs),
    )


def uniform_grid(value: float = 50.0) -> DoseGrid:
    x = np.arange(-40.0, 41.0, 2.5)
    z = np.arange(-5.0, 36.0, 2.5)
    return DoseGrid(np.full((z.size, x.size, x.size), value), x, x.copy(), z)


def xgrad_grid() -> DoseGrid:
    x = np.arange(-40.0, 41.0, 2.5)
    z = np.arange(-5.0, 36.0, 2.5)
    _zz, _yy, xx = np.meshgrid(z, x, x, indexing="ij")
    return DoseGrid(50.0 + xx, x, x.copy(), z)  # 1 Gy/mm along x


def test_parity_makes_a_hole_whatever_the_winding():
    outer, inner = square(10), square(5)[::-1]  # inner wound the other way on purpose
    ring = box_roi("Ring", [outer, inner])
    stack = roi_stack(ring, PLANES)
    # 14 planes x 2 mm x (400 - 100) mm2
    assert stack.volume_cc == pytest.approx(14 * 2 * 300 / 1000)
    dvh = compute_dvh(stack, uniform_grid())
    assert dvh.volume_cc == pytest.approx(8.4, rel=1e-4)


def test_derived_difference_and_union_are_exact():
    big = roi_stack(box_roi("Liver", [square(10)]), PLANES)
    small = roi_stack(box_roi("GTV", [square(4, cx=3)]), PLANES)
    other = roi_stack(box_roi("GTV2", [square(3, cx=-6)], zs=PLANES[3:8]), PLANES)
    stacks = {"Liver": big, "GTV": small, "GTV2": other}
    normal = evaluate_expression("Liver - (GTV | GTV2)", stacks, name="Liver-GTV")
    # other occupies 5 planes (slabs 2 mm): 5 x 2 x 36 mm3; small 14 x 2 x 64 mm3; union overlap 0 (x ranges)
    expected = big.volume_cc - (14 * 2 * 64 + 5 * 2 * 36) / 1000
    assert normal.volume_cc == pytest.approx(expected, rel=1e-9)
    assert combine("&", big, small).volume_cc == pytest.approx(small.volume_cc, rel=1e-9)
    dvh = compute_dvh(normal, uniform_grid())
    assert dvh.volume_cc == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize(
    ("expression", "match"),
    [
        ("Liver - ", "ends too early"),
        ("Liver - (GTV", "missing"),
        ("Liver - Pancreas", "unknown structure 'Pancreas'"),
    ],
)
def test_bad_expressions_are_refused(expression, match):
    stacks = {
        "Liver": roi_stack(box_roi("Liver", [square(10)]), PLANES),
        "GTV": roi_stack(box_roi("GTV", [square(4)]), PLANES),
    }
    with pytest.raises(GeometryError, match=match):
        evaluate_expression(expression, stacks)


def test_empty_and_tiny_rois_are_missing():
    with pytest.raises(MissingStructureError, match="no closed contours"):
        roi_stack(Roi(1, "Empty", "", None, ()), PLANES)
    with pytest.raises(MissingStructureError, match="treated as missing"):
        roi_stack(box_roi("Speck", [square(0.02)], zs=PLANES[2:3]), PLANES)


def test_metrics_on_a_linear_gradient_match_closed_form():
    # a 20 x 20 mm square prism in 50 + x Gy: dose uniform in [40, 60] over the volume
    stack = roi_stack(box_roi("Box", [square(10)]), PLANES)
    dvh = compute_dvh(stack, xgrad_grid())
    v = stack.volume_cc  # 14 planes x 2 mm x 400 mm2 = 11.2 cc
    assert evaluate_metric(dvh, "Volume[cc]") == pytest.approx(v, rel=1e-4)
    assert evaluate_metric(dvh, "Mean[Gy]") == pytest.approx(50.0, abs=0.01)
    assert evaluate_metric(dvh, "D95%[Gy]") == pytest.approx(41.0, abs=0.05)  # 40 + 0.05 x 20
    assert evaluate_metric(dvh, "D95%[%]", reference_dose_gy=50.0) == pytest.approx(82.0, abs=0.1)
    assert evaluate_metric(dvh, "D2cc[cGy]") == pytest.approx(100 * (60 - 20 * 2 / v), abs=5)
    assert evaluate_metric(dvh, "V55Gy[%]") == pytest.approx(25.0, abs=0.1)
    assert evaluate_metric(dvh, "V55Gy[cc]") == pytest.approx(v / 4, rel=0.005)
    assert evaluate_metric(dvh, "V110%[%]", reference_dose_gy=50.0) == pytest.approx(25.0, abs=0.1)
    assert evaluate_metric(dvh, "CV45Gy[cc]") == pytest.approx(v / 4, rel=0.005)
    # DC<x>cc = highest dose of the coldest x cc = D at volume V - x
    assert evaluate_metric(dvh, "DC2.8cc[Gy]") == pytest.approx(45.0, abs=0.05)
    assert evaluate_metric(dvh, "Max[Gy]") == pytest.approx(60.0, abs=0.3)
    assert evaluate_metric(dvh, "Min[Gy]") == pytest.approx(40.0, abs=0.3)
    assert evaluate_metric(dvh, "D0.03cc[Gy]") == pytest.approx(60 - 20 * 0.03 / v, abs=0.1)


def test_d0_03cc_is_null_for_structures_under_0_03cc():
    stack = roi_stack(box_roi("Tiny", [square(1.0)], zs=PLANES[2:4]), PLANES)  # 2 x 2 mm x 4 mm = 0.016 cc
    dvh = compute_dvh(stack, uniform_grid())
    assert evaluate_metric(dvh, "D0.03cc[Gy]") is None
    assert evaluate_metric(dvh, "D50%[Gy]") == pytest.approx(50.0, abs=0.011)


@pytest.mark.parametrize(
    "text",
    [
        "D95",
        "D95%",
        "d95%[Gy]",
        "D95 %[Gy]",
        "V20gy[%]",
        "Mean[gy]",
        "D120%[Gy]",
        "DC700%[Gy]",
        "Volume[%]",
        "V20Gy[Gy]",
    ],
)
def test_malformed_metrics_raise_naming_the_text(text):
    with pytest.raises(MetricSyntaxError, match="metric '"):
        parse_metric(text)


def test_relative_metric_without_reference_says_so():
    stack = roi_stack(box_roi("Box", [square(10)]), PLANES)
    dvh = compute_dvh(stack, uniform_grid())
    with pytest.raises(MetricError, match=r"'D95%\[%\]' is relative to a reference dose"):
        evaluate_metric(dvh, "D95%[%]")


def test_gradients_along_x_and_along_y_are_told_apart():
    """An off-centre box in 50 + x and in 50 + y Gy: each axis gives its own closed-form DVH.

    The box spans x in [-6, 14] and y in [-16, 4] mm, so the dose over it is uniform in
    [44, 64] Gy along x and in [34, 54] Gy along y; swapping or dropping an axis shows.
    """
    x = np.arange(-40.0, 41.0, 2.5)
    z = np.arange(-5.0, 36.0, 2.5)
    _zz, yy, xx = np.meshgrid(z, x, x, indexing="ij")
    stack = roi_stack(box_roi("Box", [square(10, cx=4, cy=-6)]), PLANES)
    for dose, low in ((50.0 + xx, 44.0), (50.0 + yy, 34.0)):
        dvh = compute_dvh(stack, DoseGrid(dose, x, x.copy(), z))
        assert evaluate_metric(dvh, "Mean[Gy]") == pytest.approx(low + 10, abs=0.01)
        assert evaluate_metric(dvh, "D95%[Gy]") == pytest.approx(low + 0.05 * 20, abs=0.03)
        assert evaluate_metric(dvh, "D50%[Gy]") == pytest.approx(low + 10, abs=0.01)
        assert evaluate_metric(dvh, "Min[Gy]") == pytest.approx(low, abs=0.2)
        assert evaluate_metric(dvh, "Max[Gy]") == pytest.approx(low + 20, abs=0.2)


def _hand_dvh(volumes: list[float], uncovered: float = 0.0, max_gy: float | None = 0.02) -> DVH:
    """A cumulative curve at 0, 0.01, 0.02 Gy, linear between (engine.DVH's convention)."""
    edges = np.arange(len(volumes)) * 0.01
    covered = volumes[0]
    return DVH(
        "hand", edges, np.array(volumes), covered + uncovered, uncovered, 0.01, 0.0, max_gy, EndCap.HALF_SLAB, 0.01
    )


def test_parse_metric_keeps_the_text_and_units():
    assert parse_metric("Max[Gy]") == Metric("Max[Gy]", "Max", None, None, "Gy")
    assert parse_metric("Volume[cc]") == Metric("Volume[cc]", "Volume", None, None, "cc")
    assert parse_metric("D100%[Gy]").value == 100.0  # the whole volume: allowed
    with pytest.raises(MetricSyntaxError, match=r"a volume percentage above 100"):
        parse_metric("D100.5%[Gy]")
    with pytest.raises(
        MetricSyntaxError,
        match=r"expected e\.g\. D95%\[Gy\], D0\.03cc\[Gy\], V20Gy\[%\], V95%\[%\], Mean\[Gy\], "
        r".*case-sensitive units\)$",
    ):
        parse_metric("mean[gy]")


def test_metric_edge_cases_on_a_hand_made_curve():
    dvh = _hand_dvh([10.0, 4.0, 0.0])
    assert evaluate_metric(dvh, parse_metric("Mean[Gy]")) == 0.01  # a parsed Metric is accepted as is
    assert evaluate_metric(dvh, "V1cGy[cc]") == pytest.approx(4.0) == evaluate_metric(dvh, "V0.01Gy[cc]")
    # DC10cc of a 10 cc structure: the coldest 10 cc is all of it, so its highest dose is the maximum
    assert evaluate_metric(dvh, "DC10cc[Gy]") == 0.02
    assert evaluate_metric(dvh, "DC10.5cc[Gy]") is None
    # percentages of a structure under 1 cc are still percentages
    small = _hand_dvh([0.5, 0.2, 0.0])
    assert evaluate_metric(small, "V0.01Gy[%]") == pytest.approx(40.0)
    assert evaluate_metric(small, "CV0.01Gy[%]") == pytest.approx(60.0)
    # nothing covered by the dose grid: no percentage and no dose
    outside = _hand_dvh([0.0], uncovered=2.0, max_gy=None)
    assert evaluate_metric(outside, "V0.01Gy[%]") is None and evaluate_metric(outside, "D95%[Gy]") is None
    assert evaluate_metric(outside, "Volume[cc]") == 2.0


def _planes_roi(zs: list[float], ring: np.ndarray | None = None) -> Roi:
    ring = square(5) if ring is None else ring
    return Roi(1, "R", "", None, tuple(ContourPlane(z, (ring,)) for z in zs))


def _limits(stack) -> list[tuple[float, float]]:
    return [(round(s.z_lo_mm, 9), round(s.z_hi_mm, 9)) for s in stack.slabs]


def test_slabs_reach_halfway_to_the_neighbouring_planes_of_the_structure_set():
    # structure-set planes 0, 2, 4, 7, 10 mm (uneven); the ROI on 2, 4.01 (decimal jitter: plane 4) and 7
    grid = np.array([0.0, 2.0, 4.0, 7.0, 10.0])
    stack = roi_stack(_planes_roi([2.0, 4.01, 7.0]), grid)
    assert _limits(stack) == [(1.0, 3.0), (3.005, 5.505), (5.5, 8.5)]
    assert stack.name == "R" and stack.end_cap is EndCap.HALF_SLAB
    # on the first and last plane: the half-slab mirrors the one neighbour
    assert _limits(roi_stack(_planes_roi([0.0]), grid)) == [(-1.0, 1.0)]
    assert _limits(roi_stack(_planes_roi([10.0]), grid)) == [(8.5, 11.5)]
    # jitter above the last plane and below the first still finds them
    assert _limits(roi_stack(_planes_roi([10.01]), grid)) == [(8.505, 11.515)]
    assert _limits(roi_stack(_planes_roi([-0.01]), grid)) == [(-1.015, 0.995)]
    # no end cap: the first slab starts and the last ends on the outermost contour
    none = roi_stack(_planes_roi([2.0, 4.0, 7.0]), grid, end_cap=EndCap.NONE)
    assert _limits(none) == [(2.0, 3.0), (3.0, 5.5), (5.5, 7.0)] and none.end_cap is EndCap.NONE


def test_a_single_plane_structure_set_has_no_thickness():
    with pytest.raises(MissingStructureError, match="lies on a single plane and the structure set has no other plane"):
        roi_stack(_planes_roi([3.0]), np.array([3.0]))


def test_the_smallest_structure_is_kept_and_a_smaller_one_named_with_its_volume():
    # 5 x 2 mm x 1 mm slab = 0.01 cc, exactly the limit: kept
    rect = np.array([[0.0, 0.0], [5.0, 0.0], [5.0, 2.0], [0.0, 2.0]])
    grid = np.array([0.0, 1.0, 2.0])
    assert roi_stack(_planes_roi([1.0], rect), grid).volume_cc == pytest.approx(0.01)
    with pytest.raises(
        MissingStructureError, match=r"^ROI 'R' encloses 0\.0050 cc \(< 0\.01 cc\): treated as missing$"
    ):
        roi_stack(_planes_roi([1.0], rect / [1.0, 2.0]), grid)


def test_combine_slab_by_slab_with_gaps_pieces_and_names():
    grid = PLANES  # 0, 2, ..., 30 mm
    low = roi_stack(box_roi("Low", [square(10)], zs=PLANES[1:4]), grid)  # slabs 1-7 mm
    high = roi_stack(box_roi("High", [square(10)], zs=PLANES[8:11]), grid)  # slabs 15-21 mm: a gap between
    both = combine("|", low, high)
    assert both.name == "(Low | High)" and both.end_cap is EndCap.HALF_SLAB
    assert both.volume_cc == pytest.approx(low.volume_cc + high.volume_cc, rel=1e-9)
    # one slab per interval between slab limits, none in the gap
    assert [(s.z_lo_mm, s.z_hi_mm) for s in both.slabs] == [(1, 3), (3, 5), (5, 7), (15, 17), (17, 19), (19, 21)]
    none_cap = roi_stack(box_roi("Low", [square(10)], zs=PLANES[1:4]), grid, end_cap=EndCap.NONE)
    assert combine("|", none_cap, none_cap, name="Twice").end_cap is EndCap.NONE
    # a bar across the square splits it into two pieces (a MultiPolygon): 2 x (20 x 8) mm2 per mm
    bar = roi_stack(box_roi("Bar", [np.array([[-20.0, -2.0], [20.0, -2.0], [20.0, 2.0], [-20.0, 2.0]])]), grid)
    big = roi_stack(box_roi("Big", [square(10)]), grid)
    split = combine("-", big, bar, name="Split")
    assert split.name == "Split" and len(split.slabs[0].rings) == 2
    assert split.volume_cc == pytest.approx(big.volume_cc * 320 / 400, rel=1e-9)
    # a zero-area difference on some planes is dropped, the other planes are kept
    partial = roi_stack(box_roi("Part", [square(10)], zs=PLANES[1:5]), grid)
    rest = combine("-", big, partial)
    assert rest.slabs[0].z_lo_mm == pytest.approx(partial.slabs[-1].z_hi_mm)
    assert rest.volume_cc == pytest.approx(big.volume_cc - partial.volume_cc, rel=1e-9)
    with pytest.raises(MissingStructureError, match=r"encloses|treated as missing"):
        combine("-", low, low)
    with pytest.raises(GeometryError, match=r"unknown structure operator '\^'; expected \|, & or -"):
        combine("^", low, high)


def test_dvh_look_ups_at_their_ends():
    dvh = _hand_dvh([10.0, 4.0, 0.0], max_gy=0.015)  # the hottest sample at 0.015 Gy, edges to 0.02
    assert dvh.dose_at_volume(10.0) == 0.0  # D100 %
    assert dvh.dose_at_volume(10.001) is None
    assert dvh.dose_at_volume(0.0) == 0.015  # D at 0 cc is the maximum, not the last edge
    assert dvh.volume_at_dose(-1.0) == 10.0 and dvh.volume_at_dose(5.0) == 0.0
    # a curve of one edge (a uniform dose on a bin edge)
    flat = DVH("flat", np.array([0.0]), np.array([5.0]), 5.0, 0.0, 0.0, 0.0, 0.0, EndCap.HALF_SLAB, 0.01)
    assert flat.dose_at_volume(2.0) == 0.0


def test_d100_within_rounding_of_the_covered_volume():
    # dose_at_volume accepts volumes up to covered x (1 + 1e-12), meant for rounding (D100% of a
    # covered volume summed in another order), then finds no edge with that much volume
    assert _hand_dvh([10.0, 4.0, 0.0]).dose_at_volume(10.0 * (1 + 1e-13)) == 0.0


def test_prepare_dose_refuses_grids_it_cannot_sample():
    z = np.array([0.0, 3.0])

    def grid(x, y):
        return DoseGrid(np.zeros((z.size, y.size, x.size)), x, y, z)

    two = np.array([0.0, 2.0])
    prepare_dose(grid(two, two))  # two columns and two rows are enough
    for x, y in ((np.array([0.0]), two), (two, np.array([0.0]))):
        with pytest.raises(GeometryError, match=r"^dose grid needs at least two columns and two rows$"):
            prepare_dose(grid(x, y))
    even = np.array([0.0, 2.0, 4.0])
    nearly = np.array([0.0, 2.0, 4.0 + 1e-4])  # 0.005 % off: rounding in the file, accepted
    prepare_dose(grid(nearly, even))
    prepare_dose(grid(even, nearly))
    for x, y in ((np.array([0.0, 2.0, 4.5]), even), (even, np.array([0.0, 2.0, 4.5]))):
        with pytest.raises(GeometryError, match=r"^dose grid spacing must be uniform in x and y$"):
            prepare_dose(grid(x, y))


def test_expression_names_and_operators():
    assert expression_names("Liver - (GTV | GTV2) & PTV") == ["Liver", "GTV", "GTV2", "PTV"]
    stacks = {
        "Liver": roi_stack(box_roi("Liver", [square(10)]), PLANES),
        "GTV": roi_stack(box_roi("GTV", [square(4, cx=3)]), PLANES),
    }
    assert evaluate_expression("Liver & GTV", stacks).volume_cc == pytest.approx(stacks["GTV"].volume_cc, rel=1e-9)
    for text, bad in (("Liver - | GTV", "|"), ("Liver - & GTV", "&"), ("Liver - - GTV", "-"), (") Liver", ")")):
        with pytest.raises(
            GeometryError, match=rf"^structure expression {re.escape(repr(text))}: unexpected '\{bad}'$"
        ):
            evaluate_expression(text, stacks)
    with pytest.raises(GeometryError, match=r"^structure expression '\(Liver\) GTV': unexpected 'GTV'$"):
        evaluate_expression("(Liver) GTV", stacks)


def test_slab_limits_next_to_the_outermost_planes_and_the_messages():
    grid = np.array([0.0, 1.0, 4.0, 6.0])
    # second plane: half-way down to 0 and up to 4; second to last: up to 6 and down to 1
    assert _limits(roi_stack(_planes_roi([1.0]), grid)) == [(0.5, 2.5)]
    assert _limits(roi_stack(_planes_roi([4.0]), grid)) == [(2.5, 5.0)]
    with pytest.raises(
        MissingStructureError,
        match=r"^ROI 'R' lies on a single plane and the structure set has no other plane: its thickness is unknown$",
    ):
        roi_stack(_planes_roi([3.0]), np.array([3.0]))
    # one plane and no end cap: no thickness at all
    with pytest.raises(
        MissingStructureError, match=r"^ROI 'R' encloses 0\.0000 cc \(< 0\.01 cc\): treated as missing$"
    ):
        roi_stack(_planes_roi([1.0]), grid, end_cap=EndCap.NONE)


def test_combine_keeps_thin_overlaps_and_refuses_too_small_ones():
    big = roi_stack(box_roi("Big", [square(10)]), PLANES)  # x in [-10, 10], 14 slabs of 2 mm

    def strip(width: float):
        ring = np.array([[10.0 - width, -10.0], [30.0, -10.0], [30.0, 10.0], [10.0 - width, 10.0]])
        return roi_stack(box_roi("Strip", [ring]), PLANES)

    # a 0.025 mm overlap: 0.5 mm2 per plane x 28 mm = 0.014 cc, kept
    assert combine("&", big, strip(0.025)).volume_cc == pytest.approx(0.014, rel=1e-6)
    # a 0.01 mm overlap: 0.0056 cc, under the 0.01 cc of a structure
    with pytest.raises(MissingStructureError, match=r"^derived structure '\(Big & Strip\)' encloses no volume"):
        combine("&", big, strip(0.01))
