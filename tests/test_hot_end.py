"""A DVH computed for its hot end only (issue 21: "only the work the protocol asks for").

When every rule on a derived structure asks only for a dose to a small volume or its maximum
(Body-PTV: D1cc), the engine samples only the cells whose neighbourhood reaches a high dose
and searches Dmax only where the outline can reach it. The references are the whole DVH of the
same structures computed by the same engine without the shortcut: the hot end must agree with
it at every bin edge from the threshold up, and nothing below the threshold may be given.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rtqa.cli.app import cli
from rtqa.dvh.engine import compute_dvhs, hot_threshold_gy
from rtqa.dvh.geometry import EndCap, Slab, SlabStack
from rtqa.model import DoseGrid

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "fixtures" / "demo" / "liver_clean"
CLINICAL = REPO / "fixtures" / "demo" / "clinical.csv"


def _hot_spot_dose() -> DoseGrid:
    """A Gaussian hot spot of 60 Gy (sigma 8 mm) at the origin on a 3 mm grid, 2 Gy floor."""
    x = np.arange(-60.0, 60.01, 3.0)
    z = np.arange(-30.0, 30.01, 3.0)
    zz, yy, xx = np.meshgrid(z, x, x, indexing="ij")
    return DoseGrid(2.0 + 58.0 * np.exp(-(xx**2 + yy**2 + zz**2) / (2 * 8.0**2)), x, x.copy(), z)


def _box_with_hole(z_planes: np.ndarray, cap: EndCap) -> SlabStack:
    """A 100 x 100 mm box with a 10 mm square hole off the hot spot's centre (a Body minus a
    PTV), one slab per plane."""
    outer = np.array([[-50.0, -50.0], [50.0, -50.0], [50.0, 50.0], [-50.0, 50.0]])
    hole = np.array([[3.0, -5.0], [13.0, -5.0], [13.0, 5.0], [3.0, 5.0]])
    slabs = tuple(Slab(z - 1.5, z + 1.5, (outer, hole)) for z in z_planes)
    return SlabStack("Box-Hole", slabs, cap)


def test_the_hot_end_agrees_with_the_whole_dvh_from_its_threshold_up():
    dose = _hot_spot_dose()
    variants = [
        _box_with_hole(np.arange(-15.0, 15.1, 3.0), EndCap.HALF_SLAB),
        _box_with_hole(np.arange(-12.0, 12.1, 3.0), EndCap.NONE),
    ]
    hot = hot_threshold_gy(variants, dose)
    # 90 % of the highest node near the structures (60 Gy at the origin), on a 0.01 Gy edge
    assert hot == pytest.approx(54.0, abs=1e-9)
    whole = compute_dvhs(variants, dose)
    partial = compute_dvhs(variants, dose, hot_from_gy=hot)
    for w, p in zip(whole, partial, strict=True):
        assert p.is_partial and not w.is_partial
        assert p.exact_from_gy == hot
        assert p.volume_cc == w.volume_cc and p.uncovered_cc == w.uncovered_cc
        assert p.max_gy == w.max_gy  # the same exact search, over the places that can reach it
        # every bin edge from the threshold up (the curves may differ in length by trailing zeros)
        n = min(p.dose_edges_gy.size, w.dose_edges_gy.size)
        at = p.dose_edges_gy[:n] >= hot
        # to 1e-5 cc: the histogram's hinge sums cancel large terms (narrow samples weigh
        # volume / width), which leaves about 4e-7 cc of rounding, different in each sum
        assert np.allclose(p.volume_ge_cc[:n][at], w.volume_ge_cc[:n][at], rtol=0, atol=1e-5)
        assert p.volume_at_dose(hot) > 0.2  # the hot end holds 0.245 cc here
        # that rounding over a slope of about 0.06 cc/Gy: 1e-5 Gy; reports give 0.01 Gy
        assert p.dose_at_volume(0.2) == pytest.approx(w.dose_at_volume(0.2), abs=1e-4)
        assert p.dose_at_volume(0.01) == pytest.approx(w.dose_at_volume(0.01), abs=1e-4)
        # below the threshold nothing is known, and nothing is given
        assert p.min_gy is None and p.mean_gy is None
        with pytest.raises(ValueError, match=r"the volume above 53\.00 Gy needs the whole DVH; only doses from 54\.00"):
            p.volume_at_dose(hot - 1.0)
        with pytest.raises(ValueError, match=r"the dose to \d+\.\d{3} cc needs the whole DVH"):
            p.dose_at_volume(w.covered_cc / 2)
        # exactly at the threshold both ways is known
        assert p.dose_at_volume(p.volume_at_dose(hot)) == hot
        with pytest.raises(ValueError, match="needs the whole DVH"):
            _ = p.differential_cc


def test_a_spike_that_no_scan_line_crosses_still_gives_dmax_in_the_hot_end():
    # a 0.01 mm wide spike from a cold square to the hot spot's centre: the cells it passes
    # have no sampled area, so only the outline search can find its tip (60 Gy)
    dose = _hot_spot_dose()
    ring = np.array(
        [
            [-50.0, -50.0],
            [-30.0, -50.0],
            [-30.0, 0.1],
            [0.0, 0.1],
            [0.0, 0.11],
            [-30.0, 0.11],
            [-30.0, 50.0],
            [-50.0, 50.0],
        ]
    )
    stack = SlabStack("spike", (Slab(-1.5, 1.5, (ring,)),), EndCap.HALF_SLAB)
    (whole,) = compute_dvhs([stack], dose)
    (partial,) = compute_dvhs([stack], dose, hot_from_gy=54.0)
    # the tip's vertex (0, 0.1) on the dose plane z = 0, between the nodes (0, 0) and (0, 3)
    # along y: linear interpolation of the node doses, 60 Gy and 2 + 58 exp(-9 / 128)
    node_3 = 2.0 + 58.0 * math.exp(-9.0 / 128.0)
    top = 60.0 + (0.1 / 3.0) * (node_3 - 60.0)
    assert whole.max_gy is not None and whole.max_gy == pytest.approx(top, abs=1e-9)
    assert partial.max_gy == whole.max_gy
    # the spike holds next to no volume: the hot end holds less than 1 cc, which the caller
    # must see (and compute the whole DVH instead)
    assert partial.volume_at_dose(54.0) < 1e-3


def _check_json(tmp_path: Path, protocol: Path, case: Path = DEMO) -> dict:
    """The JSON report's one plan of ``rtqa check CASE`` under ``protocol`` (written beside it);
    the demo passes (exit 0, or 16 for a convention-sensitive grade), and no case is ever an
    internal error (exit 70)."""
    out = tmp_path / f"{protocol.stem}.json"
    args = ["check", str(case), "--clinical", str(CLINICAL), "--protocol", str(protocol)]
    result = CliRunner().invoke(cli, [*args, "--format", "json", "--output", str(out)])
    assert result.exit_code != 70, result.output
    if case == DEMO:
        assert result.exit_code in (0, 16), result.output
    data: dict = json.loads(out.read_text(encoding="utf-8"))
    return data["plans"][0]


def _protocol_with(tmp_path: Path, name: str, extra_rule: str) -> Path:
    src = REPO / "rules" / "nct03535259.yaml"
    text = src.read_text(encoding="utf-8")
    anchor = "  - {id: BODY_HOTSPOT,"
    assert anchor in text
    path = tmp_path / f"{name}.yaml"
    path.write_text(text.replace(anchor, extra_rule + "\n" + anchor), encoding="utf-8")
    for other in (REPO / "rules").iterdir():  # the aliases file the protocol names
        if other.name != src.name and not (tmp_path / other.name).exists():
            shutil.copy(other, tmp_path / other.name)
    return path


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("hot_end")
    shipped = tmp / "nct03535259.yaml"
    shutil.copy(REPO / "rules" / "nct03535259.yaml", shipped)
    mean_too = _protocol_with(
        tmp,
        "mean_too",
        '  - {id: BODY_MEAN, structure: Body-PTV, metric: "Mean[Gy]", per_protocol: "<= 40", source: "test"}',
    )
    half = _protocol_with(
        tmp,
        "half",
        '  - {id: BODY_D50, structure: Body-PTV, metric: "D50%[Gy]", per_protocol: "<= 40", source: "test"}',
    )
    return {k: _check_json(tmp, p) for k, p in (("shipped", shipped), ("mean_too", mean_too), ("half", half))}


def _finding(plan: dict, rule: str) -> dict:
    (f,) = [f for f in plan["findings"] if f["rule"] == rule]
    return f


def test_body_minus_ptv_is_computed_for_its_hot_end_and_grades_as_with_the_whole_dvh(demo_runs):
    shipped, whole = demo_runs["shipped"], demo_runs["mean_too"]
    # the shipped protocol asks only D1cc of Body-PTV: the hot end, said so in the report
    s = shipped["structures"]["Body-PTV"]
    assert s["dvh_from_gy"] > 0 and s["min_gy"] is None and s["mean_gy"] is None
    # a Mean rule on it needs the whole DVH: no threshold, and a minimum and a mean
    w = whole["structures"]["Body-PTV"]
    assert "dvh_from_gy" not in w and w["min_gy"] is not None and w["mean_gy"] is not None
    assert s["volume_cc"] == w["volume_cc"] and s["max_gy"] == w["max_gy"]
    # D1cc, its grade and its values under every end-cap convention are the same either way
    a, b = _finding(shipped, "BODY_HOTSPOT"), _finding(whole, "BODY_HOTSPOT")
    assert (a["value"], a["grade"], a["by_end_cap"]) == (b["value"], b["grade"], b["by_end_cap"])
    # the other structures keep their whole DVHs
    assert shipped["structures"]["Liver-GTV"] == whole["structures"]["Liver-GTV"]
    assert "dvh_from_gy" not in shipped["structures"]["Liver-GTV"]


def test_a_metric_the_hot_end_cannot_hold_gets_the_whole_dvh(demo_runs):
    # D50 % of Body-PTV lies far below 90 % of the highest dose: the hot end does not hold half
    # the volume, so the whole DVH is computed and the minimum and mean are given
    half = demo_runs["half"]
    s = half["structures"]["Body-PTV"]
    assert "dvh_from_gy" not in s and s["mean_gy"] == demo_runs["mean_too"]["structures"]["Body-PTV"]["mean_gy"]
    f = _finding(half, "BODY_D50")
    assert f["value"] is not None and f["value"] < s["max_gy"] / 2


def test_a_structure_all_in_its_hot_end_or_partly_off_the_grid_gets_the_whole_dvh():
    # found by review: with every cell hot, the whole DVH holds large-volume doses at Dmin and
    # the hot end cannot (D100 % came out 0.5 % low); with volume off the grid, the checks count
    # it at 0 Gy or the boundary dose, so the volume a D x % asks for is not the covered one
    from rtqa.dvh.metrics import parse_metric
    from rtqa.evaluation.context import _hot_end_holds

    dose = _hot_spot_dose()
    small = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    core = SlabStack("core", (Slab(-1.0, 1.0, (small,)),), EndCap.HALF_SLAB)
    hot = hot_threshold_gy([core], dose)
    (p,) = compute_dvhs([core], dose, hot_from_gy=hot)
    assert p.volume_at_dose(hot) == pytest.approx(p.covered_cc)  # all of it is hot
    assert not _hot_end_holds(p, parse_metric("D1%[Gy]"))
    # a box reaching 30 mm beyond the grid along x: uncovered volume
    wide = np.array([[-50.0, -50.0], [90.0, -50.0], [90.0, 50.0], [-50.0, 50.0]])
    off = SlabStack("off", (Slab(-1.5, 1.5, (wide,)),), EndCap.HALF_SLAB)
    (q,) = compute_dvhs([off], dose, hot_from_gy=54.0)
    assert q.uncovered_cc > 0 and q.volume_at_dose(54.0) > 0.1
    assert not _hot_end_holds(q, parse_metric("D0.01%[Gy]"))
    # the same two structures otherwise: the check passes on a hot end that holds the volume
    (r,) = compute_dvhs([_box_with_hole(np.array([0.0]), EndCap.HALF_SLAB)], dose, hot_from_gy=54.0)
    assert r.uncovered_cc == 0 and _hot_end_holds(r, parse_metric("D0.01%[Gy]"))


def _cropped_demo(folder: Path, first: int, stop: int) -> Path:
    """The demo case with its dose grid cut to frames [first, stop): Body-PTV then lies partly
    outside the grid (the RS and RP copied as they are)."""
    import pydicom

    folder.mkdir(parents=True, exist_ok=True)
    for f in DEMO.iterdir():
        if f.name != "RD_PLAN.dcm":
            shutil.copy(f, folder / f.name)
    ds = pydicom.dcmread(DEMO / "RD_PLAN.dcm")
    frames = ds.pixel_array[first:stop].copy()
    offsets = [float(v) for v in ds.GridFrameOffsetVector][first:stop]
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + offsets[0]]
    ds.GridFrameOffsetVector = [o - offsets[0] for o in offsets]
    ds.NumberOfFrames = frames.shape[0]
    ds.PixelData = frames.tobytes()
    ds.save_as(folder / "RD_PLAN.dcm")
    return folder


def test_a_dose_grid_that_leaves_body_minus_ptv_partly_uncovered_grades_as_the_whole_dvh(tmp_path):
    # found by review: D1 % of Body-PTV with 6.6 L outside the grid made the plan an internal
    # error; now the whole DVH is used, and the finding is that of a protocol that asks for it
    case = _cropped_demo(tmp_path / "cropped", 25, 55)
    d1 = '  - {id: BODY_D1PCT, structure: Body-PTV, metric: "D1%[Gy]", per_protocol: "<= 55", source: "test"}'
    mean = '  - {id: BODY_MEAN, structure: Body-PTV, metric: "Mean[Gy]", per_protocol: "<= 40", source: "test"}'
    only = _protocol_with(tmp_path, "d1_only", d1)
    whole = _protocol_with(tmp_path, "d1_whole", d1 + "\n" + mean)
    runs = {name: _check_json(tmp_path, protocol, case) for name, protocol in (("only", only), ("whole", whole))}
    a, b = _finding(runs["only"], "BODY_D1PCT"), _finding(runs["whole"], "BODY_D1PCT")
    assert runs["only"]["structures"]["Body-PTV"]["uncovered_cc"] > 1000
    assert (a["value"], a["interval"], a["grade"]) == (b["value"], b["interval"], b["grade"])
    assert a["value"] is not None or a["interval"] is not None


def test_slabs_that_repeat_their_rings_are_measured_once_with_the_same_numbers():
    # Body - PTV cut at the PTV's end caps: thin slabs that repeat a neighbour's rings; the
    # coverage of the distinct sets, spread over the slabs, is that of every slab, bit for bit
    from rtqa.dvh.engine import _coverage, _coverage_of

    outer = np.array([[-50.0, -50.0], [50.0, -50.0], [50.0, 50.0], [-50.0, 50.0]])
    hole = np.array([[3.0, -5.0], [13.3, -5.0], [13.0, 5.7], [3.0, 5.0]])
    tilted = outer @ np.array([[0.96, 0.28], [-0.28, 0.96]])
    rings = [(outer, hole), (outer,), (outer, hole), (tilted,), (outer,), (np.zeros((2, 2)),), (tilted,)]
    slabs = tuple(Slab(z, z + 0.7, r) for z, r in zip(np.arange(7) * 0.7, rings, strict=True))
    xc, yc = np.arange(-60.0, 60.01, 3.0), np.arange(-63.0, 63.01, 3.0)
    got, every = _coverage(slabs, xc, yc, 3.0, 3.0, 10), _coverage_of(slabs, xc, yc, 3.0, 3.0, 10)
    for field in ("index", "area", "cx", "cy", "var_x", "var_y"):
        assert np.array_equal(getattr(got, field), getattr(every, field)), field
    assert got.index.size > 0 and np.all(np.diff(got.index) > 0)


def test_the_html_page_says_which_structure_has_no_curve_and_why(tmp_path):
    out = tmp_path / "demo.html"
    args = ["check", str(DEMO), "--clinical", str(CLINICAL), "--format", "html", "--output", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    assert 'data-structure="Liver-GTV"' in page  # whole DVHs are drawn
    assert 'data-structure="Body-PTV"' not in page  # the hot end alone is not a curve...
    assert "Not drawn: Body-PTV (its DVH was computed from" in page  # ...and the page says so


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("side", ["low", "high"])
@pytest.mark.parametrize("on_node", [True, False])
def test_the_threshold_is_90_percent_of_the_highest_node_within_one_node_of_the_box(axis, side, on_node):
    """hot_threshold_gy's definition, on a 1 mm grid of 1 Gy: a node of 30 Gy at most one node
    spacing beyond the structures' bounding box along one axis counts, a node of 50 Gy beyond
    that does not; the threshold is 0.9 x 30 Gy floored to a bin edge (0.01 Gy)."""
    ax = np.arange(0.0, 30.01, 1.0)
    dose = np.ones((ax.size, ax.size, ax.size))
    shift = 0.0 if on_node else 0.4
    # two structures, the bounding box of their union: x 5..12, y 8..15, z 10..17 (+ shift)
    lo, hi = np.array([5.0, 8.0, 10.0]) + shift, np.array([12.0, 15.0, 17.0]) + shift

    def square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])

    first = SlabStack("a", (Slab(lo[2], lo[2] + 3.0, (square(lo[0], lo[1], lo[0] + 3.0, lo[1] + 3.0),)),), EndCap.NONE)
    second = SlabStack("b", (Slab(hi[2] - 3.0, hi[2], (square(hi[0] - 3.0, hi[1] - 3.0, hi[0], hi[1]),)),), EndCap.NONE)
    centre = [round(float(a + b) / 2) for a, b in zip(lo, hi, strict=True)]
    # the farthest node within one spacing beyond the box along the axis, and the next one
    near = math.ceil(lo[axis] - 1.0 - 1e-9) if side == "low" else math.floor(hi[axis] + 1.0 + 1e-9)
    far = near - 1 if side == "low" else near + 1
    for index, value in ((near, 30.0), (far, 50.0)):
        node = list(centre)
        node[axis] = index
        dose[node[2], node[1], node[0]] = value  # [z, y, x]
    grid = DoseGrid(dose, ax, ax.copy(), ax.copy())
    assert hot_threshold_gy([first, second], grid) == pytest.approx(math.floor(0.9 * 30.0 / 0.01) * 0.01)
    # without the near node the highest node in reach is 1 Gy
    node = list(centre)
    node[axis] = near
    dose[node[2], node[1], node[0]] = 1.0
    assert hot_threshold_gy([first, second], grid) == pytest.approx(0.9)


def test_the_threshold_of_a_structure_below_the_grid_comes_from_the_first_plane_alone():
    """A structure wholly below the first dose plane (off the grid along z): the nodes in reach are
    those of the first plane only (the second is more than a spacing away)."""
    ax = np.arange(0.0, 10.01, 1.0)
    dose = np.ones((ax.size, ax.size, ax.size))
    dose[0, 5, 5], dose[1, 5, 5] = 30.0, 50.0
    ring = np.array([[4.0, 4.0], [6.0, 4.0], [6.0, 6.0], [4.0, 6.0]])
    below = SlabStack("below", (Slab(-3.0, -2.0, (ring,)),), EndCap.NONE)
    grid = DoseGrid(dose, ax, ax.copy(), ax.copy())
    assert hot_threshold_gy([below], grid) == pytest.approx(math.floor(0.9 * 30.0 / 0.01) * 0.01)


@pytest.mark.parametrize("hot_from", [None, 20.0])
def test_a_maximum_on_the_outline_between_nodes_is_found_whatever_the_rings_boxes(hot_from):
    """Dose x + 2y (Gy, mm) on a 3 mm grid whose nodes start off the origin: trilinear
    interpolation reproduces it exactly, so a ring's maximum is at its corner of largest x + 2y,
    between nodes (closed form: 10.4 + 2 x 10.2 = 30.8 Gy, while the hottest node inside the
    ring holds 27.5 Gy). The hot end finds it only if the bounds of the ring's boxes are right
    (rtqa.dvh.engine._outline_bounds: the ring is searched when they reach above the best node);
    two colder rings and a second slab share the structure."""
    x = np.arange(-1.5, 40.0, 3.0)
    y = np.arange(-2.0, 40.0, 3.0)
    z = np.arange(-1.0, 20.0, 3.0)
    _, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    dose = DoseGrid(xx + 2.0 * yy, x, y, z)

    def rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])

    hot = rect(4.4, 4.1, 10.4, 10.2)
    cold = (rect(1.0, 1.0, 3.0, 2.5), np.array([[20.0, 0.5], [24.0, 0.5], [22.0, 2.0]]))  # a triangle too
    st = SlabStack(
        "s", (Slab(4.0, 7.0, (cold[0], hot, cold[1])), Slab(7.0, 10.0, (rect(1.0, 1.0, 2.0, 2.0),))), EndCap.NONE
    )
    (d,) = compute_dvhs([st], dose, hot_from_gy=hot_from)
    assert d.max_gy == pytest.approx(10.4 + 2 * 10.2, abs=1e-9)


def test_the_bounds_of_each_ring_are_those_of_the_boxes_its_edges_cross():
    """rtqa.dvh.engine._outline_bounds against a brute-force reference on random node values:
    each edge sampled at 4001 points, each point's box (clamped to the grid, as interpolation
    clamps) over the dose intervals the slab meets. The engine's bounds must hold every box an
    edge crosses (low <= their lowest node, high >= their highest) and no box more than one box
    away from them (it cuts edges into pieces of under a box: each lies within 2 x 2 boxes).
    A ring with an edge longer than 63 boxes has no bound (-inf, +inf); a slab beyond the grid's
    z coverage has none to give (+inf, -inf)."""
    from rtqa.dvh.engine import _counted_z, _outline_bounds, prepare_dose

    rng = np.random.default_rng(21)
    x, y, z = np.arange(-7.0, 60.0, 3.0), np.arange(-4.0, 50.0, 2.5), np.arange(-10.0, 20.0, 2.0)
    nodes = rng.uniform(0.0, 60.0, (z.size, y.size, x.size))
    dose = DoseGrid(nodes, x, y, z)
    rings = [
        np.array([[4.4, 4.1], [10.4, 4.1], [10.4, 10.2], [4.4, 10.2]]),  # a rectangle
        np.array([[20.0, 3.0], [31.5, 7.7], [22.2, 15.9]]),  # a triangle, slanted edges
        np.array([[-20.0, 30.0], [5.0, 30.0], [5.0, 60.0]]),  # partly beyond the grid (clamped)
        np.array([[40.0, 10.0], [41.0, 10.0], [41.0, 11.0], [40.0, 11.0]]),  # within one box
    ]
    far = np.array([[0.0, 0.0], [400.0, 0.0], [0.0, 5.0]])  # an edge of over 63 boxes: unbounded
    above = Slab(40.0, 43.0, (rings[0],))  # beyond the grid's z coverage: nothing counted, no bound
    slabs = (Slab(-1.0, 2.0, tuple(rings[:2])), Slab(2.0, 5.5, (rings[2], far)), Slab(5.5, 6.0, (rings[3],)), above)
    lo, hi, ok = _counted_z(slabs, dose, 2.0)
    low, high = _outline_bounds(slabs, dose, prepare_dose(dose), lo, hi, ok)

    def box_range(px: np.ndarray, py: np.ndarray, ks: list[int], grow: int) -> tuple[float, float]:
        j = np.clip(np.floor((px - x[0]) / 3.0).astype(int), 0, x.size - 2)
        i = np.clip(np.floor((py - y[0]) / 2.5).astype(int), 0, y.size - 2)
        vals = []
        for di in range(-grow, grow + 1):
            for dj in range(-grow, grow + 1):
                ii, jj = np.clip(i + di, 0, y.size - 2), np.clip(j + dj, 0, x.size - 2)
                for k in ks:
                    for dk in (0, 1):
                        for a in (0, 1):
                            for b in (0, 1):
                                vals.append(nodes[k + dk, ii + a, jj + b])
        v = np.concatenate(vals)
        return float(v.min()), float(v.max())

    n = 0
    for s, sl in enumerate(slabs):
        # the dose intervals [z_k, z_k+1] the counted z range meets
        if sl is above:
            assert not ok[s] and (low[n], high[n]) == (np.inf, -np.inf)
            n += 1
            continue
        ks = [k for k in range(z.size - 1) if z[k] < hi[s] and z[k + 1] > lo[s]]
        assert ks and ok[s]
        for ring in sl.rings:
            if ring is far:
                assert (low[n], high[n]) == (-np.inf, np.inf)
                n += 1
                continue
            t = np.linspace(0.0, 1.0, 4001)[:, None]
            pts = np.concatenate([ring[m] + t * (ring[(m + 1) % len(ring)] - ring[m]) for m in range(len(ring))])
            crossed_lo, crossed_hi = box_range(pts[:, 0], pts[:, 1], ks, 0)
            near_lo, near_hi = box_range(pts[:, 0], pts[:, 1], ks, 1)
            assert low[n] <= crossed_lo and high[n] >= crossed_hi, n
            assert low[n] >= near_lo - 1e-4 and high[n] <= near_hi + 1e-4, n
            n += 1
    assert n == low.size == high.size == 6


def test_whether_the_hot_end_holds_a_metric_is_decided_on_the_volume_it_holds():
    """_hot_end_holds on one hot end of the hot-spot box (volume v above the threshold T, of C cc
    covered): a maximum always; a dose to a volume when v holds it (0.5 % under v yes, 0.5 % over
    no, in cc and in %); D100 % never (its dose lies below T); a volume larger than the structure
    yes (the metric does not exist on either DVH); and nothing once a little of the structure
    lies outside the grid."""
    from rtqa.dvh.metrics import parse_metric
    from rtqa.evaluation.context import _hot_end_holds

    dose = _hot_spot_dose()
    stack = _box_with_hole(np.arange(-15.0, 15.1, 3.0), EndCap.HALF_SLAB)
    hot = hot_threshold_gy([stack], dose)
    (p,) = compute_dvhs([stack], dose, hot_from_gy=hot)
    v, c = p.volume_at_dose(hot), p.covered_cc
    assert 0 < v < c
    assert _hot_end_holds(p, parse_metric("Max[Gy]"))
    assert _hot_end_holds(p, parse_metric(f"D{v * 0.995:.6f}cc[Gy]"))
    assert not _hot_end_holds(p, parse_metric(f"D{v * 1.005:.6f}cc[Gy]"))
    assert _hot_end_holds(p, parse_metric(f"D{100 * v / c * 0.995:.6f}%[Gy]"))
    assert not _hot_end_holds(p, parse_metric(f"D{100 * v / c * 1.005:.6f}%[Gy]"))
    assert not _hot_end_holds(p, parse_metric("D100%[Gy]"))
    assert _hot_end_holds(p, parse_metric(f"D{2 * c:.3f}cc[Gy]"))
    # the same box reaching 0.2 mm beyond the grid's last column (under 1 cc uncovered)
    outer = np.array([[-50.0, -50.0], [61.7, -50.0], [61.7, 50.0], [-50.0, 50.0]])
    edge = SlabStack("edge", (Slab(-1.5, 1.5, (outer,)),), EndCap.HALF_SLAB)
    (q,) = compute_dvhs([edge], dose, hot_from_gy=hot)
    assert 0 < q.uncovered_cc < 1.0
    assert not _hot_end_holds(q, parse_metric("Max[Gy]"))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("", ("D1cc[%]",)),
        (
            '  - {id: BODY_MAX, structure: Body-PTV, metric: "Max[Gy]", per_protocol: "<= 60", source: "test"}',
            ("Max[Gy]", "D1cc[%]"),
        ),
        ('  - {id: BODY_MEAN, structure: Body-PTV, metric: "Mean[Gy]", per_protocol: "<= 40", source: "test"}', ()),
        ('  - {id: BODY_V40, structure: Body-PTV, metric: "V40Gy[cc]", per_protocol: "<= 400", source: "test"}', ()),
        (
            '  - {id: BODY_EQD2, structure: Body-PTV, metric: "D1cc[Gy]", dose: eqd2, per_protocol: "<= 60", '
            'source: "test"}',
            (),
        ),
    ],
    ids=["shipped", "Max too", "Mean", "a volume", "EQD2"],
)
def test_the_hot_end_is_chosen_only_when_every_rule_on_the_structure_is_a_physical_d_or_max(tmp_path, extra, expected):
    """CaseContext.hot_end_metrics on protocol variants: the metrics of Body-PTV's rules when each
    is a constraint on it asking a physical D or Max; nothing (the whole DVH) when any rule asks
    more of it (a mean, a volume, a dose in EQD2)."""
    from rtqa.case import LoadedCase, PlanSet
    from rtqa.evaluation.context import CaseContext
    from rtqa.io import read_dose, read_structure_set
    from rtqa.protocol.loader import load_protocol

    path = _protocol_with(tmp_path, "variant", extra) if extra else REPO / "rules" / "nct03535259.yaml"
    protocol = load_protocol(str(path))
    ss = read_structure_set(DEMO / "RS.dcm")
    case = LoadedCase(PlanSet("P", (), None, ()), (), ss, read_dose(DEMO / "RD_PLAN.dcm"), None, (), ("read",))
    got = CaseContext(case, protocol, None).hot_end_metrics("Body-PTV")
    assert tuple(m.text for m in got) == expected
    # an organ of the protocol's structure list never gets a hot end, whatever its rules
    assert CaseContext(case, protocol, None).hot_end_metrics("SpinalCord") == ()
