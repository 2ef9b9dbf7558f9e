"""Structures as stacks of slabs, and boolean operations between them. Pure.

Each contour plane of an ROI owns a slab reaching halfway to the neighbouring planes of the
structure set (the CT slices, in effect), so irregular spacing is honoured and a slice an ROI
skips leaves a gap. At the first and last plane of the ROI the end-cap convention applies:
``half_slab`` (the default: half a slab beyond), ``none`` (the outer contours are the faces, as
most planning systems report) or ``shape`` (the end estimated from the trend of the outer
contours: :func:`_shape_end`).
Contours on one plane combine by parity (even-odd), so holes and islands need no flags.

Derived structures (``Liver - (GTVp | GTVv)``) are formed slab by slab with shapely polygon
operations, on the common refinement of both operands' slab limits, before any sampling:
their volumes are exact at the boundaries.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import shapely
import shapely.affinity
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from rtqa.deadline import check_time
from rtqa.dvh.expression import EndCap as EndCap  # re-exported: where callers have always found it
from rtqa.dvh.expression import Margin, Name, Node, SetOp, parse_expression
from rtqa.dvh.expression import expression_names as expression_names
from rtqa.errors import GeometryError, MissingStructureError
from rtqa.model import FloatArray, Roi

MIN_VOLUME_CC = 0.01


@dataclass(frozen=True, eq=False)
class Slab:
    z_lo_mm: float
    z_hi_mm: float
    rings: tuple[FloatArray, ...]  # combined by parity

    @property
    def thickness_mm(self) -> float:
        return self.z_hi_mm - self.z_lo_mm

    def region(self) -> BaseGeometry:
        """The parity combination of the rings as a valid shapely geometry."""
        polys = [shapely.make_valid(Polygon(r)) for r in self.rings if len(r) >= 3]
        if not polys:
            return Polygon()
        # parity folds only rings that overlap: each group of rings whose bounding boxes touch
        # is folded alone, and the groups, disjoint, are joined in one union (folding every ring
        # into one growing geometry is quadratic: 100,000 squares on a plane took minutes)
        parts = []
        for group in _overlap_groups(polys):
            geom = polys[group[0]]
            for k in group[1:]:
                geom = geom.symmetric_difference(polys[k])
            parts.append(geom)
        return parts[0] if len(parts) == 1 else shapely.union_all(parts)


@dataclass(frozen=True, eq=False)
class SlabStack:
    """A structure ready for the DVH engine: named slabs, lowest first."""

    name: str
    slabs: tuple[Slab, ...]
    end_cap: EndCap

    @functools.cached_property
    def volume_cc(self) -> float:
        return sum(_rings_area(s.rings) * s.thickness_mm for s in self.slabs) / 1000.0

    @property
    def bounds_mm(self) -> tuple[float, float, float, float, float, float]:
        pts = np.concatenate([r for s in self.slabs for r in s.rings])
        return (
            float(pts[:, 0].min()),
            float(pts[:, 1].min()),
            self.slabs[0].z_lo_mm,
            float(pts[:, 0].max()),
            float(pts[:, 1].max()),
            self.slabs[-1].z_hi_mm,
        )


def shoelace_area(ring: FloatArray) -> float:
    """The area of one closed ring (its last point joins its first) by the shoelace formula:
    the same sum as with ``np.roll``, in slices (``np.roll`` copies, and a plan has thousands
    of rings). Fewer than three points enclose nothing: 0."""
    if len(ring) < 3:
        return 0.0
    x, y = ring[:, 0], ring[:, 1]
    twice = np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]) + (x[-1] * y[0] - x[0] * y[-1])
    return float(abs(twice) / 2)


def _rings_area(rings: tuple[FloatArray, ...]) -> float:
    """Area of rings combined by parity, for non-crossing rings (nested or disjoint)."""
    if not rings:
        return 0.0
    if len(rings) == 1:  # most planes: the shoelace formula, no geometry objects
        r = rings[0]
        if len(r) < 3:
            return 0.0
        with np.errstate(all="ignore"):  # a hostile ring gives inf or NaN, as below
            return shoelace_area(r)
    polys = [Polygon(r) for r in rings if len(r) >= 3]
    if not polys:
        return 0.0
    # parity of nesting: a ring inside an odd number of others is a hole; the rings that may
    # hold a ring's representative point come from a spatial index, not from every other ring
    # a hostile ring (1e300 mm across, or degenerate) gives inf, NaN or no point, as the scalar
    # Polygon.area, representative_point and float sums did, without the ufuncs' warnings
    with np.errstate(all="ignore"):
        areas = np.abs(shapely.area(polys))
        points = shapely.point_on_surface(polys)
        inner, outer = shapely.STRtree(polys).query(points, predicate="within")
        # of two rings of equal area (one outline drawn twice) the first encloses the second, so
        # that they cancel as parity says
        encloses = (outer != inner) & (
            (areas[outer] > areas[inner]) | ((areas[outer] == areas[inner]) & (outer < inner))
        )
        depth = np.bincount(inner[encloses], minlength=len(polys))
        return float(np.where(depth % 2 == 1, -areas, areas).sum())


def _overlap_groups(polys: list[BaseGeometry]) -> list[list[int]]:
    """The indices of ``polys`` in groups whose bounding boxes touch (transitively), each
    group in input order, found with a spatial index (no pairwise loop)."""
    first, second = _overlapping_pairs(polys)
    parent = list(range(len(polys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(first.tolist(), second.tolist(), strict=True):
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in range(len(polys)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _overlapping_pairs(polys: list[BaseGeometry]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Index pairs ``(i, j)``, ``i < j``, of polygons whose bounding boxes touch (STRtree)."""
    if len(polys) < 2:
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    first, second = shapely.STRtree(polys).query(polys)
    keep = first < second
    return first[keep], second[keep]


