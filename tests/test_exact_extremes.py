"""Dmin and Dmax are the extremes of the interpolated dose over the contoured shape itself.

The engine's samples spread each cell's volume over a dose range with the cell's variance; at
the tip of a cone, the rim of a sphere or a flat face that range stops short of the extreme
(a cone's Dmin was 5-9 % off on a 3 mm grid). :func:`rtqa.dvh.engine._extremes` evaluates the
places where a trilinear dose can turn: nodes inside, outline vertices and grid-line crossings,
slab faces and dose planes. The references below are closed forms (a linear dose, which
trilinear interpolation reproduces exactly, at a known point of the outline) or an independent
dense evaluation with SciPy's interpolator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from scipy.interpolate import RegularGridInterpolator

from fixtures import nelms
from rtqa.dvh import engine
from rtqa.dvh.engine import compute_dvh, compute_dvhs
from rtqa.dvh.geometry import EndCap, Slab, SlabStack, evaluate_expression, roi_stack
from rtqa.errors import GeometryError
from rtqa.io import read_dose, read_structure_set
from rtqa.model import DoseGrid
from tests.conftest import case


def _linear_ap_dose(spacing: float, offset: float = 0.0) -> DoseGrid:
    """1 Gy/mm along y, 14.5 Gy at y = 0 (2.5 Gy at -12 mm), on a grid of the given spacing."""
    x = np.arange(-30.0, 30.01, spacing) + offset
    z = np.arange(-30.0, 30.01, spacing)
    _, yy, xx = np.meshgrid(z, x, x, indexing="ij")
    return DoseGrid(14.5 + yy + 0.0 * xx, x, x.copy(), z)


def _polygon_circle(radius: float, n: int = 720) -> np.ndarray:
    """A regular polygon with a vertex at the bottom (-y) and one at the top (+y)."""
    t = -math.pi / 2 + np.arange(n) * 2 * math.pi / n
    return radius * np.column_stack([np.cos(t), np.sin(t)])


@pytest.mark.parametrize("grid_mm", [1.0, 2.0, 3.0])
@pytest.mark.parametrize("offset", [0.0, 0.37])
def test_a_contoured_sphere_in_a_linear_gradient_has_its_outline_extremes(grid_mm, offset):
    # contour stack of a 12 mm sphere on 3 mm planes: its widest section (|z| = 1.5 mm) has
    # radius sqrt(144 - 2.25); with a vertex at -y and +y, Dmin and Dmax are 14.5 -+ that radius
    planes = np.arange(-10.5, 10.6, 3.0)
    slabs = tuple(Slab(z - 1.5, z + 1.5, (_polygon_circle(math.sqrt(144 - z * z)),)) for z in planes)
    dvh = compute_dvh(SlabStack("sphere", slabs, EndCap.HALF_SLAB), _linear_ap_dose(grid_mm, offset))
    r = math.sqrt(144 - 1.5**2)
    assert dvh.min_gy == pytest.approx(14.5 - r, abs=1e-6)
    assert dvh.max_gy == pytest.approx(14.5 + r, abs=1e-6)
    # the curve agrees (edges every 0.01 Gy): all of the volume at the edge below Dmin, none at
    # the edge above Dmax
    edge_below, edge_above = math.floor(dvh.min_gy * 100) / 100, math.ceil(dvh.max_gy * 100) / 100
    assert dvh.volume_at_dose(edge_below) == pytest.approx(dvh.covered_cc, rel=1e-12)
    assert dvh.volume_at_dose(edge_above + 1e-9) == 0.0
    assert dvh.min_gy <= dvh.dose_at_volume(dvh.covered_cc) <= dvh.dose_at_volume(0.0) == dvh.max_gy


@pytest.mark.parametrize(
    ("shape", "gradient", "which", "truth_gy"),
    [
        # the flat base of the lying cone is at y = -12 mm on every plane: Dmin 2.5 Gy exactly
        # (the sampled spread gave 2.27 Gy, -9 %, on the 3 mm grid)
        ("RtCone", "AP", "min_gy", 2.5),
        # the lying cylinder's flat faces are at y = +-12 mm: Dmax 26.5 Gy, Dmin 2.5 Gy exactly
        ("RtCylinder", "AP", "max_gy", 26.5),
        ("RtCylinder", "AP", "min_gy", 2.5),
    ],
)
def test_flat_faces_of_the_benchmark_shapes_give_the_analytic_extreme(tmp_path, shape, gradient, which, truth_gy):
    rs = nelms.write_structure(str(tmp_path), shape, 0.2)
    rd = nelms.write_dose_grid(str(tmp_path), "3", gradient)
    ss, dose = read_structure_set(rs), read_dose(rd)
    stack = roi_stack(ss.rois[0], ss.plane_positions_mm, end_cap=EndCap.HALF_SLAB)
    # the stored dose is quantised (DoseGridScaling): within 1e-6 Gy of the linear dose
    assert getattr(compute_dvh(stack, dose), which) == pytest.approx(truth_gy, abs=1e-5)


def _dense_extremes(stack: SlabStack, dose: DoseGrid, step_mm: float = 0.05) -> tuple[float, float]:
    """An independent evaluation: SciPy's trilinear interpolator at every node inside each slab
    (shapely) and at points every ``step_mm`` along every outline, on each slab's faces and the
    dose planes between them."""
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    f = RegularGridInterpolator((z, y, x), dose.dose_gy)
    xx, yy = np.meshgrid(x, y)
    lo, hi = math.inf, -math.inf
    for sl in stack.slabs:
        zs = np.concatenate([[sl.z_lo_mm, sl.z_hi_mm], z[(z > sl.z_lo_mm) & (z < sl.z_hi_mm)]])
        zs = np.clip(zs, z[0], z[-1])
        inside = shapely.contains_xy(sl.region(), xx.ravel(), yy.ravel())
        pts = [np.column_stack([xx.ravel()[inside], yy.ravel()[inside]])]
        for ring in sl.rings:
            b = np.roll(ring, -1, axis=0)
            n = np.maximum(1, np.ceil(np.hypot(*(b - ring).T) / step_mm)).astype(int)
            e = np.repeat(np.arange(len(ring)), n)
            t = (np.arange(e.size) - np.repeat(np.cumsum(n) - n, n)) / n[e]
            pts.append(ring[e] + (b[e] - ring[e]) * t[:, None])
        p = np.concatenate(pts)
        for zz in zs:
            v = f(np.column_stack([np.full(len(p), zz), np.clip(p[:, 1], y[0], y[-1]), np.clip(p[:, 0], x[0], x[-1])]))
            lo, hi = min(lo, float(v.min())), max(hi, float(v.max()))
    return lo, hi


@pytest.mark.parametrize("end_cap", [EndCap.HALF_SLAB, EndCap.SHAPE])
def test_extremes_agree_with_a_dense_independent_evaluation_on_the_liver_case(liver_tree, end_cap):
    folder = case(liver_tree, "liver_clean")
    ss = read_structure_set(f"{folder}/RS.dcm")
    dose = read_dose(f"{folder}/RD_PLAN.dcm")
    stacks = {n: roi_stack(ss.roi(n), ss.plane_positions_mm, end_cap=end_cap) for n in ("Body", "PTVv", "PTVp", "PTVn")}
    stacks.update({n: roi_stack(ss.roi(n), ss.plane_positions_mm, end_cap=end_cap) for n in ("Duodenum", "SpinalCord")})
    # a ring with holes, whose maximum lies on the holes' outlines next to the targets
    stacks["Body-PTV"] = evaluate_expression("Body - (PTVp | PTVv | PTVn)", stacks, name="Body-PTV")
    for name in ("Body-PTV", "PTVv", "Duodenum", "SpinalCord"):
        dvh = compute_dvh(stacks[name], dose)
        lo, hi = _dense_extremes(stacks[name], dose)
        # the engine evaluates the exact turning points; the dense walk finds the same to within
        # its step times the local gradient (at most about 1 Gy/mm here): 0.05 mm -> 0.05 Gy
        assert dvh.min_gy == pytest.approx(lo, abs=0.05), name
        assert dvh.max_gy == pytest.approx(hi, abs=0.05), name
        # and never beyond a dose the shape holds (the dense walk's nodes are exact values)
        assert dvh.min_gy >= lo - 0.05 and dvh.max_gy <= hi + 0.05


def test_pruning_finds_what_evaluating_everything_finds(liver_tree, monkeypatch):
    """The bounds only skip places that cannot hold an extreme: with every place evaluated
    (outline and sample bounds that exclude nothing), Dmin and Dmax are the same numbers, and
    so is the maximum of the hot end, whose rings are pruned by their boxes' bounds too."""
    folder = case(liver_tree, "liver_clean")
    ss = read_structure_set(f"{folder}/RS.dcm")
    dose = read_dose(f"{folder}/RD_PLAN.dcm")
    names = ("Body", "Liver", "PTVv", "Kidney_R", "Stomach")
    pruned = {n: compute_dvh(roi_stack(ss.roi(n), ss.plane_positions_mm), dose) for n in names}
    # the hot end's maximum (only rings whose boxes reach 90 % of the maximum are outlined)
    hot_end = {
        n: compute_dvhs(
            [roi_stack(ss.roi(n), ss.plane_positions_mm)],
            dose,
            hot_from_gy=math.floor(0.9 * (pruned[n].max_gy or 0.0) / 0.01) * 0.01,
        )[0].max_gy
        for n in names
    }
    real = engine._outline

    def unbounded(*args, **kwargs):  # type: ignore[no-untyped-def]
        ol = real(*args, **kwargs)
        return ol._replace(
            b_lo=np.full(ol.px.size, -np.inf),
            b_hi=np.full(ol.px.size, np.inf),
            q_lo=np.full(ol.qslab.size, -np.inf),
            q_hi=np.full(ol.qslab.size, np.inf),
        )

    real_extremes = engine._extremes

    def every_sample(slabs, dose, pd, samples, *args, **kwargs):  # type: ignore[no-untyped-def]
        # the samples' neighbourhood bounds too: every node is evaluated
        n = samples.dval.size
        return real_extremes(
            slabs, dose, pd, samples._replace(cmin=np.full(n, -np.inf), cmax=np.full(n, np.inf)), *args, **kwargs
        )

    monkeypatch.setattr(engine, "_outline", unbounded)
    monkeypatch.setattr(engine, "_extremes", every_sample)
    monkeypatch.setattr(engine, "_PROBE", 10**9)
    for n in names:
        full = compute_dvh(roi_stack(ss.roi(n), ss.plane_positions_mm), dose)
        assert (full.min_gy, full.max_gy) == (pruned[n].min_gy, pruned[n].max_gy), n
        assert hot_end[n] == full.max_gy, n


