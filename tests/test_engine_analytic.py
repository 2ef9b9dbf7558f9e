"""The DVH engine on boxes (and a triangle, a frame) in linear doses, where the truth is closed
form and (for a gradient along one axis) exact: gradients other than 1 Gy/mm, along x, y, z
and oblique, structures partly or wholly outside the dose grid, the dose held beyond the
outermost planes and nodes, dose grids of one and two planes, sub-slabs, slab groups, the
cumulative histogram of hand-made samples, warnings and the engine's refusals.

Why the truth is exact here. The engine samples a structure on the dose grid's own pixels:
each occupied part of a pixel (times a sub-slab along z) takes the dose at its centroid and
spreads its volume uniformly over a width sqrt(12 x variance of the dose over it). For a
dose linear along one axis, that dose is exact (trilinear interpolation of a linear dose is
the dose itself, one-sided slopes are the slope), the width is the slope times the extent of
the occupied part along that axis, and the samples tile the box's dose range without gap or
overlap. A box of volume V in a dose rising from ``lo`` to ``hi`` across it then has, exactly,

    V(>= d) = V (hi - d) / (hi - lo)   for lo <= d <= hi,   mean (lo + hi) / 2,
    Min = lo, Max = hi,                 D(v) = hi - (hi - lo) v / V.

The box's faces along x may lie anywhere (scan lines measure x exactly); its faces along y
lie on scan-line boundaries (multiples of the line spacing from the pixel boundaries) so that
its area is exact too. Tolerances are rounding (1e-9 relative) unless said otherwise.
"""

from __future__ import annotations

import numpy as np
import pytest

import rtqa.dvh.engine as engine
from rtqa.dvh.engine import DVH, compute_dvh, cumulative_histogram, prepare_dose
from rtqa.dvh.geometry import EndCap, Slab, SlabStack
from rtqa.dvh.metrics import evaluate_metric
from rtqa.errors import DoseGridError
from rtqa.model import DoseGrid

X = np.arange(-20.0, 20.01, 2.0)  # dx = 2 mm, 21 columns: pixels cover x in [-21, 21]
Y = np.arange(-20.0, 20.01, 2.5)  # dy = 2.5 mm, 17 rows: pixels cover y in [-21.25, 21.25]
Z = np.arange(-12.0, 12.01, 3.0)  # 3 mm between dose planes: covered z in [-13.5, 13.5]
REL = 1e-9


def linear_dose(base: float, gx: float = 0.0, gy: float = 0.0, gz: float = 0.0, z: np.ndarray = Z) -> DoseGrid:
    zz, yy, xx = np.meshgrid(z, Y, X, indexing="ij")
    return DoseGrid(base + gx * xx + gy * yy + gz * zz, X, Y.copy(), z.copy())