# Two rings on one plane whose even-odd difference is on average thinner than this are one
# outline drawn twice (copied, re-imported, or drawn again with the start point moved or the
# winding reversed), not an organ wall: no CT-based contour resolves a wall under 0.5 mm.
COINCIDENT_WALL_MM = 0.5

# A ring that crosses itself or retraces its own outline, or two rings of one plane that overlap
# without one enclosing the other, are a drawing defect: by parity the overlapped part is cancelled
# (or, for a figure-eight, depends on the rule used). Below this area the defect is taken for
# export noise (a knot at the closing point, two islands touching); 1 mm2 is a tenth of what
# 0.03 cc holds on a 3 mm slab (10 mm2), so it cannot move a near-maximum dose.
DEFECT_AREA_MM2 = 1.0


def coincident_rings(rings: tuple[FloatArray, ...]) -> bool:
    """Whether two rings of a plane (nearly) coincide, so that parity would cancel them."""
    return any(kind == "coinciding" for kind, _ in _pair_defects(rings)[0])


def plane_ring_defects(rings: tuple[FloatArray, ...]) -> list[str]:
    """What makes the parity combination of one plane's rings untrustworthy.

    A ring that crosses itself (a figure-eight) or traces its outline twice; two rings that
    coincide (one outline drawn twice, whatever its start point, winding or extra vertices); two
    rings that cross each other (neither disjoint nor one inside the other). Holes (a ring inside
    another) and islands are not defects. Candidate pairs come from an R-tree of the rings'
    bounding boxes, so a plane of thousands of rings costs about as much as its rings.

    Examples
    --------
    >>> square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    >>> plane_ring_defects((square, square + 5.0))
    ['two contours cross each other (parity cancels the 25.0 mm2 they share)']
    >>> plane_ring_defects((np.vstack([square, square]),))
    ['a contour traces its outline twice (parity cancels 100.0 mm2)']
    """
    out = [m for r in rings if (m := _self_defect(r)) is not None]
    pairs, partial = _pair_defects(rings)
    if any(kind == "coinciding" for kind, _ in pairs):
        out.append("two coinciding contours (they cancel each other by parity)")
    crossing = [a for kind, a in pairs if kind == "crossing"]
    if crossing:
        least = "at least " if partial else ""
        two = (
            "two contours cross"
            if len(crossing) == 1 and not partial
            else f"{least}{len(crossing)} pairs of contours cross"
        )
        out.append(f"{two} each other (parity cancels {least}the {sum(crossing):.1f} mm2 they share)")
    return out