def test_a_cold_node_just_inside_a_cut_cell_is_the_minimum():
    # a dose of 20 Gy everywhere but one node at 5 Gy; the square's edge passes 0.3 mm beyond
    # that node, so its cell is cut: the node lies inside (parity over the ring) and is Dmin
    x = np.arange(-10.0, 10.01, 2.0)
    z = np.arange(-6.0, 6.01, 2.0)
    d = np.full((z.size, x.size, x.size), 20.0)
    j = int(np.argmin(np.abs(x - 4.0)))
    k = int(np.argmin(np.abs(z - 0.0)))
    d[k, j, j] = 5.0
    square = np.array([[-4.3, -4.3], [4.3, -4.3], [4.3, 4.3], [-4.3, 4.3]])
    slabs = (Slab(-1.0, 1.0, (square,)),)
    dvh = compute_dvh(SlabStack("sq", slabs, EndCap.HALF_SLAB), DoseGrid(d, x, x.copy(), z))
    assert dvh.min_gy == pytest.approx(5.0, abs=1e-9)
    assert dvh.max_gy == pytest.approx(20.0, abs=1e-9)


@pytest.mark.parametrize("nodes", [(0.0, 10.0), (-10.0, 0.0, 10.0, 20.0)], ids=["one box", "middle of nine"])
def test_a_slanted_edge_through_a_saddle_passes_a_dose_higher_than_its_ends(nodes):
    """Nodes 0, 10, 10, 0 Gy on the corners of one 10 mm box (a saddle: 10 u + 10 v - 20 u v in
    box units, the same on both planes). A thin strip along the diagonal v = 1 - u has 5 Gy at
    both ends of each long edge and, along the edge, 10 (u + (1-u)) - 20 u (1-u) = 10 - 20 u (1-u):
    the dose turns inside the edge, at u = 1/2, to 5 Gy; the short ends hold the box's corners'
    side. Reference: that closed form at the points the strip's outline reaches. The box alone,
    or in the middle of nine whose nodes continue the same formula (whose pieces of outline are
    then found among the boxes of a larger grid)."""
    x = np.array(nodes)
    z = np.array([-5.0, 5.0])
    # [z, y, x]: d(0,0)=0, d(x=10)=10, d(y=10)=10, d(10,10)=0, the bilinear formula beyond
    d = np.array([[[10 * u + 10 * v - 20 * u * v for u in x / 10] for v in x / 10]] * 2)
    w = 0.4  # the strip's half width, across the diagonal
    n = np.array([1.0, 1.0]) / math.sqrt(2)  # unit normal of the diagonal x + y = 10
    p0, p1 = np.array([1.0, 9.0]), np.array([9.0, 1.0])
    strip = np.array([p0 - w * n, p1 - w * n, p1 + w * n, p0 + w * n])
    dvh = compute_dvh(SlabStack("strip", (Slab(-1.0, 1.0, (strip,)),), EndCap.HALF_SLAB), DoseGrid(d, x, x.copy(), z))

    def saddle(px: float, py: float) -> float:
        u, v = px / 10, py / 10
        return 10 * u + 10 * v - 20 * u * v

    # along a long edge u + v = c: the dose is 10 c - 20 u (c - u), lowest at u = c / 2; along a
    # short edge (u, v) = (0.1 + s, 0.9 + s): 8.2 - 20 s^2, highest at its middle, 8.2 Gy
    lows = [10 * c - 20 * (c / 2) ** 2 for c in ((10 - w * math.sqrt(2)) / 10, (10 + w * math.sqrt(2)) / 10)]
    corners = [saddle(*q) for q in strip]
    assert dvh.min_gy == pytest.approx(min(lows), abs=1e-9)
    assert dvh.max_gy == pytest.approx(saddle(1.0, 9.0), abs=1e-9) and saddle(1.0, 9.0) == pytest.approx(8.2)
    # the old candidates (vertices, grid-line crossings) missed both: by > 3 Gy and 0.016 Gy
    assert dvh.min_gy < min(corners) - 3.0 and dvh.max_gy > max(corners) + 0.01