def rect(x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def box(
    x0: float, x1: float, y0: float, y1: float, z0: float, z1: float, slab_mm: float, *, name: str = "Box"
) -> SlabStack:
    n = round((z1 - z0) / slab_mm)
    ring = rect(x0, x1, y0, y1)
    return SlabStack(
        name, tuple(Slab(z0 + i * slab_mm, z0 + (i + 1) * slab_mm, (ring,)) for i in range(n)), EndCap.HALF_SLAB
    )


def assert_uniform_dvh(dvh: DVH, volume_cc: float, lo: float, hi: float) -> None:
    """The DVH of ``volume_cc`` receiving a dose spread uniformly over [lo, hi] (closed form)."""
    assert dvh.covered_cc == pytest.approx(volume_cc, rel=REL)
    assert dvh.mean_gy == pytest.approx((lo + hi) / 2, rel=REL)
    assert dvh.min_gy == pytest.approx(lo, rel=REL)
    assert dvh.max_gy == pytest.approx(hi, rel=REL)
    truth = volume_cc * np.clip((hi - dvh.dose_edges_gy) / (hi - lo), 0.0, 1.0)
    np.testing.assert_allclose(dvh.volume_ge_cc, truth, rtol=0, atol=REL * volume_cc)
    assert dvh.dose_edges_gy[-1] >= hi  # the curve reaches zero volume
    for frac in (0.02, 0.25, 0.5, 0.9, 0.98):
        d = lo + frac * (hi - lo)
        assert dvh.volume_at_dose(d) == pytest.approx(volume_cc * (1 - frac), rel=1e-9, abs=1e-12)
        assert dvh.dose_at_volume(volume_cc * (1 - frac)) == pytest.approx(d, rel=1e-9)


# x faces anywhere; y faces on multiples of the 0.25 mm scan-line spacing (a tenth of dy)
BOX_XY = (-6.6, 9.3, -5.25, 8.0)
AREA_XY = (9.3 + 6.6) * (8.0 + 5.25)  # 15.9 x 13.25 mm


@pytest.mark.parametrize(("base", "g"), [(30.0, 0.5), (30.0, 2.5), (3.3, 0.5)])
def test_gradient_along_x_other_than_one_gy_per_mm(base, g):
    # 5 slabs of 2 mm from z = -5 to 5; dose base + g x over x in [-6.6, 9.3] (from 0 Gy at
    # the box's face for base 3.3)
    dvh = compute_dvh(box(*BOX_XY, -5.0, 5.0, 2.0), linear_dose(base, gx=g))
    assert_uniform_dvh(dvh, AREA_XY * 10 / 1000, base - 6.6 * g, base + 9.3 * g)
    assert dvh.uncovered_cc == 0.0 and dvh.warnings == ()
    assert dvh.name == "Box" and dvh.end_cap is EndCap.HALF_SLAB


@pytest.mark.parametrize("g", [0.5, 2.5])
def test_gradient_along_y_other_than_one_gy_per_mm(g):
    dvh = compute_dvh(box(*BOX_XY, -5.0, 5.0, 2.0), linear_dose(30.0, gy=g))
    assert_uniform_dvh(dvh, AREA_XY * 10 / 1000, 30 - 5.25 * g, 30 + 8.0 * g)


@pytest.mark.parametrize("g", [0.5, 2.5])
def test_gradient_along_z_with_slabs_thicker_than_the_dose_planes(g):
    # 4 slabs of 5 mm from z = -10 to 10 on 3 mm dose planes: two sub-slabs of 2.5 mm each,
    # some straddling a dose plane; dose 30 + g z over z in [-10, 10]
    dvh = compute_dvh(box(*BOX_XY, -10.0, 10.0, 5.0), linear_dose(30.0, gz=g))
    assert_uniform_dvh(dvh, AREA_XY * 20 / 1000, 30 - 10 * g, 30 + 10 * g)


def test_gradient_along_z_with_slabs_thinner_than_the_dose_planes():
    # slabs of 1.5 mm, 0.5 mm off the dose planes: one sub-slab each; dose 20 + 0.5 z
    dvh = compute_dvh(box(*BOX_XY, -8.5, 8.0, 1.5), linear_dose(20.0, gz=0.5))
    assert_uniform_dvh(dvh, AREA_XY * 16.5 / 1000, 20 - 4.25, 20 + 4.0)


def test_oblique_gradient_mean_is_exact_and_curve_within_the_sample_model():
    """Dose 40 + 0.5 x + 2.5 y - 0.5 z over the box.

    The mean is exact: each sample's dose is the linear dose at its centroid. The curve is the
    distribution of a sum of three uniform variables; the engine spreads each sample over one
    uniform of the same variance, so the curve is right to a fraction of a sample's volume
    where the distribution bends (asserted: 0.2 % of the volume [measured 2026-11-30: 0.04 %
    at worst, over the whole dose range in 0.1 Gy steps]).
    """
    stack = box(*BOX_XY, -5.0, 5.0, 2.0)
    dvh = compute_dvh(stack, linear_dose(40.0, gx=0.5, gy=2.5, gz=-0.5))
    volume = AREA_XY * 10 / 1000
    cx, cy, cz = (9.3 - 6.6) / 2, (8.0 - 5.25) / 2, 0.0
    assert dvh.covered_cc == pytest.approx(volume, rel=REL)
    assert dvh.mean_gy == pytest.approx(40 + 0.5 * cx + 2.5 * cy - 0.5 * cz, rel=REL)
    # truth: the dose is 40 + (a sum of three independent uniform variables), offset to the
    # box's coldest corner; the CDF of a sum of uniforms on [0, L_i] (inclusion-exclusion):
    # P(S <= s) = sum over subsets J of (-1)^|J| (s - sum_J L_j)_+^3 / (3! L1 L2 L3)
    lo = 40 - 0.5 * 6.6 - 2.5 * 5.25 - 0.5 * 5.0
    lengths = (0.5 * 15.9, 2.5 * 13.25, 0.5 * 10.0)
    for dose_gy in (30.0, 35.0, 40.0, 45.0, 50.0, 55.0):
        s = dose_gy - lo
        cdf = sum(
            (-1) ** (a + b + c) * max(s - a * lengths[0] - b * lengths[1] - c * lengths[2], 0.0) ** 3
            for a in (0, 1)
            for b in (0, 1)
            for c in (0, 1)
        ) / (6 * lengths[0] * lengths[1] * lengths[2])
        assert dvh.volume_at_dose(dose_gy) == pytest.approx(volume * (1 - cdf), abs=0.002 * volume), dose_gy
    # extremes: never beyond the corners' doses, and within 1 Gy of them [measured 0.79 Gy at
    # the coldest corner: its sample's dose spans 0.5 x 1.6 + 2.5 x 1.5 + 0.5 x 2 = 5.55 Gy,
    # spread over a uniform of the same variance, 3.96 Gy wide]
    hi = 40 + 0.5 * 9.3 + 2.5 * 8.0 + 0.5 * 5.0
    assert lo <= dvh.min_gy <= lo + 1.0 and hi - 1.0 <= dvh.max_gy <= hi


def test_cumulative_histogram_of_hand_samples():
    bw = 1 / 128  # a power of two: every edge and dose below is exact in binary
    # a step at 3 bw (width 0), a ramp over [1, 5] bw, and a ramp over [6, 8] bw
    dose = np.array([3 * bw, 3 * bw, 7 * bw])
    width = np.array([0.0, 4 * bw, 2 * bw])
    volume = np.array([1.0, 2.0, 4.0])
    edges, v_ge = cumulative_histogram(dose, width, volume, bin_width_gy=bw)
    assert np.array_equal(edges, np.arange(edges.size) * bw)
    assert edges.size == 8 + 2  # up to the first edge above the hottest sample, and one more
    # at edge j: the step counts while j <= 3; the ramp [1, 5] keeps 2 (5 - j) / 4 of its 2 cc
    truth = [
        1 + 2 + 4 if j <= 1 else (1 if j <= 3 else 0) + 2 * max(5 - j, 0) / 4 + 4 * min(max(8 - j, 0) / 2, 1)
        for j in range(edges.size)
    ]
    np.testing.assert_allclose(v_ge, truth, rtol=0, atol=1e-12)


def test_cumulative_histogram_clamps_a_ramp_at_zero_dose():
    bw = 1 / 128
    # a ramp over [-2, 2] bw is spread over [0, 2] bw: no volume below 0 Gy
    edges, v_ge = cumulative_histogram(np.array([0.0]), np.array([4 * bw]), np.array([3.0]), bin_width_gy=bw)
    np.testing.assert_allclose(v_ge, [3.0, 1.5, 0.0, 0.0], rtol=0, atol=1e-12)
    assert np.array_equal(edges, np.arange(4) * bw)


def test_bin_width_limits_and_a_finer_bin():
    stack = box(*BOX_XY, -5.0, 5.0, 2.0)
    dose = linear_dose(30.0, gx=0.5)
    for bad in (0.0, -0.01, 0.0100001):
        with pytest.raises(ValueError, match=r"^bin_width_gy must be in \(0, 0.01\]$"):
            compute_dvh(stack, dose, bin_width_gy=bad)
    fine = compute_dvh(stack, dose, bin_width_gy=1 / 256)
    assert fine.bin_width_gy == 1 / 256
    assert np.array_equal(fine.dose_edges_gy, np.arange(fine.dose_edges_gy.size) / 256)
    assert_uniform_dvh(fine, AREA_XY * 10 / 1000, 30 - 3.3, 30 + 4.65)
    assert compute_dvh(stack, dose, bin_width_gy=0.01).bin_width_gy == 0.01  # the upper limit is allowed


def test_a_prepared_dose_of_another_grid_is_not_used():
    stack = box(*BOX_XY, -5.0, 5.0, 2.0)
    dose = linear_dose(30.0, gx=0.5)
    other = prepare_dose(linear_dose(10.0, gy=2.0))
    assert_uniform_dvh(compute_dvh(stack, dose, prepared=other), AREA_XY * 10 / 1000, 30 - 3.3, 30 + 4.65)
    same = compute_dvh(stack, dose, prepared=prepare_dose(dose))
    assert_uniform_dvh(same, AREA_XY * 10 / 1000, 30 - 3.3, 30 + 4.65)


# --- structures partly outside the dose grid (uniform dose: only volumes are at stake) ---

UNIFORM = 42.0


@pytest.mark.parametrize(
    ("extent", "covered_extent"),
    [
        # x beyond the last column (pixels reach x = 21) and before the first (x = -21)
        ((13.4, 26.6, -5.25, 8.0), (21 - 13.4, 13.25)),
        ((-27.3, -15.2, -5.25, 8.0), (21 - 15.2, 13.25)),
        # y beyond the last row (y = 21.25) and before the first (y = -21.25)
        ((-6.6, 9.3, 14.0, 27.5), (15.9, 21.25 - 14.0)),
        ((-6.6, 9.3, -26.5, -16.0), (15.9, 21.25 - 16.0)),
        # a corner: both x and y partly outside
        ((16.1, 24.7, -29.0, -18.5), (21 - 16.1, 21.25 - 18.5)),
    ],
)
def test_part_outside_the_grid_in_plane_is_uncovered(extent, covered_extent):
    x0, x1, y0, y1 = extent
    stack = box(x0, x1, y0, y1, -5.0, 5.0, 2.0, name="Organ")
    dvh = compute_dvh(stack, linear_dose(UNIFORM))
    whole = (x1 - x0) * (y1 - y0) * 10 / 1000
    covered = covered_extent[0] * covered_extent[1] * 10 / 1000
    assert dvh.volume_cc == pytest.approx(whole, rel=REL)
    assert dvh.uncovered_cc == pytest.approx(whole - covered, rel=REL)
    assert_uniform_dvh_point(dvh, covered, UNIFORM)
    assert dvh.warnings == (f"{whole - covered:.2f} cc of Organ lies outside the dose grid",)


def assert_uniform_dvh_point(dvh: DVH, volume_cc: float, dose_gy: float) -> None:
    """``volume_cc`` at one dose: every dose statistic is that dose."""
    assert dvh.covered_cc == pytest.approx(volume_cc, rel=REL)
    assert dvh.mean_gy == pytest.approx(dose_gy, rel=REL)
    assert dvh.min_gy == pytest.approx(dose_gy, rel=REL) and dvh.max_gy == pytest.approx(dose_gy, rel=REL)
    assert dvh.volume_ge_cc[0] == pytest.approx(volume_cc, rel=REL)
    assert dvh.volume_at_dose(dose_gy - 0.005) == pytest.approx(volume_cc, rel=REL)
    assert dvh.volume_at_dose(dose_gy + 0.01) == pytest.approx(0.0, abs=REL * volume_cc)
    assert evaluate_metric(dvh, "D50%[Gy]") == pytest.approx(dose_gy, abs=0.01)


@pytest.mark.parametrize(
    ("z0", "z1", "slab_mm", "covered_mm"),
    [
        # a sub-slab is covered when its middle lies within half a plane spacing (1.5 mm) of
        # the outermost dose planes, z in [-13.5, 13.5]
        (9.5, 17.5, 2.0, 13.5 - 9.5),
        (-19.5, -7.5, 2.0, 13.5 - 7.5),
        (-16.5, 16.5, 3.0, 27.0),
    ],
)
def test_part_beyond_the_outermost_dose_planes_is_uncovered(z0, z1, slab_mm, covered_mm):
    stack = box(*BOX_XY, z0, z1, slab_mm, name="Organ")
    dvh = compute_dvh(stack, linear_dose(UNIFORM))
    assert dvh.volume_cc == pytest.approx(AREA_XY * (z1 - z0) / 1000, rel=REL)
    assert dvh.uncovered_cc == pytest.approx(AREA_XY * (z1 - z0 - covered_mm) / 1000, rel=REL)
    assert_uniform_dvh_point(dvh, AREA_XY * covered_mm / 1000, UNIFORM)


@pytest.mark.parametrize(
    "extent",
    [(30.0, 50.0, -6.25, 13.75), (-50.0, -30.0, -6.25, 13.75), (-6.6, 13.4, 30.0, 50.0), (-6.6, 13.4, -50.0, -30.0)],
)
def test_wholly_outside_the_grid_has_no_dose_statistics(extent):
    # 20 x 20 x 30 mm = 12 cc, beyond the last column or row, or before the first
    stack = box(*extent, -15.0, 15.0, 3.0, name="Far")
    dvh = compute_dvh(stack, linear_dose(UNIFORM), bin_width_gy=1 / 128)
    assert dvh.volume_cc == pytest.approx(12.0, rel=REL)
    assert dvh.uncovered_cc == pytest.approx(12.0, rel=REL)
    assert (dvh.mean_gy, dvh.min_gy, dvh.max_gy) == (None, None, None)
    assert dvh.covered_cc == pytest.approx(0.0, abs=1e-12)
    assert dvh.dose_at_volume(0.1) is None and dvh.volume_at_dose(0.0) == pytest.approx(0.0, abs=1e-12)
    # an empty curve of one edge at 0 Gy, with the structure's name, end cap and bin width
    assert dvh.name == "Far" and dvh.end_cap is EndCap.HALF_SLAB and dvh.bin_width_gy == 1 / 128
    assert np.array_equal(dvh.dose_edges_gy, [0.0]) and np.array_equal(dvh.volume_ge_cc, [0.0])
    assert dvh.warnings == ("12.00 cc of Far lies outside the dose grid",)


def test_a_sliver_outside_the_grid_is_still_reported():
    # 0.01 mm beyond the last column (x = 21) over 13.25 mm x 2 mm: 0.265 mm3 uncovered
    stack = box(-20.0, 21.01, -5.25, 8.0, 0.0, 2.0, 2.0, name="Organ")
    dvh = compute_dvh(stack, linear_dose(UNIFORM))
    assert dvh.uncovered_cc == pytest.approx(0.01 * 13.25 * 2 / 1000, rel=1e-6)
    assert dvh.warnings == ("0.00 cc of Organ lies outside the dose grid",)


def test_a_grid_away_from_the_origin():
    # the same box and dose as test_gradient_along_x_other_than_one_gy_per_mm, with grid and
    # box moved by (+50, +30, +100) mm: the lattice is placed from the grid's first node
    shift = np.array([50.0, 30.0, 100.0])
    xx = np.meshgrid(Z, Y, X, indexing="ij")[2]
    dose = DoseGrid(30.0 + 0.5 * xx, X + shift[0], Y + shift[1], Z + shift[2])
    x0, x1, y0, y1 = BOX_XY
    stack = box(x0 + shift[0], x1 + shift[0], y0 + shift[1], y1 + shift[1], 95.0, 105.0, 2.0)
    assert_uniform_dvh(compute_dvh(stack, dose), AREA_XY * 10 / 1000, 30 - 3.3, 30 + 4.65)


def test_structure_of_exactly_half_a_cc_is_not_small():
    # 10 x 12.5 x 4 mm = 500 mm3, faces on pixel boundaries: 0.5 cc is not below 0.5 cc
    dvh = compute_dvh(box(-5.0, 5.0, -6.25, 6.25, 0.0, 4.0, 2.0), linear_dose(UNIFORM))
    assert dvh.volume_cc == 0.5
    assert dvh.warnings == () and not dvh.is_small


def test_small_structure_is_flagged():
    # 4 x 5 mm x 2 slabs of 2 mm = 0.08 cc, in a 0.5 Gy/mm gradient along x
    stack = box(-2.0, 2.0, -2.5, 2.5, -2.0, 2.0, 2.0, name="Tiny")
    dvh = compute_dvh(stack, linear_dose(30.0, gx=0.5))
    assert_uniform_dvh(dvh, 0.08, 29.0, 31.0)
    assert dvh.warnings == ("small structure (0.080 cc < 0.5 cc): partial-volume effects dominate",)
    assert dvh.is_small


# --- a dose grid of one plane ---


def test_one_dose_plane_covers_one_pixel_spacing_either_side():
    # a single plane at z = 0 with dx = 2 mm is taken to cover z in [-2, 2]; slabs of 1.5 mm
    # centred at -3, -1.5, 0, 1.5, 3: the outer two are uncovered. Dose 30 + 0.5 x, as in-plane.
    plane = linear_dose(30.0, gx=0.5, z=np.array([0.0]))
    stack = box(*BOX_XY, -3.75, 3.75, 1.5, name="Organ")
    dvh = compute_dvh(stack, plane)
    assert dvh.volume_cc == pytest.approx(AREA_XY * 7.5 / 1000, rel=REL)
    assert dvh.uncovered_cc == pytest.approx(AREA_XY * 3.0 / 1000, rel=REL)
    assert_uniform_dvh(dvh, AREA_XY * 4.5 / 1000, 30 - 3.3, 30 + 4.65)


def test_one_dose_plane_cuts_thick_slabs_into_sub_slabs_of_two_pixel_spacings():
    # a 5 mm slab from z = -1 to 4 is cut into two sub-slabs of 2.5 mm (no thicker than 2 dx =
    # 4 mm), centred at 0.25 (covered) and 2.75 (beyond z = 2: uncovered)
    plane = linear_dose(UNIFORM, z=np.array([0.0]))
    stack = box(*BOX_XY, -1.0, 4.0, 5.0, name="Organ")
    dvh = compute_dvh(stack, plane)
    assert dvh.uncovered_cc == pytest.approx(AREA_XY * 2.5 / 1000, rel=REL)
    assert_uniform_dvh_point(dvh, AREA_XY * 2.5 / 1000, UNIFORM)


def test_sub_slabs_no_thicker_than_the_dose_plane_spacing():
    # two dose planes 3 mm apart cover z in [-1.5, 4.5]; a 7 mm slab from -3.5 to 3.5 is cut
    # into 3 sub-slabs of 7/3 mm centred at -7/3 (uncovered), 0 and 7/3
    two = linear_dose(UNIFORM, z=np.array([0.0, 3.0]))
    dvh = compute_dvh(box(*BOX_XY, -3.5, 3.5, 7.0, name="Organ"), two)
    assert dvh.uncovered_cc == pytest.approx(AREA_XY * 7 / 3 / 1000, rel=REL)
    assert_uniform_dvh_point(dvh, AREA_XY * 14 / 3 / 1000, UNIFORM)
    # on planes 3 mm apart from z = -12: a 7 mm slab from 9.5 to 16.5 gives sub-slabs centred
    # at 10.67, 13 (covered, up to 13.5) and 15.33 (uncovered)
    dvh = compute_dvh(box(*BOX_XY, 9.5, 16.5, 7.0, name="Organ"), linear_dose(UNIFORM))
    assert dvh.uncovered_cc == pytest.approx(AREA_XY * 7 / 3 / 1000, rel=REL)
    # a slab exactly as thick as the spacing stays whole: [12.5, 15.5] is centred at 14,
    # beyond 13.5, and is uncovered as a whole (two halves would leave one covered)
    dvh = compute_dvh(box(*BOX_XY, 9.5, 15.5, 3.0, name="Organ"), linear_dose(UNIFORM))
    assert dvh.uncovered_cc == pytest.approx(AREA_XY * 3 / 1000, rel=REL)


def test_slabs_sampled_in_groups_add_up(monkeypatch):
    # one slab per group (the engine groups slabs to bound its memory): the volumes, the
    # uncovered part and the curve add up over the groups; dose 30 + 0.5 x, box partly
    # beyond the outermost dose planes (z in [-13.5, 13.5], slabs of 3 mm from -16.5)
    monkeypatch.setattr(engine, "_CHUNK_CELLS", 1)
    stack = box(*BOX_XY, -16.5, 10.5, 3.0, name="Organ")
    dvh = compute_dvh(stack, linear_dose(30.0, gx=0.5))
    assert dvh.volume_cc == pytest.approx(AREA_XY * 27 / 1000, rel=REL)
    assert dvh.uncovered_cc == pytest.approx(AREA_XY * 3 / 1000, rel=REL)
    assert_uniform_dvh(dvh, AREA_XY * 24 / 1000, 30 - 3.3, 30 + 4.65)
    # groups of other dose ranges (30.003 + 0.5 z, slabs of 1.5 mm): the curves of the groups,
    # of different lengths, add up (see the test of the dose held beyond the outermost planes)
    stack = box(*BOX_XY, -16.5, 10.5, 1.5, name="Organ")
    dvh = compute_dvh(stack, linear_dose(30.003, gz=0.5), bin_width_gy=1 / 128)
    assert dvh.uncovered_cc == pytest.approx(AREA_XY * 3 / 1000, rel=REL)
    clamped_z_truth(dvh, AREA_XY, -13.5, 10.5, (-12.0, 12.0), 30.003, 0.5)


def test_explicit_line_spacing_of_one_pixel_counts_whole_rows():
    # one scan line per row, at the row's centre: a row counts whole when its centre lies in
    # the box. y in [-5.25, 8.0] holds the centres -5, -2.5, ..., 7.5 (6 rows of 2.5 mm).
    dvh = compute_dvh(box(*BOX_XY, -5.0, 5.0, 2.0), linear_dose(UNIFORM), line_spacing_mm=2.5)
    assert dvh.volume_cc == pytest.approx(15.9 * 6 * 2.5 * 10 / 1000, rel=REL)


def test_d100_rounding_allowance_is_inclusive():
    # dose_at_volume accepts up to covered x (1 + 1e-12), the end included
    dvh = DVH(
        "hand",
        np.array([0.0, 0.01, 0.02]),
        np.array([10.0, 4.0, 0.0]),
        10.0,
        0.0,
        0.01,
        0.0,
        0.02,
        EndCap.HALF_SLAB,
        0.01,
    )
    assert dvh.dose_at_volume(10.0 * (1 + 1e-12)) == 0.0
    assert dvh.dose_at_volume(10.0 * (1 + 3e-12)) is None


def clamped_z_truth(
    dvh: DVH, area_mm2: float, z0: float, z1: float, planes: tuple[float, float], base: float, g: float
):
    """Dose base + g z between the outermost dose planes and held at the outermost plane's dose
    beyond them (within the covered half spacing): for a prism from z0 to z1 (all covered),
    the volume receiving at least base + g t is area x (z1 - max(z0, t)) for t above the
    first plane, and the whole prism for t at or below it (g > 0)."""
    first, last = planes
    t = (dvh.dose_edges_gy - base) / g
    length = np.where(t <= max(first, z0), z1 - z0, np.clip(z1 - np.maximum(z0, t), 0.0, None))
    length = np.where(t > min(last, z1), 0.0, length)
    np.testing.assert_allclose(dvh.volume_ge_cc, area_mm2 * length / 1000, rtol=0, atol=1e-9 * dvh.covered_cc)
    clamped = np.clip([z0, z1], first, last)
    assert dvh.min_gy == pytest.approx(base + g * clamped[0], rel=REL)
    assert dvh.max_gy == pytest.approx(base + g * clamped[1], rel=REL)
    # mean of clip(z): the held parts at the plane doses, the rest linear
    lo_len, hi_len = max(first - z0, 0.0), max(z1 - last, 0.0)
    mid = (clamped[0] + clamped[1]) / 2 * (clamped[1] - clamped[0])
    mean_z = (lo_len * first + hi_len * last + mid) / (z1 - z0)
    assert dvh.mean_gy == pytest.approx(base + g * mean_z, rel=REL)


@pytest.mark.parametrize(("z0", "z1"), [(-13.5, 10.5), (-7.5, 13.5), (-13.5, 13.5)])
def test_dose_is_held_at_the_outermost_plane_within_the_covered_half_spacing(z0, z1):
    # planes from -12 to 12 mm, 3 mm apart, cover z in [-13.5, 13.5]; slabs of 1.5 mm whose
    # sub-slabs beyond the outermost planes lie wholly beyond them. Dose 30.003 + 0.5 z; bins
    # of 1/128 Gy, so that the edges are exact in binary and the held plane doses (24.003 and
    # 36.003 Gy) fall between edges (a step on an edge would be above or below it by rounding).
    dvh = compute_dvh(box(*BOX_XY, z0, z1, 1.5), linear_dose(30.003, gz=0.5), bin_width_gy=1 / 128)
    assert dvh.uncovered_cc == 0.0
    clamped_z_truth(dvh, AREA_XY, z0, z1, (-12.0, 12.0), 30.003, 0.5)


def test_gradient_between_two_dose_planes():
    # two planes at z = 0 and 3 mm cover z in [-1.5, 4.5]; dose 20 + 2.5 z between them, held
    # beyond; slabs of 0.75 mm from -1.5 to 4.5 (one sub-slab each, none straddling a plane)
    two = linear_dose(20.003, gz=2.5, z=np.array([0.0, 3.0]))
    dvh = compute_dvh(box(*BOX_XY, -1.5, 4.5, 0.75), two, bin_width_gy=1 / 128)
    assert dvh.uncovered_cc == 0.0
    clamped_z_truth(dvh, AREA_XY, -1.5, 4.5, (0.0, 3.0), 20.003, 2.5)


@pytest.mark.parametrize("mirrored", [False, True])
def test_triangular_prism_in_a_gradient_along_x(mirrored):
    """A right triangle with legs 12 mm (x) and 10 mm (y), vertices' y on scan-line boundaries:
    its area is exact (the chord is linear in y between vertices). In 30 + 0.5 x Gy the dose
    over it has the triangle's density along x, falling linearly to 0 at the far vertex:
    V(>= 30 + 0.5 x) = V (x1 - x)^2 / 12^2 for x in [x0, x1]; mean 30 + 0.5 (x0 + 4) (and
    mirrored, with the right angle at x1: V (1 - (x - x0)^2 / 12^2), mean 30 + 0.5 (x1 - 4)).
    The centroid is exact along x on each scan line and the curve is exact but for the
    cells that the hypotenuse crosses (asserted: 0.5 % of the volume, 0.005 Gy in the mean
    [measured 2026-11-30: 0.37 % at worst over the whole range, 0.0003 Gy]). Min and Max: the
    cells that the hypotenuse cuts hold a triangle-shaped dose density, whose uniform of the
    same variance reaches beyond it by up to 7.5 % of the cell's dose range (1 Gy here): the
    dose on the right angle's side is within 0.1 Gy [measured 0.004 Gy, and 0.056 Gy beyond
    the true Max when mirrored], the acute vertex's up to 0.3 Gy short of it [measured
    0.22 Gy: its last 0.45 mm hold 0.2 % of the volume].
    """
    x0, x1, y0 = -5.3, 6.7, -5.0  # y0 on a pixel boundary (-6.25 + 5 x 0.25)
    corner = x1 if mirrored else x0
    tri = np.array([[x0, y0], [x1, y0], [corner, y0 + 10.0]])
    stack = SlabStack("Tri", tuple(Slab(z, z + 2.0, (tri,)) for z in (-4.0, -2.0, 0.0, 2.0)), EndCap.HALF_SLAB)
    dvh = compute_dvh(stack, linear_dose(30.0, gx=0.5))
    volume = 12.0 * 10.0 / 2 * 8.0 / 1000
    assert dvh.volume_cc == pytest.approx(volume, rel=REL)
    assert dvh.mean_gy == pytest.approx(30 + 0.5 * (x1 - 4.0 if mirrored else x0 + 4.0), abs=0.005)
    for x in (x0 + 0.5, x0 + 3.0, x0 + 6.0, x0 + 9.0, x0 + 11.5):
        truth = volume * (1 - (x - x0) ** 2 / 144 if mirrored else (x1 - x) ** 2 / 144)
        assert dvh.volume_at_dose(30 + 0.5 * x) == pytest.approx(truth, abs=0.005 * volume), x
    right_angle, acute = (x1, x0) if mirrored else (x0, x1)
    near = dvh.max_gy if mirrored else dvh.min_gy
    far = dvh.min_gy if mirrored else dvh.max_gy
    assert near == pytest.approx(30 + 0.5 * right_angle, abs=0.1)
    assert abs(far - (30 + 0.5 * acute)) <= 0.3 and 30 + 0.5 * x0 - 0.1 <= far <= 30 + 0.5 * x1 + 0.1


def test_box_narrower_than_a_pixel():
    # x in [0.2, 0.9] lies within the pixel centred on x = 0 (spanning [-1, 1]): every scan
    # line starts and ends in one pixel. Dose 30 + 2.5 x: uniform over [30.5, 32.25].
    dvh = compute_dvh(box(0.2, 0.9, -5.25, 8.0, -5.0, 5.0, 2.0), linear_dose(30.0, gx=2.5))
    assert_uniform_dvh(dvh, 0.7 * 13.25 * 10 / 1000, 30.5, 32.25)


def test_box_with_a_square_hole():
    """Rings of one slab combine by parity: a 16 x 15 mm box with a 6 x 5 mm hole. In
    30 + 0.5 x Gy the mean is that of the frame's x centroid; the volume is exact."""
    outer = rect(-7.0, 9.0, -6.25, 8.75)  # faces on pixel boundaries
    hole = rect(-3.0, 3.0, -1.25, 3.75)
    stack = SlabStack("Frame", tuple(Slab(z, z + 2.0, (outer, hole)) for z in (-2.0, 0.0)), EndCap.HALF_SLAB)
    dvh = compute_dvh(stack, linear_dose(30.0, gx=0.5))
    area = 16 * 15 - 6 * 5
    cx = (16 * 15 * 1.0 - 6 * 5 * 0.0) / area  # centroids: outer x = 1, hole x = 0
    assert dvh.volume_cc == pytest.approx(area * 4 / 1000, rel=REL)
    assert dvh.mean_gy == pytest.approx(30 + 0.5 * cx, rel=REL)
    assert dvh.min_gy == pytest.approx(30 - 3.5, rel=REL) and dvh.max_gy == pytest.approx(30 + 4.5, rel=REL)
    # the hole's dose range [28.5, 31.5] holds only the frame's 10 mm of height above and below
    assert dvh.volume_at_dose(28.5) - dvh.volume_at_dose(31.5) == pytest.approx(6 * 10 * 4 / 1000, rel=1e-9)


@pytest.mark.parametrize(
    ("extent", "axis", "covered_mm", "node_dose"),
    [
        # beyond the first column (x = -20, pixels from -21) and the last (x = 20, up to 21)
        ((-25.0, -20.4, -5.25, 8.0), "x", 0.6, 20.0),
        ((20.4, 25.0, -5.25, 8.0), "x", 0.6, 40.0),
        # beyond the first row (y = -20, pixels from -21.25) and the last (y = 20, up to 21.25)
        ((-6.6, 9.3, -30.5, -20.5), "y", 0.75, 20.0),
        ((-6.6, 9.3, 20.5, 30.5), "y", 0.75, 40.0),
    ],
)
def test_dose_beyond_the_outermost_nodes_stays_within_the_nodes(extent, axis, covered_mm, node_dose):
    # only the part in the outermost pixel, beyond the outermost node, is covered. In 30 + 0.5 x
    # (or y) Gy the engine does not extrapolate past the grid: beyond the outermost node the
    # dose is the node's, so Dmin and Dmax are both the node's dose, and the whole covered
    # volume receives it (the samples' spread, which reaches inward by the gradient over the
    # covered part, is held to the extremes)
    x0, x1, y0, y1 = extent
    dose = linear_dose(30.0, gx=0.5) if axis == "x" else linear_dose(30.0, gy=0.5)
    dvh = compute_dvh(box(x0, x1, y0, y1, -5.0, 5.0, 2.0, name="Edge"), dose)
    other = (y1 - y0) if axis == "x" else (x1 - x0)
    assert dvh.covered_cc == pytest.approx(covered_mm * other * 10 / 1000, rel=REL)
    assert dvh.min_gy == pytest.approx(node_dose, rel=REL)
    assert dvh.max_gy == pytest.approx(node_dose, rel=REL)
    assert dvh.dose_at_volume(dvh.covered_cc / 2) == pytest.approx(node_dose, rel=REL)


def test_dose_beyond_the_first_column_and_plane_stays_within_the_first_plane_s_nodes():
    # the corner of the grid: beyond the first column (x in [-21, -20.4] covered) and in the
    # half spacing before the first plane (z in [-13.5, -12]). Dose 30 + 0.5 x on the first
    # six planes, 0 Gy on the last three (far from the box): the box takes the first plane's
    # dose at the first column's nodes, 20 Gy, the whole of it (no extrapolation past the grid)
    zz, _yy, xx = np.meshgrid(Z, Y, X, indexing="ij")
    dose = DoseGrid(np.where(zz < 6.0, 30.0 + 0.5 * xx, 0.0), X, Y.copy(), Z.copy())
    dvh = compute_dvh(box(-25.0, -20.4, -5.25, 8.0, -13.5, -12.0, 1.5, name="Corner"), dose)
    assert dvh.covered_cc == pytest.approx(0.6 * 13.25 * 1.5 / 1000, rel=REL)
    assert dvh.min_gy == pytest.approx(20.0, rel=REL)
    assert dvh.max_gy == pytest.approx(20.0, rel=REL)


@pytest.mark.parametrize("axis", ["x", "y"])
def test_partly_filled_pixel_takes_the_slope_towards_its_filled_side(axis):
    """A box filling one half of a pixel, in a dose whose node values bend (30 + 0.05 u^2 Gy
    along u = x or y, uniform along the others). Between nodes the engine's dose is the
    linear interpolant of the nodes, so over the half pixel from the node u = 4 (x) or 5 (y)
    towards the next node the dose is linear with that interval's slope, and the box's DVH is
    uniform over [d(node), d(node) + slope x extent], exactly (the central difference at the
    node, (d(next) - d(previous)) / (2 spacing), would be 20 % off)."""
    _zz, yy, xx = np.meshgrid(Z, Y, X, indexing="ij")
    u = xx if axis == "x" else yy
    dose = DoseGrid(30.0 + 0.05 * u**2, X, Y.copy(), Z.copy())
    if axis == "x":
        node, step, stack = 4.0, 2.0, box(4.0, 5.0, -5.25, 8.0, -5.0, 5.0, 2.0)
        extent = 1.0
    else:
        node, step, stack = 5.0, 2.5, box(-6.6, 9.3, 5.0, 6.25, -5.0, 5.0, 2.0)
        extent = 1.25
    lo = 30 + 0.05 * node**2
    slope = 0.05 * ((node + step) ** 2 - node**2) / step
    assert_uniform_dvh(compute_dvh(stack, dose), stack.volume_cc, lo, lo + slope * extent)


@pytest.mark.parametrize(
    ("planes", "limits"),
    [((-12.0, 3.0, 9), (-13.5, 13.5)), ((0.0, 3.0, 2), (-1.5, 4.5))],
)
def test_covered_range_along_z_is_half_a_plane_spacing(planes, limits):
    # sub-slabs of 0.5 mm centred 0.25 mm inside and 0.25 mm outside each limit
    z = planes[0] + planes[1] * np.arange(planes[2])
    for limit, inward in ((limits[0], 1.0), (limits[1], -1.0)):
        for offset, covered in ((0.25 * inward, True), (-0.25 * inward, False)):
            centre = limit + offset
            dvh = compute_dvh(box(*BOX_XY, centre - 0.25, centre + 0.25, 0.5), linear_dose(UNIFORM, z=z))
            assert (dvh.uncovered_cc == 0.0) is covered, (limit, offset)


def test_in_plane_gradient_where_the_dose_is_held_beyond_the_outermost_planes():
    # dose 30 + 0.5 x + 0.5 clip(z, -12, 12): the slabs in the covered half spacing beyond the
    # outermost planes take the outermost plane's dose, with the in-plane gradient unchanged
    dose = linear_dose(30.0, gx=0.5, gz=0.5)
    for z0, plane_dose in ((-13.5, 24.0), (12.0, 36.0)):
        dvh = compute_dvh(box(*BOX_XY, z0, z0 + 1.5, 1.5), dose)
        assert_uniform_dvh(dvh, AREA_XY * 1.5 / 1000, plane_dose - 3.3, plane_dose + 4.65)


def test_covered_range_along_z_includes_its_limits():
    # sub-slabs centred exactly half a spacing beyond the outermost planes (z = -13.5 and
    # 13.5) are covered: the covered range is closed
    for z0 in (-14.5, 12.5):
        dvh = compute_dvh(box(*BOX_XY, z0, z0 + 2.0, 2.0), linear_dose(UNIFORM))
        assert dvh.uncovered_cc == 0.0
        assert_uniform_dvh_point(dvh, AREA_XY * 2 / 1000, UNIFORM)


@pytest.mark.parametrize(("z0", "lo", "hi"), [(-12.75, 24.0, 24.375), (11.25, 35.625, 36.0)])
def test_sub_slab_centred_on_an_outermost_plane_reaches_its_inner_face(z0, lo, hi):
    # a 1.5 mm slab centred on the first (last) dose plane in 30 + 0.5 z Gy: the dose over
    # its inner half rises (falls) to that at its inner face, 0.375 Gy away; its outer half is
    # held at the plane's dose. The extremes are exact: the plane's dose and the inner face's.
    dvh = compute_dvh(box(*BOX_XY, z0, z0 + 1.5, 1.5), linear_dose(30.0, gz=0.5))
    assert dvh.min_gy == pytest.approx(lo, rel=REL) and dvh.max_gy == pytest.approx(hi, rel=REL)


def test_cumulative_histogram_of_narrow_ramps_and_a_step_at_the_top():
    bw = 1 / 128
    # a ramp half a bin wide is still a ramp: spread over [1.75, 2.25] bw, half of it >= 2 bw
    edges, v_ge = cumulative_histogram(np.array([2 * bw]), np.array([bw / 2]), np.array([2.0]), bin_width_gy=bw)
    np.testing.assert_allclose(v_ge[:4], [2.0, 2.0, 1.0, 0.0], rtol=0, atol=1e-12)
    # a step exactly on the highest edge it reaches counts at that edge
    edges, v_ge = cumulative_histogram(np.array([2 * bw]), np.array([0.0]), np.array([1.0]), bin_width_gy=bw)
    np.testing.assert_allclose(v_ge, [1.0, 1.0, 1.0, 0.0], rtol=0, atol=1e-12)
    assert np.array_equal(edges, np.arange(4) * bw)


# --- refusals ---


def test_sampling_over_the_memory_budget_is_refused(monkeypatch):
    stack = box(*BOX_XY, -5.0, 5.0, 2.0, name="Organ")
    monkeypatch.setenv("RTQA_MAX_MEMORY", "64K")
    with pytest.raises(DoseGridError, match="the DVH of 'Organ' would need"):
        compute_dvh(stack, linear_dose(UNIFORM))