def _self_defect(ring: FloatArray) -> str | None:
    """A ring that retraces or crosses itself, judged by the winding number of each face its
    outline cuts the plane into: a simple ring (and a keyhole ring, whose channel has no width)
    winds once around what it encloses, in one direction."""
    if len(ring) < 4 or shapely.is_simple(shapely.linearrings(ring)):
        return None
    line = shapely.linestrings(np.vstack([ring, ring[:1]]))
    faces = shapely.get_parts(shapely.polygonize(shapely.get_parts(shapely.node(line))))
    if faces.size == 0:
        return None
    areas = shapely.area(faces)
    inside = np.array([p.coords[0] for p in shapely.point_on_surface(faces)])
    wn = _winding_numbers(ring, inside)
    twice = float(areas[np.abs(wn) >= 2].sum())
    if twice > DEFECT_AREA_MM2:
        return f"a contour traces its outline twice (parity cancels {twice:.1f} mm2)"
    positive, negative = float(areas[wn > 0].sum()), float(areas[wn < 0].sum())
    if min(positive, negative) > DEFECT_AREA_MM2:
        return f"a contour crosses itself (a figure-eight of {positive:.1f} and {negative:.1f} mm2)"
    return None


def _winding_numbers(ring: FloatArray, points: FloatArray, *, chunk: int = 256) -> FloatArray:
    """How many times the closed ring winds around each point (signed), vectorised over edges."""
    a, b = ring, np.roll(ring, -1, axis=0)
    out = np.empty(len(points))
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk, None, :]
        cross = (b[:, 0] - a[:, 0]) * (p[..., 1] - a[:, 1]) - (p[..., 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
        up = (a[:, 1] <= p[..., 1]) & (b[:, 1] > p[..., 1]) & (cross > 0)
        down = (a[:, 1] > p[..., 1]) & (b[:, 1] <= p[..., 1]) & (cross < 0)
        out[start : start + chunk] = up.sum(axis=1) - down.sum(axis=1)
    return out


def _pair_defects(rings: tuple[FloatArray, ...], *, chunk: int = 4096) -> tuple[list[tuple[str, float]], bool]:
    """``("coinciding", area)`` or ``("crossing", shared area)`` for each defective pair of rings,
    and whether the search stopped early: overlapping pairs are examined ``chunk`` at a time, and
    after a chunk that found a defect the rest (only a hostile plane has thousands) are left."""
    rings = tuple(r for r in rings if len(r) >= 3)
    if len(rings) < 2:
        return [], False
    polys = shapely.polygons([shapely.linearrings(r) for r in rings])
    invalid = ~shapely.is_valid(polys)
    polys[invalid] = shapely.make_valid(polys[invalid])
    area, length = shapely.area(polys), shapely.length(polys)
    left, right = shapely.STRtree(polys).query(polys)  # pairs whose bounding boxes meet
    keep = (left < right) & (area[left] > 0) & (area[right] > 0)
    left, right = left[keep], right[keep]
    found: list[tuple[str, float]] = []
    for start in range(0, left.size, chunk):
        if found:
            return found, True
        i, j = left[start : start + chunk], right[start : start + chunk]
        shared = shapely.area(shapely.intersection(polys[i], polys[j]))
        small, large = np.minimum(area[i], area[j]), np.maximum(area[i], area[j])
        # the symmetric difference of two outlines of one shape is a thin band along them; its
        # mean width is its area over the outline length
        width = (area[i] + area[j] - 2 * shared) / np.maximum(length[i], length[j])
        coinciding = (small >= 0.5 * large) & (shared >= 0.5 * large) & (width < COINCIDENT_WALL_MM)
        crossing = ~coinciding & (shared > DEFECT_AREA_MM2) & (small - shared > DEFECT_AREA_MM2)
        found += [("coinciding", float(a)) for a in small[coinciding]]
        found += [("crossing", float(a)) for a in shared[crossing]]
    return found, False


def roi_stack(roi: Roi, plane_positions_mm: FloatArray, *, end_cap: EndCap = EndCap.HALF_SLAB) -> SlabStack:
    """The slab stack of an ROI.

    Parameters
    ----------
    roi
        The ROI with its closed contours grouped by plane.
    plane_positions_mm
        Every contour plane of the structure set (sorted); it fixes the slab limits.
    end_cap
        Convention at the ROI's first and last plane.

    Raises
    ------
    MissingStructureError
        The ROI encloses no volume (no closed contours, or under 0.01 cc).
    """
    if roi.is_empty:
        raise MissingStructureError(f"ROI {roi.name!r} has no closed contours: it is missing, not zero dose")
    grid = np.asarray(plane_positions_mm, dtype=np.float64)
    if grid.size < 2:
        raise MissingStructureError(
            f"ROI {roi.name!r} lies on a single plane and the structure set has no other plane: "
            "its thickness is unknown"
        )
    zs = np.array([p.z_mm for p in roi.planes])
    idx = np.clip(np.searchsorted(grid, zs), 0, grid.size - 1)
    # nearest structure-set plane of each ROI plane; of two equally near, the upper one
    left = np.clip(idx - 1, 0, grid.size - 1)
    k = np.where(np.abs(grid[left] - zs) < np.abs(grid[idx] - zs), left, idx)
    typical = float(np.median(np.diff(grid)))
    slabs = []
    for n, (plane, kk) in enumerate(zip(roi.planes, k, strict=True)):
        check_time()  # the plan's time budget, for threads that no timer signal reaches
        z = plane.z_mm
        below = grid[kk - 1] if kk > 0 else None
        above = grid[kk + 1] if kk + 1 < grid.size else None
        # a neighbouring plane far away (a stray marker contour above the anatomy, or a run of
        # planes the ROI skips) must not stretch this slab: beyond twice the typical spacing,
        # the slab reaches half a typical spacing, as it would with a regular neighbour
        if below is not None and z - below > 2 * typical:
            below = z - typical
        if above is not None and above - z > 2 * typical:
            above = z + typical
        lo = (z + below) / 2 if below is not None else z - (above - z) / 2  # type: ignore[operator]
        hi = (z + above) / 2 if above is not None else z + (z - below) / 2  # type: ignore[operator]
        if end_cap is EndCap.NONE:
            if n == 0:
                lo = z
            if n == len(roi.planes) - 1:
                hi = z
        if hi > lo:
            slabs.append(Slab(float(lo), float(hi), plane.rings))
    if end_cap is EndCap.SHAPE and len(slabs) == len(roi.planes) >= 2:
        zs_roi = [p.z_mm for p in roi.planes]
        top = _shape_end(slabs, zs_roi, typical, 1.0)
        bottom = _shape_end(slabs[::-1], zs_roi[::-1], typical, -1.0)  # the bottom, as seen from below
        slabs = bottom + slabs[1:-1] + top
    stack = SlabStack(roi.name, tuple(slabs), end_cap)
    if not slabs or stack.volume_cc < MIN_VOLUME_CC:
        raise MissingStructureError(
            f"ROI {roi.name!r} encloses {stack.volume_cc if slabs else 0.0:.4f} cc (< {MIN_VOLUME_CC} cc): "
            "treated as missing"
        )
    return stack


# ------------------------------------------------------------------------------------------------
# The ``shape`` end cap

SHAPE_CAP_SUBSLABS = 6  # sub-slabs of the estimated end (its outline narrows from one to the next)
SHAPE_CAP_MAX_GROWTH = 1.5  # an end that widens outward (a cone's base) widens at most this much


def _shape_end(slabs: list[Slab], zs: list[float], typical: float, direction: float) -> list[Slab]:
    """The slabs (lowest first) that replace the last slab of a stack by its estimated true end:
    ``zs`` are the ROI's planes and ``slabs`` theirs, both in outward order (``direction`` +1 for
    the top end, -1 for the bottom end, the lists then reversed).

    The width of the outline along x and along y (of its bounding box) is fitted, squared, by a
    quadratic in the distance beyond the last plane through the last three planes (a line
    through two): exact for a sphere or a dome (squared half-width quadratic), a cone
    (half-width linear) and a cylinder (constant), along or across its axis. The structure ends
    where a fitted width reaches zero, if it does within the distance to the next plane of the
    structure set (where the structure is not drawn, so it does not reach it); otherwise the end
    is flat, half a slab beyond (the expected place of a face somewhere between two planes), the
    outline following the trend (widening at most 1.5 times). From halfway to the neighbouring
    plane to that end, the last contour is scaled about the extrapolated centre of its box to
    the fitted widths, in sub-slabs whose areas are the fit's integral over them.
    """
    last = slabs[-1]
    z_end = zs[-1]
    # the planes of this end's run: neighbours no further than twice the typical spacing
    run = [len(zs) - 1]
    while run[-1] > 0 and len(run) < 3 and abs(zs[run[-1]] - zs[run[-1] - 1]) <= 2 * typical + 1e-6:
        run.append(run[-1] - 1)
    if len(run) < 2:
        return [last]
    boxes = []
    for i in run:
        region = slabs[i].region()
        if region.is_empty or region.area <= 1e-9:
            return [last]
        boxes.append(region.bounds)
    b = np.array(boxes, dtype=np.float64)  # x0, y0, x1, y1
    width = np.column_stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]])
    centre = np.column_stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2])
    if np.any(width <= 0):
        return [last]
    t = np.array([direction * (zs[i] - z_end) for i in run])  # 0, then negative (inward)
    outer = direction * ((last.z_hi_mm if direction > 0 else last.z_lo_mm) - z_end)
    reach = 2 * outer  # to the next plane of the structure set, where the structure is absent
    inner = direction * ((last.z_lo_mm if direction > 0 else last.z_hi_mm) - z_end)  # negative
    deg = min(2, len(run) - 1)
    fits = [np.polyfit(t, width[:, k] ** 2, deg) for k in (0, 1)]
    ends = [r for f, w in zip(fits, width[0], strict=True) for r in _first_root(f, w * w, reach)]
    e = min(ends) if ends else reach / 2
    moves = [np.polyfit(t[:2], centre[:2, k], 1) for k in (0, 1)]  # the box centre: the last two planes' line
    w0 = width[0]

    def factors(tt: float) -> tuple[float, float]:
        fx, fy = (
            float(np.sqrt(min(max(float(np.polyval(f, tt)), 0.0) / (w * w), SHAPE_CAP_MAX_GROWTH**2)))
            for f, w in zip(fits, w0, strict=True)
        )
        return fx, fy

    nodes, weights = np.polynomial.legendre.leggauss(4)
    edges = np.linspace(inner, e, SHAPE_CAP_SUBSLABS + 1)
    cap: list[Slab] = []
    for a, b_ in itertools.pairwise(edges):
        mid = (a + b_) / 2
        ts = mid + (b_ - a) / 2 * nodes
        mean_area = float(np.dot(weights, [np.prod(factors(float(x))) for x in ts])) / 2
        if mean_area <= 1e-9:
            continue
        fx, fy = factors(mid)
        k = float(np.sqrt(mean_area / (fx * fy))) if fx * fy > 0 else float(np.sqrt(mean_area))
        scale = np.array([fx * k, fy * k]) if fx * fy > 0 else np.array([k, k])
        c = np.array([np.polyval(moves[0], mid), np.polyval(moves[1], mid)])
        rings = tuple(c + (r - centre[0]) * scale for r in last.rings)
        za, zb = z_end + direction * a, z_end + direction * b_
        cap.append(Slab(float(min(za, zb)), float(max(za, zb)), rings))
    return cap if direction > 0 else cap[::-1]