def test_the_dose_where_an_outline_leaves_the_grid_s_coverage_counts():
    """A triangle reaching beyond the last column: its volume out to half a voxel beyond the
    last node is covered (at the last column's dose), and the highest dose there is where its
    slanted edge crosses that limit, not at the last column (reviewer's case, 1 Gy/mm along y)."""
    x = np.arange(0.0, 10.01, 1.0)
    z = np.array([-2.0, 0.0, 2.0])
    _, yy, _ = np.meshgrid(z, x, x, indexing="ij")
    dose = DoseGrid(yy.copy(), x, x.copy(), z)
    tri = np.array([[9.0, 2.0], [14.0, 2.0], [14.0, 7.0]])  # the slanted edge: y = x - 7
    dvh = compute_dvh(SlabStack("t", (Slab(-1.0, 1.0, (tri,)),), EndCap.HALF_SLAB), dose)
    # covered up to x = 10.5, where the slanted edge is at y = 3.5 (its crossing of the last
    # column, x = 10, is at y = 3.0: the old candidates' maximum)
    assert dvh.max_gy == pytest.approx(10.5 - 7, abs=1e-9)
    assert dvh.min_gy == pytest.approx(2.0, abs=1e-9)


def test_non_finite_doses_and_negative_doses_within_a_structure_are_refused_with_a_reason():
    x = np.arange(0.0, 4.01, 1.0)
    square = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]])
    stack = SlabStack("sq", (Slab(-0.5, 0.5, (square,)),), EndCap.HALF_SLAB)
    for bad, reason in ((np.nan, "non-finite"), (np.inf, "non-finite"), (-1.0, "negative")):
        d = np.full((1, x.size, x.size), 10.0)
        d[0, 2, 2] = bad
        with pytest.raises(GeometryError, match=reason):
            compute_dvh(stack, DoseGrid(d, x, x.copy(), np.array([0.0])))
    # a negative dose away from the structure (an analytic gradient's far end) is no concern
    d = np.full((1, x.size, x.size), 10.0)
    d[0, 0, 4] = -5.0
    assert compute_dvh(stack, DoseGrid(d, x, x.copy(), np.array([0.0]))).min_gy == pytest.approx(10.0)


