"""Structures as stacks of slabs, and boolean operations between them. Pure.

Each contour plane of an ROI owns a slab reaching halfway to the neighbouring planes of the
structure set (the CT slices, in effect), so irregular spacing is honoured and a slice an ROI
skips leaves a gap. At the first and last plane of the ROI the end-cap convention applies:
``half_slab`` (the default: half a slab beyond, as most planning systems do) or ``none``.
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
import shapely
from shapely.geometry import Polygon
from shapely.geometry.base import BaseGeometry

from rtqa.dvh.expression import TOKEN_RE as _TOKEN
from rtqa.dvh.expression import EndCap as EndCap  # re-exported: where callers have always found it
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
        geom = polys[0]
        for p in polys[1:]:
            geom = geom.symmetric_difference(p)
        return geom


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


def _rings_area(rings: tuple[FloatArray, ...]) -> float:
    """Area of rings combined by parity, for non-crossing rings (nested or disjoint)."""
    if not rings:
        return 0.0
    polys = [Polygon(r) for r in rings if len(r) >= 3]
    # parity of nesting: a ring inside an odd number of others is a hole
    area = 0.0
    for i, p in enumerate(polys):
        rp = p.representative_point()
        # of two rings of equal area (one outline drawn twice) the first encloses the second, so
        # that they cancel as parity says
        depth = sum(
            1
            for j, q in enumerate(polys)
            if j != i and q.contains(rp) and (q.area > p.area or (q.area == p.area and j < i))
        )
        area += -abs(p.area) if depth % 2 else abs(p.area)
    return area


# Two rings on one plane whose even-odd difference is on average thinner than this are one
# outline drawn twice (copied, re-imported, or drawn again with the start point moved or the
# winding reversed), not an organ wall: no CT-based contour resolves a wall under 0.5 mm.
COINCIDENT_WALL_MM = 0.5


def coincident_rings(rings: tuple[FloatArray, ...]) -> bool:
    """Whether two rings of a plane (nearly) coincide, so that parity would cancel them."""
    if len(rings) < 2:
        return False
    polys = [shapely.make_valid(Polygon(r)) for r in rings if len(r) >= 3]
    for a, b in itertools.combinations(polys, 2):
        smaller, larger = sorted((a.area, b.area))
        if larger <= 0 or smaller < 0.5 * larger:
            continue  # a real hole, or an island: their areas differ
        # the symmetric difference of two outlines of one shape is a thin band along them;
        # its mean width is its area over the outline length
        width = a.symmetric_difference(b).area / max(a.length, b.length)
        if width < COINCIDENT_WALL_MM:
            return True
    return False


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
    stack = SlabStack(roi.name, tuple(slabs), end_cap)
    if not slabs or stack.volume_cc < MIN_VOLUME_CC:
        raise MissingStructureError(
            f"ROI {roi.name!r} encloses {stack.volume_cc if slabs else 0.0:.4f} cc (< {MIN_VOLUME_CC} cc): "
            "treated as missing"
        )
    return stack


def _geometry_rings(geom: BaseGeometry) -> tuple[FloatArray, ...]:
    out: list[FloatArray] = []
    for poly in getattr(geom, "geoms", [geom]):
        if poly.geom_type == "Polygon" and not poly.is_empty:
            out.append(np.asarray(poly.exterior.coords)[:-1, :2])
            out.extend(np.asarray(r.coords)[:-1, :2] for r in poly.interiors)
        elif poly.geom_type in ("MultiPolygon", "GeometryCollection"):
            out.extend(_geometry_rings(poly))
    return tuple(out)


def combine(op: str, a: SlabStack, b: SlabStack, *, name: str | None = None) -> SlabStack:
    """``a | b`` (union), ``a & b`` (intersection) or ``a - b`` (difference), slab by slab.

    Raises
    ------
    MissingStructureError
        When the result encloses no volume.
    """
    funcs = {"|": shapely.union, "&": shapely.intersection, "-": shapely.difference}
    if op not in funcs:
        raise GeometryError(f"unknown structure operator {op!r}; expected |, & or -")
    edges = np.unique(np.round([s.z_lo_mm for s in a.slabs + b.slabs] + [s.z_hi_mm for s in a.slabs + b.slabs], 6))
    cache: dict[tuple[int, int], BaseGeometry] = {}

    def region(stack: SlabStack, which: int, z: float) -> BaseGeometry | None:
        for i, s in enumerate(stack.slabs):
            if s.z_lo_mm <= z < s.z_hi_mm:
                key = (which, i)
                if key not in cache:
                    cache[key] = s.region()
                return cache[key]
        return None

    slabs = []
    for lo, hi in itertools.pairwise(edges):
        mid = (lo + hi) / 2
        ra, rb = region(a, 0, mid), region(b, 1, mid)
        if ra is None and rb is None:
            continue
        empty = Polygon()
        geom = funcs[op](ra if ra is not None else empty, rb if rb is not None else empty)
        if geom.is_empty or geom.area < 1e-6:
            continue
        slabs.append(Slab(float(lo), float(hi), _geometry_rings(geom)))
    label = name or f"({a.name} {op} {b.name})"
    stack = SlabStack(label, tuple(slabs), a.end_cap)
    if not slabs or stack.volume_cc < MIN_VOLUME_CC:
        raise MissingStructureError(f"derived structure {label!r} encloses no volume")
    return stack


def evaluate_expression(expression: str, stacks: dict[str, SlabStack], *, name: str | None = None) -> SlabStack:
    """Evaluate a structure expression such as ``Liver - (GTVp | GTVv)``.

    Operators ``|``, ``&`` and ``-`` need spaces around them (names may contain hyphens);
    they associate left to right, parentheses group.

    Raises
    ------
    GeometryError
        A malformed expression or an unknown structure name.
    """
    tokens = [t.strip() for t in _TOKEN.findall(expression) if t.strip()]
    pos = 0

    def primary() -> SlabStack:
        nonlocal pos
        if pos >= len(tokens):
            raise GeometryError(f"structure expression {expression!r} ends too early")
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = chain()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise GeometryError(f"structure expression {expression!r}: missing ')'")
            pos += 1
            return value
        if tok in ("|", "&", "-", ")"):
            raise GeometryError(f"structure expression {expression!r}: unexpected {tok!r}")
        if tok not in stacks:
            raise GeometryError(f"structure expression {expression!r}: unknown structure {tok!r}")
        return stacks[tok]

    def chain() -> SlabStack:
        nonlocal pos
        value = primary()
        while pos < len(tokens) and tokens[pos] in ("|", "&", "-"):
            op = tokens[pos]
            pos += 1
            value = combine(op, value, primary())
        return value

    result = chain()
    if pos != len(tokens):
        raise GeometryError(f"structure expression {expression!r}: unexpected {tokens[pos]!r}")
    return SlabStack(name or expression, result.slabs, result.end_cap)