def _first_root(coeffs: FloatArray, start: float, reach: float) -> list[float]:
    """The first place in (0, reach] where a fitted squared width (``start`` at 0) reaches zero.

    A cone's squared width has a double root at the apex, which the small errors of drawn
    outlines turn into two close roots or none: a parabola that opens upward with its lowest
    point within reach and within 5 % of ``start`` of zero ends there.
    """
    if len(coeffs) == 3 and coeffs[0] > 0:
        vertex = -coeffs[1] / (2 * coeffs[0])
        if 1e-9 < vertex <= reach + 1e-9 and abs(float(np.polyval(coeffs, vertex))) <= 0.05 * start:
            return [float(vertex)]
    roots = np.roots(coeffs) if np.any(coeffs[:-1] != 0) else np.array([])
    real = sorted(float(r.real) for r in roots if abs(r.imag) < 1e-9 and 1e-9 < r.real <= reach + 1e-9)
    return real[:1]


def _geometry_rings(geom: BaseGeometry) -> tuple[FloatArray, ...]:
    out: list[FloatArray] = []
    for poly in getattr(geom, "geoms", [geom]):
        if poly.geom_type == "Polygon" and not poly.is_empty:
            out.append(np.asarray(poly.exterior.coords)[:-1, :2])
            out.extend(np.asarray(r.coords)[:-1, :2] for r in poly.interiors)
        elif poly.geom_type in ("MultiPolygon", "GeometryCollection"):
            out.extend(_geometry_rings(poly))
    return tuple(out)