def test_a_comb_of_long_teeth_is_refused_before_its_outline_is_built():
    """Found by a hostile review: 10,000 teeth 1 m long and 1 µm apart cost the scan lines
    little (they run along them) but cross the grid's columns 8 million times, which the exact
    Dmin/Dmax would evaluate: 2 GiB and more, which the budget did not count. It counts them
    now and refuses before allocating, saying why."""
    from rtqa.errors import DoseGridError

    width = 1000.0
    x = np.arange(-10, width + 10, 2.5)
    y = np.arange(-10, 30, 2.5)
    z = np.arange(0, 9, 3.0)
    dose = DoseGrid(np.full((z.size, y.size, x.size), 10.0), x, y, z)
    ys = np.linspace(0, 10, 2 * 10_000 + 1)
    xs = np.where(np.arange(ys.size) % 2 == 0, 0.0, width)
    comb = np.c_[np.r_[xs, -1, -1], np.r_[ys, 10, 0]]
    stack = SlabStack("comb", (Slab(0.0, 3.0, (comb,)),), EndCap.HALF_SLAB)
    with pytest.raises(DoseGridError, match="cross the grid's lines 8,0") as err:
        compute_dvh(stack, dose)
    assert "max-memory" in str(err.value)


def test_a_slab_counted_as_uncovered_adds_nothing_to_dmin_or_dmax():
    """A slab whose middle lies beyond the grid's coverage (half an interval past the last plane)
    is counted wholly outside the grid, although its lowest 0.1 mm lies within it; its outline
    must not reach Dmin/Dmax either (found by a hostile review: the extremes of the same slabs
    then depended on which slabs were sampled together). Dose: 1 Gy/mm along x."""
    x = np.arange(0.0, 30.01, 3.0)
    z = np.array([0.0, 3.0])  # covered up to z = 4.5
    _, _, xx = np.meshgrid(z, x, x, indexing="ij")
    dose = DoseGrid(xx.copy(), x, x.copy(), z)
    near = np.array([[3.0, 3.0], [9.0, 3.0], [9.0, 9.0], [3.0, 9.0]])  # x 3..9
    far = np.array([[3.0, 3.0], [27.0, 3.0], [27.0, 9.0], [3.0, 9.0]])  # x 3..27: hotter
    covered = Slab(3.9, 4.4, (near,))  # middle 4.15: covered
    beyond = Slab(4.4, 5.0, (far,))  # middle 4.7: counted outside the grid
    alone = compute_dvh(SlabStack("a", (covered,), EndCap.HALF_SLAB), dose)
    both = compute_dvh(SlabStack("b", (covered, beyond), EndCap.HALF_SLAB), dose)
    assert both.uncovered_cc == pytest.approx(24 * 6 * 0.6 / 1000)
    assert (both.min_gy, both.max_gy) == pytest.approx((3.0, 9.0)) == (alone.min_gy, alone.max_gy)