class SlabMemo:
    """Results of plane operations kept for reuse within one case.

    A structure's slabs under two end-cap conventions differ only at its ends; its rings are
    the same objects (the contour planes'). Derived structures under each convention therefore
    repeat every plane operation but a few: with a memo shared by them, each region and each
    operation between two sets of rings is computed once. Keyed by the identity of the ring
    tuples, which the memo keeps alive (so identities are not reused while it lives); results
    are returned as the same tuple objects, so operations on results are found again too.
    """

    def __init__(self) -> None:
        self._regions: dict[int, tuple[tuple[FloatArray, ...], BaseGeometry]] = {}
        self._ops: dict[tuple[str, int, int], tuple[object, object, tuple[FloatArray, ...] | None]] = {}

    def region(self, slab: Slab) -> BaseGeometry:
        hit = self._regions.get(id(slab.rings))
        if hit is None:
            hit = (slab.rings, slab.region())
            self._regions[id(slab.rings)] = hit
        return hit[1]

    def get(self, op: str, ra: object, rb: object) -> tuple[bool, tuple[FloatArray, ...] | None]:
        hit = self._ops.get((op, id(ra), id(rb)))
        return (False, None) if hit is None else (True, hit[2])

    def put(self, op: str, ra: object, rb: object, rings: tuple[FloatArray, ...] | None) -> None:
        self._ops[(op, id(ra), id(rb))] = (ra, rb, rings)


_NO_RINGS: tuple[FloatArray, ...] = ()


def combine(op: str, a: SlabStack, b: SlabStack, *, name: str | None = None, memo: SlabMemo | None = None) -> SlabStack:
    """``a | b`` (union), ``a & b`` (intersection) or ``a - b`` (difference), slab by slab.

    ``memo`` shares plane operations between calls of one case (:class:`SlabMemo`).

    Raises
    ------
    MissingStructureError
        When the result encloses no volume.
    """
    funcs = {"|": shapely.union, "&": shapely.intersection, "-": shapely.difference}
    if op not in funcs:
        raise GeometryError(f"unknown structure operator {op!r}; expected |, & or -")
    memo = memo if memo is not None else SlabMemo()
    edges = np.unique(np.round([s.z_lo_mm for s in a.slabs + b.slabs] + [s.z_hi_mm for s in a.slabs + b.slabs], 6))
    mids = (edges[:-1] + edges[1:]) / 2

    def owners(stack: SlabStack) -> list[Slab | None]:
        """The slab of ``stack`` holding each interval's middle (slabs are sorted and disjoint)."""
        lo = np.array([s.z_lo_mm for s in stack.slabs])
        hi = np.array([s.z_hi_mm for s in stack.slabs])
        i = np.searchsorted(lo, mids, side="right") - 1
        ok = (i >= 0) & (mids < hi[np.clip(i, 0, None)])
        return [stack.slabs[k] if good else None for k, good in zip(i.tolist(), ok.tolist(), strict=True)]

    slabs = []
    for lo, hi, sa, sb in zip(edges[:-1], edges[1:], owners(a), owners(b), strict=True):
        if sa is None and sb is None:
            continue
        ka = sa.rings if sa is not None else _NO_RINGS
        kb = sb.rings if sb is not None else _NO_RINGS
        found, rings = memo.get(op, ka, kb)
        if not found:
            empty = Polygon()
            ra = memo.region(sa) if sa is not None else empty
            rb = memo.region(sb) if sb is not None else empty
            geom = funcs[op](ra, rb)
            rings = None if geom.is_empty or geom.area < 1e-6 else _geometry_rings(geom)
            memo.put(op, ka, kb, rings)
        if rings is not None:
            slabs.append(Slab(float(lo), float(hi), rings))
    label = name or f"({a.name} {op} {b.name})"
    stack = SlabStack(label, tuple(slabs), a.end_cap)
    if not slabs or stack.volume_cc < MIN_VOLUME_CC:
        raise MissingStructureError(f"derived structure {label!r} encloses no volume")
    return stack