@pytest.mark.parametrize("hot_from", [None, 30.0])
def test_a_node_peak_on_a_dose_plane_inside_a_slab_is_the_maximum_though_no_sample_shows_it(hot_from):
    """The maximum of the trilinear dose is at a node: here a 60 Gy node on the dose plane
    z = 4 mm, inside a slab from 0.5 to 6.5 mm, with 10 Gy above and below it. The sub-slab
    middles (1.5, 3.5, 5.5 mm) see it at 47.5 Gy at most, while a 55 Gy node flat over
    z = 2..4 mm shows 55 Gy: the likeliest sample is the wrong one, and Dmax (60 Gy, closed form)
    is found only by visiting every sample whose neighbourhood can beat what is known."""
    x = y = np.arange(0.0, 40.01, 2.0)
    z = np.arange(-4.0, 12.01, 2.0)
    d = np.full((z.size, y.size, x.size), 10.0)
    k = int(np.flatnonzero(z == 4.0)[0])
    d[k, 10, 10] = 60.0  # (x, y, z) = (20, 20, 4)
    d[k - 1 : k + 1, 5, 6] = 55.0  # (12, 10) on z = 2 and 4
    dose = DoseGrid(d, x, y, z)
    ring = np.array([[3.0, 3.0], [37.0, 3.0], [37.0, 37.0], [3.0, 37.0]])
    stack = SlabStack("s", (Slab(0.5, 6.5, (ring,)),), EndCap.NONE)
    (dvh,) = compute_dvhs([stack], dose, max_subslab_mm=2.0, hot_from_gy=hot_from)
    assert dvh.max_gy == 60.0
    if hot_from is None:
        assert dvh.min_gy == 10.0