def evaluate_expression(
    expression: str, stacks: dict[str, SlabStack], *, name: str | None = None, memo: SlabMemo | None = None
) -> SlabStack:
    """Evaluate a structure expression such as ``Liver - (GTVp | GTVv)`` or ``SpinalCord + 5mm``
    (grammar: :mod:`rtqa.dvh.expression`).

    Raises
    ------
    GeometryError
        A malformed expression or an unknown structure name.
    """
    tree = parse_expression(expression)

    def value(node: Node) -> SlabStack:
        if isinstance(node, Name):
            if node.name not in stacks:
                raise GeometryError(f"structure expression {expression!r}: unknown structure {node.name!r}")
            return stacks[node.name]
        if isinstance(node, Margin):
            operand = value(node.operand)
            label = f"({operand.name} {'+' if node.grow else '-'} {node.text})"
            return margin(operand, node.mm, grow=node.grow, name=label)
        assert isinstance(node, SetOp)
        return combine(node.op, value(node.left), value(node.right), memo=memo)

    result = value(tree)
    return SlabStack(name or expression, result.slabs, result.end_cap)


# ------------------------------------------------------------------------------------------------
# 3D margins

MARGIN_QUAD_SEGS = 16  # segments per quarter circle of a buffer: its area is 0.16 % short of the circle's


def margin(
    stack: SlabStack, mm: tuple[float, float, float], *, grow: bool = True, name: str | None = None
) -> SlabStack:
    """The structure grown (or shrunk) by an ellipsoid with semi-axes ``mm`` = (LR, AP, SI).

    The contours are samples of the structure on their planes, and the end-cap convention
    adds a face half a slab beyond the outer planes (``half_slab``; with ``none`` the outer
    planes are the faces). A plane at distance ``dz`` from a sample, within the SI margin,
    receives that sample's outline grown in-plane by the ellipse the ellipsoid cuts at
    ``dz`` (semi-axes ``LR * s`` and ``AP * s``, ``s = sqrt(1 - (dz / SI)^2)``); the grown
    outline of a plane is the union over the samples. Shrinking keeps what the ellipsoid fits
    inside: the intersection of the samples' outlines shrunk alike, and nothing where the
    structure does not reach ``SI`` above and below. The result keeps the structure's slabs,
    each with its outline at the slab's middle, plus slabs of the typical thickness beyond its
    ends (and in gaps) that the margin reaches.

    Accuracy (tests/test_margins.py, sphere of 30 mm on 3 mm planes): within 1 % of the grown
    sphere's volume for a margin of at least the plane spacing; a smaller SI margin reaches no
    neighbouring plane, so inclined surfaces grow less (about 2.5 % short for 3 mm on 3 mm).

    Raises
    ------
    MissingStructureError
        Nothing is left (a shrink larger than the structure).
    """
    lr, ap, si = mm
    label = name or f"({stack.name} {'+' if grow else '-'} margin)"
    regions = [_polygonal(s.region()) for s in stack.slabs]
    thickness = float(np.median([s.thickness_mm for s in stack.slabs]))
    # runs of touching slabs: their outer faces, and the gaps between runs
    runs: list[tuple[int, int]] = []
    for k, s in enumerate(stack.slabs):
        if runs and abs(s.z_lo_mm - stack.slabs[runs[-1][1]].z_hi_mm) < 1e-6:
            runs[-1] = (runs[-1][0], k)
        else:
            runs.append((k, k))
    samples: list[tuple[float, BaseGeometry]] = [
        ((s.z_lo_mm + s.z_hi_mm) / 2, r) for s, r in zip(stack.slabs, regions, strict=True)
    ]
    for first, last in runs:
        samples.append((stack.slabs[first].z_lo_mm, regions[first]))
        samples.append((stack.slabs[last].z_hi_mm, regions[last]))
    reach = si + 1e-9

    def grown_at(z: float) -> BaseGeometry:
        parts = []
        for zk, region in samples:
            dz = abs(z - zk)
            if dz <= reach:
                s = np.sqrt(max(0.0, 1.0 - (dz / si) ** 2)) if si > 0 else 1.0
                parts.append(_ellipse_buffer(region, lr * s, ap * s, 1.0))
        return shapely.union_all(parts) if parts else Polygon()

    def covered(lo: float, hi: float) -> bool:
        return any(stack.slabs[a].z_lo_mm <= lo + 1e-6 and hi - 1e-6 <= stack.slabs[b].z_hi_mm for a, b in runs)

    def shrunk_at(z: float) -> BaseGeometry:
        if not covered(z - si, z + si):
            return Polygon()
        out: BaseGeometry | None = None
        for zk, region in samples:
            dz = abs(z - zk)
            if dz < si - 1e-9 or dz == 0.0:
                s = np.sqrt(max(0.0, 1.0 - (dz / si) ** 2)) if si > 0 else 1.0
                part = _ellipse_buffer(region, lr * s, ap * s, -1.0)
                out = part if out is None else shapely.intersection(out, part)
        return out if out is not None else Polygon()

    intervals = [(s.z_lo_mm, s.z_hi_mm) for s in stack.slabs]
    if grow and si > 0:
        n = int(np.floor(si / thickness + 0.5 + 1e-9))  # slabs whose middle the margin reaches
        for i, (first, last) in enumerate(runs):
            lo, hi = stack.slabs[first].z_lo_mm, stack.slabs[last].z_hi_mm
            below = stack.slabs[runs[i - 1][1]].z_hi_mm if i > 0 else -np.inf
            intervals += [(lo - (j + 1) * thickness, lo - j * thickness) for j in range(n)]
            intervals += [(hi + j * thickness, hi + (j + 1) * thickness) for j in range(n)]
            if i > 0 and lo - below > 1e-6:  # a gap between two runs: slabs across it
                count = max(1, round((lo - below) / thickness))
                edges = np.linspace(below, lo, count + 1)
                intervals += list(itertools.pairwise(float(e) for e in edges))
        intervals = _disjoint(intervals)
    slabs = []
    for lo, hi in sorted(intervals):
        geom = grown_at((lo + hi) / 2) if grow else shrunk_at((lo + hi) / 2)
        if geom.is_empty or geom.area < 1e-6:
            continue
        slabs.append(Slab(float(lo), float(hi), _geometry_rings(geom)))
    out = SlabStack(label, tuple(slabs), stack.end_cap)
    if not slabs or out.volume_cc < MIN_VOLUME_CC:
        raise MissingStructureError(f"derived structure {label!r} encloses no volume")
    return out


def _disjoint(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The intervals, the later of two overlapping ones cut back (extensions of neighbouring runs)."""
    out: list[tuple[float, float]] = []
    for lo, hi in sorted(intervals):
        if out and lo < out[-1][1] - 1e-6:
            lo = out[-1][1]
        if hi - lo > 1e-6:
            out.append((lo, hi))
    return out


def _polygonal(geom: BaseGeometry) -> BaseGeometry:
    """The areal part of a geometry (make_valid may leave lines or points, which must not grow)."""
    parts = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon") and not g.is_empty]
    return shapely.union_all(parts) if parts else Polygon()


def _ellipse_buffer(geom: BaseGeometry, a: float, b: float, sign: float) -> BaseGeometry:
    """The geometry grown (sign +1) or shrunk (-1) by an ellipse with semi-axes ``a`` (x) and ``b`` (y):
    x is scaled so that the ellipse is a circle, buffered, and scaled back."""
    if a <= 0 or b <= 0:
        return geom
    if a == b:
        return geom.buffer(sign * a, quad_segs=MARGIN_QUAD_SEGS)
    k = b / a
    scaled = shapely.affinity.scale(geom, xfact=k, yfact=1.0, origin=(0, 0))
    return shapely.affinity.scale(
        scaled.buffer(sign * b, quad_segs=MARGIN_QUAD_SEGS), xfact=1 / k, yfact=1.0, origin=(0, 0)
    )
