"""The DVH engine: partial-volume sampling of a slab stack in a dose grid. Pure numpy.

How a structure is sampled
--------------------------
In-plane, the sampling cells are the dose grid's own pixels (cell centres on the dose nodes,
so mask and dose cannot be shifted by half a voxel). On each slab, scan lines spaced at most
``line_spacing_mm`` apart cross the contours; contour crossings pair up by parity into
inside intervals, whose exact lengths and first moments are accumulated per pixel. This gives
each pixel its occupied area and the centroid of the occupied part: exact along x, sampled
finely along y, with no Python loop over pixels or points.

Along z, each slab is cut into sub-slabs no thicker than the dose grid's z spacing, so a
slab that straddles dose planes is sampled throughout (contour planes need not coincide with
dose planes, and Min/Max are not capped at the outermost contour planes).

Each sample (occupied part of a pixel x sub-slab) takes the trilinearly interpolated dose at
its centroid, expanded to first order from the dose node. Within a sample the dose still
varies; rather than sampling ever finer, each sample's volume is spread uniformly over the
dose range it spans (width from the local gradient times the sample's extent), which is exact
for a dose gradient along one axis and removes the staircase of point-sampled DVHs.

Volume outside the dose grid is reported as ``uncovered_cc`` and kept out of the bins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import shapely

from rtqa.deadline import check_time
from rtqa.dvh.budget import require_sampling_budget
from rtqa.dvh.geometry import EndCap, Slab, SlabStack
from rtqa.errors import GeometryError, RtqaError
from rtqa.model import DoseGrid, FloatArray

SMALL_STRUCTURE_CC = 0.5
DEFAULT_BIN_WIDTH_GY = 0.01


class PartialDVHError(RtqaError, ValueError):
    """A value below the dose from which a DVH computed for its hot end is known
    (:attr:`DVH.exact_from_gy`): a bug in whoever chose the shortcut, never a value."""


@dataclass(frozen=True, eq=False)
class DVH:
    """A cumulative dose-volume histogram with its statistics.

    ``volume_ge_cc[j]`` is the covered volume receiving at least ``dose_edges_gy[j]``; the
    curve is piecewise linear between edges. ``volume_cc`` is the whole structure, covered
    or not; percentages are of the covered volume.
    """

    name: str
    dose_edges_gy: FloatArray
    volume_ge_cc: FloatArray
    volume_cc: float
    uncovered_cc: float
    mean_gy: float | None
    min_gy: float | None
    max_gy: float | None
    end_cap: EndCap
    bin_width_gy: float
    warnings: tuple[str, ...] = field(default=())
    # the curve is that of the whole structure only from this dose up (a DVH computed for the
    # metrics of its high-dose end, ``compute_dvhs(hot_from_gy=...)``): below it no volume,
    # minimum or mean is known, and asking for one raises
    exact_from_gy: float = 0.0

    @property
    def covered_cc(self) -> float:
        return self.volume_cc - self.uncovered_cc

    @property
    def is_small(self) -> bool:
        return self.volume_cc < SMALL_STRUCTURE_CC

    @property
    def is_partial(self) -> bool:
        """Whether only the high-dose end of the curve is known (``exact_from_gy``)."""
        return self.exact_from_gy > 0.0

    @property
    def differential_cc(self) -> FloatArray:
        """Volume per bin ``[edge_j, edge_j+1)``."""
        self._require_whole("a differential DVH")
        return -np.diff(self.volume_ge_cc)

    def _require_whole(self, what: str) -> None:
        if self.is_partial:
            raise PartialDVHError(
                f"{self.name}: {what} needs the whole DVH; only doses from {self.exact_from_gy:.2f} Gy up were computed"
            )

    def volume_at_dose(self, dose_gy: float) -> float:
        """Covered volume (cc) receiving at least ``dose_gy``, interpolated."""
        if dose_gy < self.exact_from_gy:
            self._require_whole(f"the volume above {dose_gy:.2f} Gy")
        return float(np.interp(dose_gy, self.dose_edges_gy, self.volume_ge_cc, left=self.covered_cc, right=0.0))

    def dose_at_volume(self, volume_cc: float) -> float | None:
        """The highest dose d such that at least ``volume_cc`` receives d (None if the
        covered volume is smaller than ``volume_cc``)."""
        v = self.volume_ge_cc
        if volume_cc > self.covered_cc * (1 + 1e-12) or v.size == 0:
            return None
        if volume_cc <= 0:
            return self.max_gy
        volume_cc = min(volume_cc, float(v[0]))  # within rounding above the covered volume: D100 %
        j = int(np.flatnonzero(v >= volume_cc)[-1])
        if j + 1 >= v.size:
            return float(self.dose_edges_gy[j])
        drop = v[j] - v[j + 1]
        frac = 0.0 if drop <= 0 else (v[j] - volume_cc) / drop
        dose = float(self.dose_edges_gy[j] + frac * (self.dose_edges_gy[j + 1] - self.dose_edges_gy[j]))
        # within the bin that holds an extreme, the curve's straight line may pass it
        if self.max_gy is not None:
            dose = min(dose, self.max_gy)
        if self.min_gy is not None:
            dose = max(dose, self.min_gy)
        if dose < self.exact_from_gy:
            self._require_whole(f"the dose to {volume_cc:.3f} cc")
        return dose


@dataclass(frozen=True, eq=False)
class PreparedDose:
    """Arrays derived from a dose grid once and shared by every structure of a plan."""

    dose: DoseGrid
    dx: float
    dy: float
    grad_x: FloatArray  # dD/dx at the nodes
    grad_y: FloatArray  # dD/dy at the nodes
    grad_z: FloatArray  # slope between plane k and k+1
    # bounds, single precision rounded outward (:func:`_bound32`)
    near_min: npt.NDArray[np.float32]  # lowest node value around each node (3 x 3 in-plane, 5 planes)
    near_max: npt.NDArray[np.float32]
    box_min: npt.NDArray[np.float32]  # lowest of the eight nodes of each box [k, k+1] x [i, i+1] x [j, j+1]
    box_max: npt.NDArray[np.float32]


def prepare_dose(dose: DoseGrid) -> PreparedDose:
    """Gradients and neighbourhood bounds of a dose grid (see :func:`compute_dvh`).

    Raises
    ------
    GeometryError
        A grid with fewer than two rows or columns, non-uniform x/y spacing, or non-finite
        doses.
    """
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    if x.size < 2 or y.size < 2:
        raise GeometryError("dose grid needs at least two columns and two rows")
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    if not (np.allclose(np.diff(x), dx, rtol=1e-4) and np.allclose(np.diff(y), dy, rtol=1e-4)):
        raise GeometryError("dose grid spacing must be uniform in x and y")
    d = dose.dose_gy
    if d.size and not np.isfinite(d).all():
        # the readers refuse such doses; a grid built otherwise must not reach the histogram
        raise GeometryError("dose grid holds non-finite values: no DVH of it is meaningful")
    gz = np.diff(d, axis=0) / np.diff(z)[:, None, None] if z.size > 1 else np.zeros_like(d)
    return PreparedDose(
        dose=dose,
        dx=dx,
        dy=dy,
        grad_x=np.gradient(d, dx, axis=2),
        grad_y=np.gradient(d, dy, axis=1),
        grad_z=gz,
        near_min=_bound32(_neighbourhood(d, np.minimum), down=True),
        near_max=_bound32(_neighbourhood(d, np.maximum), down=False),
        box_min=_bound32(_boxes(d, np.minimum), down=True),
        box_max=_bound32(_boxes(d, np.maximum), down=False),
    )


def _bound32(a: FloatArray, *, down: bool) -> npt.NDArray[np.float32]:
    """Bounds kept in single precision, rounded outward (a lower bound never rises, an upper one
    never falls): half the memory of the four bound arrays, and still bounds."""
    out = a.astype(np.float32)
    wrong = out > a if down else out < a
    if wrong.any():
        out[wrong] = np.nextafter(out[wrong], np.float32(-np.inf if down else np.inf))
    return out


def _boxes(d: FloatArray, op: np.ufunc) -> FloatArray:
    """The lowest (highest) of the eight nodes of each box between neighbouring nodes: shape
    (nz - 1, ny - 1, nx - 1), or (1, ny - 1, nx - 1) for a single plane."""
    m = op(d[:-1], d[1:]) if d.shape[0] > 1 else d
    m = op(m[:, :-1], m[:, 1:])
    out: FloatArray = op(m[:, :, :-1], m[:, :, 1:])
    return out


_NEIGHBOURHOOD = (5, 3, 3)  # planes, rows, columns around each node


def _neighbourhood(d: FloatArray, op: np.ufunc) -> FloatArray:
    """The lowest (``np.minimum``) or highest (``np.maximum``) node value in the 5 x 3 x 3
    neighbourhood of each node, edges repeated beyond the grid.

    Equal, value for value, to ``scipy.ndimage.minimum_filter(d, size=(5, 3, 3),
    mode="nearest")`` (and ``maximum_filter``): a minimum over a box is the minimum of minima
    along each axis in turn, and comparisons round nothing. Done here in numpy so that the
    engine does not import scipy.ndimage (about 0.4 s of start-up, issue 10).
    """
    out = d
    for axis, size in enumerate(_NEIGHBOURHOOD):
        half = size // 2
        n = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (half, half)
        padded = np.pad(out, pad, mode="edge")
        window = [slice(None)] * out.ndim
        window[axis] = slice(0, n)
        acc = padded[tuple(window)].copy()
        for shift in range(1, size):
            window[axis] = slice(shift, shift + n)
            op(acc, padded[tuple(window)], out=acc)
        out = acc
    return out


def compute_dvh(
    structure: SlabStack,
    dose: DoseGrid,
    *,
    prepared: PreparedDose | None = None,
    bin_width_gy: float = DEFAULT_BIN_WIDTH_GY,
    line_spacing_mm: float | None = None,
    max_subslab_mm: float | None = None,
) -> DVH:
    """Compute the DVH of a structure in a dose grid.

    Parameters
    ----------
    structure
        The slab stack (see :func:`rtqa.geometry.roi_stack`).
    dose
        The dose grid; x and y spacing must be uniform (they are in DICOM).
    prepared
        :func:`prepare_dose` of ``dose``, to share between the structures of a plan.
    bin_width_gy
        Width of the dose bins of the cumulative curve (0.01 Gy or finer).
    line_spacing_mm
        Distance between scan lines; by default a tenth of the pixel, and finer for
        small structures (at least 40 lines across).
    max_subslab_mm
        Thickest sub-slab along z; by default the dose grid's z spacing.

    Raises
    ------
    GeometryError
        An unusable dose grid, or contours whose crossings do not pair up.
    DoseGridError
        Sampling would exceed the memory budget (:mod:`rtqa.dvh.budget`).
    """
    (out,) = compute_dvhs(
        (structure,),
        dose,
        prepared=prepared,
        bin_width_gy=bin_width_gy,
        line_spacing_mm=line_spacing_mm,
        max_subslab_mm=max_subslab_mm,
    )
    return out


def compute_dvhs(
    structures: Sequence[SlabStack],
    dose: DoseGrid,
    *,
    prepared: PreparedDose | None = None,
    bin_width_gy: float = DEFAULT_BIN_WIDTH_GY,
    line_spacing_mm: float | None = None,
    max_subslab_mm: float | None = None,
    hot_from_gy: float | None = None,
) -> list[DVH]:
    """The DVHs of variants of one structure (the same ROI under each end-cap convention), each
    slab they share sampled once: a slab's samples depend on nothing but the slab, the dose grid
    and the scan-line spacing, which is taken from the first structure for all. Variants that
    differ only at their ends cost little more than one DVH. Parameters as :func:`compute_dvh`.

    ``hot_from_gy``: only the high-dose end is wanted (the metrics of a hot spot: Dmax, D1cc,
    D2 %). Cells whose neighbourhood stays below it are measured but not sampled, and only
    outline pieces that can reach it are searched for Dmax; the curve is exact from that dose
    up (``DVH.exact_from_gy``), the volume and the uncovered volume are the whole structure's,
    and the minimum and mean are not known (None). A structure far larger than its hot spot
    (Body minus the PTV) costs a fraction of its whole DVH.
    """
    if bin_width_gy <= 0 or bin_width_gy > 0.01:
        raise ValueError("bin_width_gy must be in (0, 0.01]")
    pd = prepared if prepared is not None and prepared.dose is dose else prepare_dose(dose)
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    dx, dy = pd.dx, pd.dy
    bounds = np.array([st.bounds_mm for st in structures])
    x0, y0 = float(bounds[:, 0].min()), float(bounds[:, 1].min())
    x1, y1 = float(bounds[:, 3].max()), float(bounds[:, 4].max())
    if line_spacing_mm is None:
        _, fy0, _, _, fy1, _ = structures[0].bounds_mm
        line_spacing_mm = min(dy / 10, max(0.02, (fy1 - fy0) / 40))
    k = max(1, math.ceil(dy / line_spacing_mm))
    if max_subslab_mm is None:
        max_subslab_mm = float(np.min(np.diff(z))) if z.size > 1 else 2 * dx
    # refuse before allocating: the sizes below follow from numbers in the submitted files
    for st in structures:
        require_sampling_budget(
            st, dose, line_spacing_mm=line_spacing_mm, max_subslab_mm=max_subslab_mm, bin_width_gy=bin_width_gy
        )

    # the pixel lattice around the structures, extended beyond the grid where needed
    j0 = math.floor((x0 - x[0]) / dx + 0.5)
    j1 = math.floor((x1 - x[0]) / dx + 0.5)
    i0 = math.floor((y0 - y[0]) / dy + 0.5)
    i1 = math.floor((y1 - y[0]) / dy + 0.5)
    cols = np.arange(j0, j1 + 1)
    rows = np.arange(i0, i1 + 1)
    # each distinct slab once, grouped by the structures that hold it
    owners: dict[tuple[object, ...], tuple[Slab, set[int]]] = {}
    for n, st in enumerate(structures):
        for sl in st.slabs:
            key = _slab_key(sl) if len(structures) > 1 else (id(sl),)
            owners.setdefault(key, (sl, set()))[1].add(n)
    groups: dict[frozenset[int], list[Slab]] = {}
    for sl, held_by in owners.values():
        groups.setdefault(frozenset(held_by), []).append(sl)
    # slabs a group at a time: the memory of the per-sample arrays stays bounded on large
    # structures (a Body of 200 planes has millions of samples); histograms add up
    step = max(1, _CHUNK_CELLS // max(rows.size * cols.size, 1))
    totals = [0.0] * len(structures)
    uncovered = [0.0] * len(structures)
    parts: list[list[_Samples]] = [[] for _ in structures]
    for owners_of, slabs in groups.items():
        slabs.sort(key=lambda sl: sl.z_lo_mm)
        for first in range(0, len(slabs), step):
            check_time()  # the plan's time budget, for threads that no timer signal reaches
            chunk = _sample(tuple(slabs[first : first + step]), dose, pd, rows, cols, k, max_subslab_mm, hot_from_gy)
            if chunk.dmid.size and float(np.min(chunk.lo)) < 0.0:
                # the readers refuse negative doses; a grid built otherwise (an analytic test's
                # gradient) may hold them, but not where a structure lies
                raise GeometryError(f"{structures[0].name}: the dose within it is negative somewhere")
            if chunk.dmid.size:
                below_edges = _below_edges(chunk.dmid, chunk.width, chunk.v, bin_width_gy)
                # what the assembly needs of the samples, kept; the samples let go (a Body of
                # 200 planes would otherwise hold all its samples until the last chunk)
                sum_v = float(np.sum(chunk.v))
                one = np.ones(1)
                chunk = chunk._replace(
                    dmid=one * (float(np.sum(chunk.dmid * chunk.v)) / sum_v if sum_v > 0 else 0.0),
                    width=np.zeros(1),
                    v=one * sum_v,
                    lo=one * float(np.min(chunk.lo)),
                    hi=one * float(np.max(chunk.hi)),
                    below=below_edges,
                )
            for n in owners_of:
                totals[n] += chunk.total
                uncovered[n] += chunk.uncovered
                if chunk.dmid.size:
                    parts[n].append(chunk)
    return [
        _assemble(st, totals[n], uncovered[n], parts[n], bin_width_gy, hot_from_gy) for n, st in enumerate(structures)
    ]


def within_coverage(structure: SlabStack, dose: DoseGrid) -> bool:
    """Whether the structure's bounding box lies inside the dose grid's coverage (half a voxel
    beyond the outermost nodes, :func:`_z_cover` along z) with a margin: then no part of it is
    uncovered (``DVH.uncovered_cc`` is 0) and no DVH is needed to know it. False when unsure."""
    if not structure.slabs or not any(len(r) >= 3 for sl in structure.slabs for r in sl.rings):
        return False
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    if x.size < 2 or y.size < 2:
        return False
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    if not (np.allclose(np.diff(x), dx, rtol=1e-4) and np.allclose(np.diff(y), dy, rtol=1e-4)):
        return False  # the engine refuses such a grid (prepare_dose): let it say so
    x0, y0, z0, x1, y1, z1 = structure.bounds_mm
    z_lo, z_hi = _z_cover(z, dx)
    margin = 1e-6 * max(dx, dy)
    # the engine places column j at x[0] + j dx (and row i alike), which on a grid uniform only
    # to 1e-4 may end short of the last node's own position: the nearer limit of the two
    x_hi = min(float(x[-1]), float(x[0]) + (x.size - 1) * dx) + dx / 2
    y_hi = min(float(y[-1]), float(y[0]) + (y.size - 1) * dy) + dy / 2
    return bool(
        x0 > x[0] - dx / 2 + margin
        and x1 < x_hi - margin
        and y0 > y[0] - dy / 2 + margin
        and y1 < y_hi - margin
        and z0 > z_lo + margin
        and z1 < z_hi - margin
    )


def hot_threshold_gy(
    structures: Sequence[SlabStack], dose: DoseGrid, *, bin_width_gy: float = DEFAULT_BIN_WIDTH_GY
) -> float:
    """A dose from which to compute the high-dose end of the structures' DVHs
    (``compute_dvhs(hot_from_gy=...)``): 90 % of the highest node within one node of their
    bounding box, on a bin edge. A guess: whether the end holds the volume a metric needs is
    for the caller to check (``DVH.volume_at_dose(DVH.exact_from_gy)``)."""
    b = np.array([st.bounds_mm for st in structures])
    lo, hi = b[:, :3].min(axis=0), b[:, 3:].max(axis=0)

    def span(axis: FloatArray, a: float, z: float) -> slice:
        i0 = max(int(np.searchsorted(axis, a, side="left")) - 1, 0)
        i1 = min(int(np.searchsorted(axis, z, side="right")) + 1, axis.size)
        return slice(i0, max(i1, i0 + 1))

    box = dose.dose_gy[span(dose.z_mm, lo[2], hi[2]), span(dose.y_mm, lo[1], hi[1]), span(dose.x_mm, lo[0], hi[0])]
    top = float(box.max()) if box.size else 0.0
    return math.floor(0.9 * top / bin_width_gy) * bin_width_gy


def _slab_key(slab: Slab) -> tuple[object, ...]:
    """What makes two slabs the same: their limits and their rings, point for point."""
    return (round(slab.z_lo_mm, 9), round(slab.z_hi_mm, 9), tuple(r.tobytes() for r in slab.rings))


def _assemble(
    structure: SlabStack,
    total: float,
    uncovered: float,
    parts: list[_Samples],
    bin_width_gy: float,
    hot_from_gy: float | None = None,
) -> DVH:
    """The DVH of a structure from the samples of its slabs (of its hot cells only, with the
    others' volume at 0 Gy, given ``hot_from_gy``)."""
    warnings: list[str] = []
    volume_cc = total / 1000.0
    if volume_cc < SMALL_STRUCTURE_CC:
        warnings.append(
            f"small structure ({volume_cc:.3f} cc < {SMALL_STRUCTURE_CC} cc): partial-volume effects dominate"
        )
    if uncovered > 0:
        warnings.append(f"{uncovered / 1000:.2f} cc of {structure.name} lies outside the dose grid")
    if not parts:
        return DVH(
            structure.name,
            np.zeros(1),
            np.zeros(1),
            volume_cc,
            uncovered / 1000.0,
            None,
            None,
            None,
            structure.end_cap,
            bin_width_gy,
            tuple(warnings),
        )
    n_edges = max(p.below.size for p in parts)
    edges: FloatArray = np.arange(n_edges, dtype=np.float64) * bin_width_gy
    below = np.zeros(n_edges)
    v_total = 0.0
    for p in parts:
        chunk_total = float(p.v.sum())
        below[: p.below.size] += p.below
        below[p.below.size :] += chunk_total  # beyond its last edge, all of a chunk lies below
        v_total += chunk_total
    v_ge = np.minimum.accumulate(np.clip(v_total - below, 0.0, v_total))  # monotone despite rounding
    mean = sum(float(np.sum(p.dmid * p.v)) for p in parts) / sum(float(np.sum(p.v)) for p in parts)
    # exact extremes; a group with no outline point in the grid falls back on its samples
    lowest = min(float(np.min(p.lo)) if math.isnan(p.lowest) else p.lowest for p in parts)
    highest = max(float(np.max(p.hi)) if math.isnan(p.highest) else p.highest for p in parts)
    if hot_from_gy is not None:
        # only the hot end was sampled: no minimum or mean; a maximum only if it reaches that end
        return DVH(
            name=structure.name,
            dose_edges_gy=edges,
            volume_ge_cc=np.where(edges > highest, 0.0, v_ge),
            volume_cc=volume_cc,
            uncovered_cc=uncovered / 1000.0,
            mean_gy=None,
            min_gy=None,
            max_gy=float(highest) if highest >= hot_from_gy else None,
            end_cap=structure.end_cap,
            bin_width_gy=bin_width_gy,
            warnings=tuple(warnings),
            exact_from_gy=hot_from_gy,
        )
    # the samples' spread may reach a little beyond the dose the structure holds: that volume
    # is taken to lie at the extreme (the whole volume receives at least Dmin, none above Dmax)
    v_ge = np.where(edges <= lowest, v_total, np.where(edges > highest, 0.0, v_ge))
    return DVH(
        name=structure.name,
        dose_edges_gy=edges,
        volume_ge_cc=v_ge,
        volume_cc=volume_cc,
        uncovered_cc=uncovered / 1000.0,
        mean_gy=mean,
        min_gy=float(max(0.0, lowest)),
        max_gy=float(highest),
        end_cap=structure.end_cap,
        bin_width_gy=bin_width_gy,
        warnings=tuple(warnings),
    )


class _Samples(NamedTuple):
    """The samples of a group of slabs: their dose midpoints, widths and volumes (cc)."""

    total: float  # mm3, covered or not
    uncovered: float  # mm3
    dmid: FloatArray
    width: FloatArray
    v: FloatArray
    lo: FloatArray
    hi: FloatArray
    below: FloatArray
    lowest: float = math.nan  # the exact lowest dose of the group (NaN: no contour point covered)
    highest: float = math.nan


def _sample(
    slabs: tuple[Slab, ...],
    dose: DoseGrid,
    pd: PreparedDose,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    k: int,
    max_subslab_mm: float,
    hot_from_gy: float | None = None,
) -> _Samples:
    """Sample a group of slabs (see :func:`compute_dvh`); given ``hot_from_gy``, only the cells
    whose neighbourhood reaches it (the others' volume as one sample at 0 Gy, :func:`compute_dvhs`)."""
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    dx, dy = pd.dx, pd.dy
    xc = x[0] + cols * dx
    yc = y[0] + rows * dy
    cov = _coverage(slabs, xc, yc, dx, dy, k)
    nr, nc = rows.size, cols.size
    q = cov.index  # occupied (slab, row, column) cells, flat
    s_idx, rc = np.divmod(q, nr * nc)
    r_idx, c_idx = np.divmod(rc, nc)

    # sub-slabs along z: everything that depends on z alone is computed once per sub-slab
    n_sub, t_sub, first_sub, slab_of_sub, _, zm_sub = _sub_slabs(slabs, max_subslab_mm)
    t_of_sub = t_sub[slab_of_sub]
    if np.all(n_sub == 1):  # the usual case: one sub-slab per slab, no expansion
        cell = np.arange(q.size)
        sub = s_idx
    else:
        reps = n_sub[s_idx]
        cell = np.repeat(np.arange(q.size), reps)
        sub = first_sub[s_idx[cell]] + (np.arange(cell.size) - np.repeat(np.cumsum(reps) - reps, reps))
    t = t_of_sub[sub]
    vol = cov.area[cell] * t
    total = float(vol.sum())

    z_lo_cover, z_hi_cover = _z_cover(z, dx)
    in_x = (cols >= 0) & (cols < x.size)
    in_y = (rows >= 0) & (rows < y.size)
    covered_cell = in_x[c_idx] & in_y[r_idx]
    covered = ((zm_sub >= z_lo_cover) & (zm_sub <= z_hi_cover))[sub] & covered_cell[cell]
    all_covered = bool(covered.all())  # the usual case: no selection needed
    uncovered = 0.0 if all_covered else float(vol[~covered].sum())
    empty = np.zeros(0)
    if not covered.any():
        return _Samples(total, uncovered, empty, empty, empty, empty, empty, empty)

    if not all_covered:
        sel = np.flatnonzero(covered)
        cell, sub, t, vol = cell[sel], sub[sel], t[sel], vol[sel]
    r, c = r_idx[cell], c_idx[cell]
    iy, ix = rows[r], cols[c]
    d = dose.dose_gy
    if z.size > 1:
        kz_sub = np.clip(np.searchsorted(z, zm_sub, side="right") - 1, 0, z.size - 2)
        f_sub = np.clip((zm_sub - z[kz_sub]) / (z[kz_sub + 1] - z[kz_sub]), 0.0, 1.0)
        inside_sub = (zm_sub >= z[0]) & (zm_sub <= z[-1])
    else:
        kz_sub = np.zeros(zm_sub.size, dtype=np.intp)
        f_sub = np.zeros(zm_sub.size)
        inside_sub = np.zeros(zm_sub.size, dtype=bool)
    kz, f = kz_sub[sub], f_sub[sub]
    k1 = kz + 1 if z.size > 1 else kz
    ny, nx = y.size, x.size
    g = 1 - f
    flat0 = (kz * ny + iy) * nx + ix
    flat1 = flat0 + ny * nx if z.size > 1 else flat0  # the same node on the next plane
    # the trilinear dose within a cell never leaves the range of its neighbouring nodes
    # in double precision: compared with doses, a single-precision bound would round them to
    # its own precision (NumPy 2 casts a Python float to the array's type)
    cmin = np.minimum(np.take(pd.near_min.reshape(-1), flat0), np.take(pd.near_min.reshape(-1), flat1))
    cmin = cmin.astype(np.float64)
    cmax = np.maximum(np.take(pd.near_max.reshape(-1), flat0), np.take(pd.near_max.reshape(-1), flat1))
    cmax = cmax.astype(np.float64)
    cold_cc = 0.0
    if hot_from_gy is not None:
        hot = np.flatnonzero(cmax >= hot_from_gy)
        cold_cc = float(vol.sum() - vol[hot].sum()) / 1000.0
        cell, sub, t, vol, r, c, iy, ix = cell[hot], sub[hot], t[hot], vol[hot], r[hot], c[hot], iy[hot], ix[hot]
        kz, f, k1, g, flat0, flat1, cmin, cmax = (
            kz[hot],
            f[hot],
            k1[hot] if z.size > 1 else kz[hot],
            g[hot],
            flat0[hot],
            flat1[hot],
            cmin[hot],
            cmax[hot],
        )
    # grad_z has one plane fewer but the same rows and columns: flat0 indexes it too
    gz = np.where(inside_sub[sub], np.take(pd.grad_z.reshape(-1), flat0), 0.0) if z.size > 1 else np.zeros(f.size)
    ox = cov.cx[cell] - xc[c]
    oy = cov.cy[cell] - yc[r]
    # the neighbouring node towards the centroid of the occupied part (itself at the grid edge)
    ix2 = np.clip(ix + np.sign(ox).astype(np.intp), 0, nx - 1)
    iy2 = np.clip(iy + np.sign(oy).astype(np.intp), 0, ny - 1)
    edge = np.flatnonzero((ix2 != ix) | (iy2 != iy))
    ox, oy, ix2, iy2 = ox[edge], oy[edge], ix2[edge], iy2[edge]

    def at(
        arr: FloatArray, sel: slice | npt.NDArray[np.intp], yy: npt.NDArray[np.intp], xx: npt.NDArray[np.intp]
    ) -> FloatArray:
        """``arr`` interpolated between the two dose planes around each selected sample."""
        flat = arr.reshape(-1)
        lower = np.take(flat, (kz[sel] * ny + yy) * nx + xx)
        upper = np.take(flat, (k1[sel] * ny + yy) * nx + xx)
        return lower * g[sel] + upper * f[sel]

    def at_node(arr: FloatArray) -> FloatArray:
        """``arr`` at each sample's own node, interpolated between the two dose planes."""
        flat = arr.reshape(-1)
        return np.take(flat, flat0) * g + np.take(flat, flat1) * f

    d_flat = d.reshape(-1)
    d0, d1 = np.take(d_flat, flat0), np.take(d_flat, flat1)
    dval = d0 * g + d1 * f
    gx = at_node(pd.grad_x)
    gy = at_node(pd.grad_y)
    # boundary cells: trilinear dose at the centroid of the occupied part, and one-sided slopes
    # towards it; interior cells have their centroid on the node itself
    if edge.size:
        e_iy, e_ix, e_iy2, e_ix2 = iy[edge], ix[edge], iy2, ix2
        fxe = np.where(e_ix2 != e_ix, np.abs(ox) / dx, 0.0)
        fye = np.where(e_iy2 != e_iy, np.abs(oy) / dy, 0.0)
        d00 = dval[edge]
        d01, d10, d11 = at(d, edge, e_iy, e_ix2), at(d, edge, e_iy2, e_ix), at(d, edge, e_iy2, e_ix2)
        dval[edge] = (d00 * (1 - fxe) + d01 * fxe) * (1 - fye) + (d10 * (1 - fxe) + d11 * fxe) * fye
        gx[edge] = np.where(e_ix2 != e_ix, (d01 - d00) * np.sign(ox) / dx, gx[edge])
        gy[edge] = np.where(e_iy2 != e_iy, (d10 - d00) * np.sign(oy) / dy, gy[edge])
    dval = np.clip(dval, cmin, cmax)
    # width of the uniform distribution with the variance of the dose over the sample
    w = np.sqrt(12 * (gx**2 * cov.var_x[cell] + gy**2 * cov.var_y[cell]) + (gz * t) ** 2)
    lo_d = np.minimum(np.maximum(dval - w / 2, cmin), dval)
    hi_d = np.maximum(np.minimum(dval + w / 2, cmax), dval)
    nodes = _NodeSamples(
        full=cov.area[cell] >= dx * dy * (1 - 1e-9),
        x=xc[c],
        y=yc[r],
        slab_of=s_idx[cell],
        kz=kz,
        zm=zm_sub[sub],
        t=t,
        d0=d0,
        d1=d1,
        flat0=flat0,
        dval=dval,
        cmin=cmin,
        cmax=cmax,
    )
    lowest, highest = _extremes(slabs, dose, pd, nodes, max_subslab_mm, hot_from_gy)
    dmid, width, v = (lo_d + hi_d) / 2, hi_d - lo_d, vol / 1000.0
    if cold_cc > 0:  # the cells below the hot end: their volume, at 0 Gy
        zero = np.zeros(1)
        dmid, width, v = np.append(dmid, 0.0), np.append(width, 0.0), np.append(v, cold_cc)
        lo_d, hi_d = np.append(lo_d, zero), np.append(hi_d, zero)
    return _Samples(total, uncovered, dmid, width, v, lo_d, hi_d, empty, lowest, highest)


def _extremes(
    slabs: tuple[Slab, ...],
    dose: DoseGrid,
    pd: PreparedDose,
    samples: _NodeSamples,
    max_subslab_mm: float,
    hot_from_gy: float | None = None,
) -> tuple[float, float]:
    """The exact lowest and highest dose of the interpolated grid over a group of slabs.

    Within a box of eight dose nodes the dose is trilinear, so over the part of a slab in that
    box its extremes lie at a node inside the slab, or on the slab's outline at a vertex, where
    an edge meets a grid line or the grid's coverage ends, or where the dose along an edge
    turns, at the slab's lower or upper face or a dose plane between them. Evaluating those
    places gives Dmin and Dmax of the contoured shape itself, not of the sampling: a sample's
    spread is a variance, which at the tip of a cone or the rim of a sphere stops short of the
    extreme.

    Only places that can hold an extreme are evaluated: a sample whose nearby nodes
    (``PreparedDose.near_min``/``near_max``), or an outline point whose box's nodes
    (``box_min``/``box_max``), are all higher than a dose the shape holds cannot hold a lower
    one. That dose comes from a probe of the likeliest places first. Along a slanted edge the
    dose within a box can turn between two points (a saddle): those turning points count too
    (:func:`_piece_turns`). A node in a cut cell
    counts if it lies inside its slab (parity over the rings). Returns NaN, NaN when the
    group has no outline point within the dose grid's coverage and no whole cell.

    Given ``hot_from_gy`` (:func:`compute_dvhs`), only Dmax is sought, and only on rings with a
    box that reaches that dose (:func:`_outline_bounds`); the lowest returned is then NaN.
    """
    sm = samples
    seek_lo = hot_from_gy is None
    check_time()  # the plan's time budget, between the sampling and the outline
    outlined = slabs
    if hot_from_gy is not None:
        lo_z, hi_z, slab_ok = _counted_z(slabs, dose, max_subslab_mm)
        _, reach = _outline_bounds(slabs, dose, pd, lo_z, hi_z, slab_ok)
        # each slab with only its rings that can reach the hot end (the outline needs no parity)
        rings = [(n, ring) for n, sl in enumerate(slabs) for ring in sl.rings if len(ring) >= 3]
        kept: dict[int, list[FloatArray]] = {}
        for (n, ring), top in zip(rings, reach.tolist(), strict=True):
            if top >= hot_from_gy:
                kept.setdefault(n, []).append(ring)
        outlined = tuple(replace(slabs[n], rings=tuple(r)) for n, r in kept.items())
    ol = _outline(outlined, dose, pd, max_subslab_mm)
    check_time()
    lowest, highest = math.inf, -math.inf
    px, py, pslab, b_lo, b_hi, zs_all, z_start, z_count = (
        ol.px,
        ol.py,
        ol.slab,
        ol.b_lo,
        ol.b_hi,
        ol.zs_all,
        ol.z_start,
        ol.z_count,
    )
    s_pending = np.ones(sm.dval.size, dtype=bool)
    p_pending = np.ones(px.size, dtype=bool)

    def visit_samples(pick: npt.NDArray[np.intp]) -> None:
        nonlocal lowest, highest
        s_pending[pick] = False
        nlo, nhi = _node_range(dose, sm.kz[pick], sm.zm[pick], sm.t[pick], sm.d0[pick], sm.d1[pick], sm.flat0[pick])
        whole = sm.full[pick]
        if whole.any():
            lowest, highest = min(lowest, float(nlo[whole].min())), max(highest, float(nhi[whole].max()))
        cut = np.flatnonzero(~whole & (((nlo < lowest) & seek_lo) | (nhi > highest)))
        if cut.size:
            inside = _inside(slabs, sm.slab_of[pick[cut]], sm.x[pick[cut]], sm.y[pick[cut]])
            if inside.any():
                lowest = min(lowest, float(nlo[cut[inside]].min()))
                highest = max(highest, float(nhi[cut[inside]].max()))

    def visit_points(pts: npt.NDArray[np.intp]) -> None:
        nonlocal lowest, highest
        p_pending[pts] = False
        rep = z_count[pslab[pts]]
        i = np.repeat(pts, rep)
        j = np.arange(i.size) - np.repeat(np.cumsum(rep) - rep, rep)
        values = _trilinear(dose, px[i], py[i], zs_all[z_start[pslab[i]] + j])
        lowest, highest = min(lowest, float(values.min())), max(highest, float(values.max()))

    # a probe: the places most likely to hold the extremes (the samples of lowest and highest
    # dose, the outline points of lowest and highest bound) give doses the shape holds...
    if sm.dval.size:
        visit_samples(np.unique([int(np.argmin(sm.dval)), int(np.argmax(sm.dval))]))
    if px.size > 2 * _PROBE:
        likeliest = [np.argpartition(-b_hi, _PROBE)[:_PROBE]]
        if seek_lo:
            likeliest.append(np.argpartition(b_lo, _PROBE)[:_PROBE])
        visit_points(np.unique(np.concatenate(likeliest)))
    elif px.size:
        visit_points(np.arange(px.size))
    # ... and then every place whose bound reaches beyond them (everything, if the probe found
    # no dose: no outline point covered and no whole cell among its samples)
    pick = np.flatnonzero(s_pending & (((sm.cmin < lowest) & seek_lo) | (sm.cmax > highest)))
    if pick.size:
        visit_samples(pick)
    pts = np.flatnonzero(p_pending & (((b_lo < lowest) & seek_lo) | (b_hi > highest)))
    if pts.size:
        visit_points(pts)
    # last, the turning points within pieces of slanted edges whose box reaches beyond
    check_time()
    pieces = np.flatnonzero(((ol.q_lo < lowest) & seek_lo) | (ol.q_hi > highest))
    if pieces.size and not math.isinf(lowest):
        rep = z_count[ol.qslab[pieces]]
        i = np.repeat(pieces, rep)
        j = np.arange(i.size) - np.repeat(np.cumsum(rep) - rep, rep)
        turns = _piece_turns(dose, ol.qa[i], ol.qd[i], zs_all[z_start[ol.qslab[i]] + j])
        turns = turns[~np.isnan(turns)]
        if turns.size:
            lowest, highest = min(lowest, float(turns.min())), max(highest, float(turns.max()))
    if not seek_lo:
        return math.nan, highest
    return (lowest, highest) if not math.isinf(lowest) else (math.nan, math.nan)


_PROBE = 64  # outline points of the lowest and of the highest bound evaluated first


class _NodeSamples(NamedTuple):
    """What :func:`_extremes` needs of each sample: its node and sub-slab, the node's dose on
    the planes around the sub-slab's middle, and the neighbourhood bounds."""

    full: npt.NDArray[np.bool_]  # the cell is whole: its node lies inside the slab
    x: FloatArray  # the node
    y: FloatArray
    slab_of: npt.NDArray[np.intp]
    kz: npt.NDArray[np.intp]
    zm: FloatArray  # the sub-slab's middle and thickness
    t: FloatArray
    d0: FloatArray  # the node's dose on planes kz and kz + 1
    d1: FloatArray
    flat0: npt.NDArray[np.intp]
    dval: FloatArray
    cmin: FloatArray
    cmax: FloatArray


def _inside(
    slabs: tuple[Slab, ...], slab_of: npt.NDArray[np.intp], xs: FloatArray, ys: FloatArray
) -> npt.NDArray[np.bool_]:
    """Whether each point lies inside the parity combination of its slab's rings."""
    inside = np.zeros(xs.size, dtype=bool)
    for s in np.unique(slab_of):
        mine = np.flatnonzero(slab_of == s)
        for ring in slabs[s].rings:
            if len(ring) >= 3:
                inside[mine] ^= shapely.contains_xy(shapely.polygons(ring), xs[mine], ys[mine])
    return inside


def _node_range(
    dose: DoseGrid,
    kz: npt.NDArray[np.intp],
    zm: FloatArray,
    t: FloatArray,
    d0: FloatArray,
    d1: FloatArray,
    flat0: npt.NDArray[np.intp],
) -> tuple[FloatArray, FloatArray]:
    """The lowest and highest dose at each sample's node over its sub-slab (middle ``zm``,
    thickness ``t``; ``d0``, ``d1`` the node's dose on planes ``kz`` and ``kz + 1``).

    Along z at a node the dose is piecewise linear between the planes, so its extremes are at
    the sub-slab's faces or a plane between them; a sub-slab is no thicker than the thinnest
    dose interval, so it reaches at most one plane beyond ``kz`` and ``kz + 1``. Beyond the grid
    the dose is that of the outermost plane (the sampling's coverage is half an interval).
    """
    z = dose.z_mm
    if z.size < 2:
        return d0, d0
    plane = dose.dose_gy.shape[1] * dose.dose_gy.shape[2]
    d_flat = dose.dose_gy.reshape(-1)
    za = np.clip(zm - t / 2, z[0], z[-1])
    zb = np.clip(zm + t / 2, z[0], z[-1])
    z0, z1 = z[kz], z[kz + 1]

    def between(lower: FloatArray, upper: FloatArray, at: FloatArray, za_: FloatArray, zb_: FloatArray) -> FloatArray:
        return lower + (upper - lower) * np.clip((at - za_) / (zb_ - za_), 0.0, 1.0)

    va = between(d0, d1, za, z0, z1)
    vb = between(d0, d1, zb, z0, z1)
    below = np.flatnonzero((za < z0) & (kz >= 1))
    if below.size:
        k = kz[below]
        dm = np.take(d_flat, flat0[below] - plane)
        va[below] = between(dm, d0[below], za[below], z[k - 1], z[k])
    above = np.flatnonzero((zb > z1) & (kz + 2 < z.size))
    if above.size:
        k = kz[above]
        dp = np.take(d_flat, flat0[above] + 2 * plane)
        vb[above] = between(d1[above], dp, zb[above], z[k + 1], z[k + 2])
    lo, hi = np.minimum(va, vb), np.maximum(va, vb)
    at0 = (za < z0) & (z0 < zb)
    at1 = (za < z1) & (z1 < zb)
    lo = np.where(at0, np.minimum(lo, d0), lo)
    hi = np.where(at0, np.maximum(hi, d0), hi)
    lo = np.where(at1, np.minimum(lo, d1), lo)
    hi = np.where(at1, np.maximum(hi, d1), hi)
    return lo, hi


class _Outline(NamedTuple):
    """The places on the slabs' outlines where the dose can turn (:func:`_outline`)."""

    px: FloatArray  # points: vertices, grid-line crossings, coverage-limit crossings
    py: FloatArray
    slab: npt.NDArray[np.intp]
    b_lo: FloatArray  # bounds of the dose near each point (its box's nodes)
    b_hi: FloatArray
    qa: FloatArray  # pieces of edge within one box: start (n, 2) and step to the end (n, 2)
    qd: FloatArray
    qslab: npt.NDArray[np.intp]
    q_lo: FloatArray
    q_hi: FloatArray
    zs_all: FloatArray  # the z of each slab where the dose along z can turn, flat
    z_start: npt.NDArray[np.intp]
    z_count: npt.NDArray[np.intp]


def _outline(slabs: tuple[Slab, ...], dose: DoseGrid, pd: PreparedDose, max_subslab_mm: float) -> _Outline:
    """The outline points and pieces of every slab within the grid's coverage, with bounds.

    Points: each ring's vertices and the points where its edges cross the grid lines through
    the dose nodes or the limits of the grid's coverage (half a voxel beyond the outermost
    nodes). Between two consecutive points an edge lies in one box of nodes, where the dose at
    a given z is bilinear: along the piece a quadratic, whose turning point (if within the
    piece) :func:`_piece_turns` evaluates. z: the faces of the part of each slab that the
    sampling counts as covered (its sub-slabs whose middle lies within the grid's coverage,
    :func:`_sample`), and the dose planes between: Dmin and Dmax come from the same volume as
    the DVH, whatever slabs a group holds."""
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    dx, dy = pd.dx, pd.dy
    a, b, slab_of_edge, pt_edge, pt_t = _outline_points(slabs, x, y, dx, dy)
    pts = a[pt_edge] + (b[pt_edge] - a[pt_edge]) * pt_t[:, None]
    lo, hi, slab_ok = _counted_z(slabs, dose, max_subslab_mm)
    tol = 1e-9 * max(dx, dy)
    pslab = slab_of_edge[pt_edge]
    ok = (
        (pts[:, 0] >= x[0] - dx / 2 - tol)
        & (pts[:, 0] <= x[-1] + dx / 2 + tol)
        & (pts[:, 1] >= y[0] - dy / 2 - tol)
        & (pts[:, 1] <= y[-1] + dy / 2 + tol)
        & slab_ok[pslab]
    )
    # pieces: consecutive points of an edge (sorted by t), and the last point to the edge's end
    order = np.lexsort((pt_t, pt_edge))
    e_s, t_s = pt_edge[order], pt_t[order]
    same = np.append(e_s[1:] == e_s[:-1], False)
    t_end = np.where(same, np.append(t_s[1:], 1.0), 1.0)
    keep = t_end - t_s > 1e-12
    e_q, t0, t1 = e_s[keep], t_s[keep], t_end[keep]
    step = b[e_q] - a[e_q]
    qa = a[e_q] + step * t0[:, None]
    qd = step * (t1 - t0)[:, None]
    mid = qa + qd / 2
    qslab = slab_of_edge[e_q]
    # only pieces between the outermost nodes have a cross term (beyond, the dose is clamped)
    inner = (
        (mid[:, 0] > x[0]) & (mid[:, 0] < x[-1]) & (mid[:, 1] > y[0]) & (mid[:, 1] < y[-1]) & slab_ok[qslab]
        & (np.abs(qd[:, 0]) > tol) & (np.abs(qd[:, 1]) > tol)
    )  # fmt: skip
    qa, qd, qslab, mid = qa[inner], qd[inner], qslab[inner], mid[inner]
    pts, pslab = pts[ok], pslab[ok]
    zs_per = [
        np.concatenate([[a_, b_], z[(z > a_) & (z < b_)]]) if b_ > a_ else np.array([a_])
        for a_, b_ in zip(lo, hi, strict=True)
    ]
    counts = np.array([zz.size for zz in zs_per])
    starts = np.cumsum(counts) - counts
    b_lo, b_hi = _box_bounds(pts, pslab, lo, hi, dose, pd)
    q_lo, q_hi = _box_bounds(mid, qslab, lo, hi, dose, pd)
    return _Outline(
        pts[:, 0],
        pts[:, 1],
        pslab,
        b_lo,
        b_hi,
        qa,
        qd,
        qslab,
        q_lo,
        q_hi,
        np.concatenate([np.zeros(0), *zs_per]),
        starts,
        counts,
    )


def _sub_slabs(
    slabs: tuple[Slab, ...], max_subslab_mm: float
) -> tuple[
    npt.NDArray[np.int64], FloatArray, npt.NDArray[np.int64], npt.NDArray[np.intp], npt.NDArray[np.int64], FloatArray
]:
    """How :func:`_sample` cuts slabs along z: per slab the number of sub-slabs no thicker than
    ``max_subslab_mm``, their thickness and the index of its first; per sub-slab its slab, its
    place in the slab and its middle."""
    z_lo = np.array([sl.z_lo_mm for sl in slabs])
    thick = np.array([sl.thickness_mm for sl in slabs])
    n_sub = np.maximum(1, np.ceil(thick / max_subslab_mm - 1e-9)).astype(np.int64)
    t_sub = thick / n_sub
    first_sub = np.cumsum(n_sub) - n_sub
    slab_of_sub = np.repeat(np.arange(len(slabs)), n_sub)
    m_sub = np.arange(slab_of_sub.size) - first_sub[slab_of_sub]
    zm_sub = z_lo[slab_of_sub] + (m_sub + 0.5) * t_sub[slab_of_sub]
    return n_sub, t_sub, first_sub, slab_of_sub, m_sub, zm_sub


def _counted_z(
    slabs: tuple[Slab, ...], dose: DoseGrid, max_subslab_mm: float
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """The z range of each slab that the sampling counts as covered: from the lower face of its
    first sub-slab whose middle lies within the grid's coverage to the upper face of its last
    (sub-slabs as :func:`_sample` cuts them), and whether it has any."""
    z_cover = _z_cover(dose.z_mm, float(dose.x_mm[1] - dose.x_mm[0]))
    z_lo = np.array([sl.z_lo_mm for sl in slabs])
    _, t_sub, _, slab_of_sub, m_sub, zm_sub = _sub_slabs(slabs, max_subslab_mm)
    counted = (zm_sub >= z_cover[0]) & (zm_sub <= z_cover[1])
    m_first = np.full(len(slabs), np.iinfo(np.int64).max)
    m_last = np.full(len(slabs), -1)
    np.minimum.at(m_first, slab_of_sub[counted], m_sub[counted])
    np.maximum.at(m_last, slab_of_sub[counted], m_sub[counted])
    slab_ok = m_last >= 0
    lo = np.where(slab_ok, z_lo + np.where(slab_ok, m_first, 0) * t_sub, z_lo)
    hi = np.where(slab_ok, z_lo + (m_last + 1) * t_sub, z_lo)
    return lo, hi, slab_ok


_BOUND_PIECES = 64  # an edge crossing more boxes than this leaves its ring unbounded (outlined)


def _outline_bounds(
    slabs: tuple[Slab, ...],
    dose: DoseGrid,
    pd: PreparedDose,
    lo: FloatArray,
    hi: FloatArray,
    slab_ok: npt.NDArray[np.bool_],
) -> tuple[FloatArray, FloatArray]:
    """Bounds of the dose anywhere on each ring (of three points or more, slab by slab, in
    order) over the z range its slab counts (``lo`` to ``hi``, where ``slab_ok``; +inf, -inf
    for a slab with none): the lowest and highest node of every box an edge passes through, on
    every dose interval the range meets. Each edge is cut into pieces shorter than 0.99 of a
    box along x and along y, so a piece lies within the (at most 2 x 2) boxes of its ends.
    Points beyond the grid fall in its outermost boxes, as the interpolation clamps them. A ring
    with an edge of more than ``_BOUND_PIECES`` pieces (long, or far outside the grid) gets
    -inf, +inf: no bound, so it is always outlined (whose own budget counts its crossings)."""
    lengths = np.array([len(r) for sl in slabs for r in sl.rings if len(r) >= 3], dtype=np.intp)
    low = np.full(lengths.size, np.inf)
    high = np.full(lengths.size, -np.inf)
    ring_edges = _ring_edges(slabs)
    if ring_edges is None or not slab_ok.any():
        return low, high
    a, b, slab_of = ring_edges
    ring_of = np.repeat(np.arange(lengths.size), lengths)
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    with np.errstate(all="ignore"):  # a hostile coordinate gives inf or NaN: no bound
        ua, va = (a[:, 0] - x[0]) / pd.dx, (a[:, 1] - y[0]) / pd.dy
        ub, vb = (b[:, 0] - x[0]) / pd.dx, (b[:, 1] - y[0]) / pd.dy
        span = np.maximum(np.abs(ub - ua), np.abs(vb - va))
    wild = ~(span <= (_BOUND_PIECES - 1) * 0.99)  # NaN too
    unbounded = np.zeros(lengths.size, dtype=bool)
    unbounded[ring_of[wild]] = True
    use = slab_ok[slab_of] & ~unbounded[ring_of]
    if use.any():
        ua, va, ub, vb, span = ua[use], va[use], ub[use], vb[use], span[use]
        sl_e, ring_e = slab_of[use], ring_of[use]
        n = np.maximum(1, np.ceil(span / 0.99)).astype(np.int64)
        e = np.repeat(np.arange(ua.size), n)
        t0 = (np.arange(e.size) - np.repeat(np.cumsum(n) - n, n)) / n[e]
        t1 = t0 + 1.0 / n[e]
        nx1, ny1 = x.size - 1, y.size - 1

        def box(u: FloatArray, m: int) -> npt.NDArray[np.intp]:
            return np.minimum(np.clip(u, 0, m).astype(np.intp), m - 1)

        ja = box(ua[e] + (ub[e] - ua[e]) * t0, nx1)
        jb = box(ua[e] + (ub[e] - ua[e]) * t1, nx1)
        ia = box(va[e] + (vb[e] - va[e]) * t0, ny1)
        ib = box(va[e] + (vb[e] - va[e]) * t1, ny1)
        sl = sl_e[e]
        if z.size > 1:
            k_lo = np.clip(np.searchsorted(z, lo, side="right") - 1, 0, z.size - 2)
            k_hi = np.maximum(np.clip(np.searchsorted(z, hi, side="left") - 1, 0, z.size - 2), k_lo)
        else:
            k_lo = k_hi = np.zeros(lo.size, dtype=np.intp)
        bmin, bmax = pd.box_min.reshape(-1), pd.box_max.reshape(-1)
        plane = ny1 * nx1
        piece_lo = np.full(e.size, np.inf, dtype=np.float32)
        piece_hi = np.full(e.size, -np.inf, dtype=np.float32)
        for off in range(int((k_hi - k_lo)[slab_ok].max()) + 1):
            kk = np.minimum(k_lo[sl] + off, k_hi[sl]) * plane
            for jj in (ja, jb):
                for ii in (ia, ib):
                    at = kk + ii * nx1 + jj
                    piece_lo = np.minimum(piece_lo, np.take(bmin, at))
                    piece_hi = np.maximum(piece_hi, np.take(bmax, at))
        # the pieces are in ring order: one reduction per ring that has any
        ring_p = ring_e[e]
        starts = np.flatnonzero(np.r_[True, ring_p[1:] != ring_p[:-1]])
        # in double precision, as in _sample (the bounds are rounded outward)
        low[ring_p[starts]] = np.minimum.reduceat(piece_lo, starts).astype(np.float64)
        high[ring_p[starts]] = np.maximum.reduceat(piece_hi, starts).astype(np.float64)
    low[unbounded] = -np.inf
    high[unbounded] = np.inf
    return low, high


def _box_bounds(
    p: FloatArray, slab_of: npt.NDArray[np.intp], lo: FloatArray, hi: FloatArray, dose: DoseGrid, pd: PreparedDose
) -> tuple[FloatArray, FloatArray]:
    """Bounds of the dose near points: the nodes of each point's box over the dose intervals its
    slab spans (at most two; a thicker slab's points have no bound and are all evaluated)."""
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    fx = np.clip((p[:, 0] - x[0]) / pd.dx, 0, x.size - 1)
    fy = np.clip((p[:, 1] - y[0]) / pd.dy, 0, y.size - 1)
    jx = np.minimum(fx.astype(np.intp), x.size - 2)
    iy = np.minimum(fy.astype(np.intp), y.size - 2)
    if z.size > 1:
        k_lo = np.clip(np.searchsorted(z, lo, side="right") - 1, 0, z.size - 2)
        k_hi = np.clip(np.searchsorted(z, hi, side="left") - 1, 0, z.size - 2)
        k_hi = np.maximum(k_hi, k_lo)
    else:
        k_lo = k_hi = np.zeros(lo.size, dtype=np.intp)
    bounded = (k_hi - k_lo <= 1)[slab_of]
    plane = (y.size - 1) * (x.size - 1)
    at = iy * (x.size - 1) + jx
    f_lo, f_hi = k_lo[slab_of] * plane + at, k_hi[slab_of] * plane + at
    bmin, bmax = pd.box_min.reshape(-1), pd.box_max.reshape(-1)
    # in double precision, as in _sample
    b_lo = np.where(bounded, np.minimum(np.take(bmin, f_lo), np.take(bmin, f_hi)).astype(np.float64), -np.inf)
    b_hi = np.where(bounded, np.maximum(np.take(bmax, f_lo), np.take(bmax, f_hi)).astype(np.float64), np.inf)
    return b_lo, b_hi


def _z_cover(z: FloatArray, dx: float) -> tuple[float, float]:
    """The z range the dose grid covers: half an interval beyond its outermost planes (a grid of
    one plane: one column spacing either side)."""
    if z.size > 1:
        return float(z[0] - (z[1] - z[0]) / 2), float(z[-1] + (z[-1] - z[-2]) / 2)
    return float(z[0] - dx), float(z[0] + dx)


def _ring_edges(slabs: tuple[Slab, ...]) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp]] | None:
    """Every edge of the slabs' rings (of three points or more): its start, its end (each ring
    closes on its first point) and its slab; None when there is no such ring."""
    rings = [(i, r) for i, sl in enumerate(slabs) for r in sl.rings if len(r) >= 3]
    if not rings:
        return None
    lengths = np.array([len(r) for _, r in rings])
    a = np.concatenate([r for _, r in rings])
    ends = np.cumsum(lengths)
    following = np.arange(1, a.shape[0] + 1)
    following[ends - 1] = ends - lengths
    return a, a[following], np.repeat(np.array([i for i, _ in rings], dtype=np.intp), lengths)


def _outline_points(
    slabs: tuple[Slab, ...], x: FloatArray, y: FloatArray, dx: float, dy: float
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray]:
    """The rings' edges (start ``a``, end ``b``, slab of each) and the places along them where
    the dose can turn, as (edge, t): each vertex (t = 0), and each crossing of a grid line
    through the dose nodes or of a limit of the grid's coverage (half a voxel beyond the
    outermost nodes, where the engine's coverage ends)."""
    ring_edges = _ring_edges(slabs)
    if ring_edges is None:
        empty = np.zeros((0, 2))
        none = np.zeros(0, dtype=np.intp)
        return empty, empty, none, none, np.zeros(0)
    a, b, slab_of = ring_edges
    edges: list[npt.NDArray[np.intp]] = [np.arange(len(a))]
    ts: list[FloatArray] = [np.zeros(len(a))]
    for axis, origin, step, n in ((0, x[0], dx, x.size), (1, y[0], dy, y.size)):
        ua, ub = (a[:, axis] - origin) / step, (b[:, axis] - origin) / step
        lo, hi = np.minimum(ua, ub), np.maximum(ua, ub)
        # only the lines of the grid's nodes: beyond them the dose is clamped (and points beyond
        # the coverage are not used), so a ring far outside costs nothing here
        first = np.ceil(np.clip(lo, -1.0, n)).astype(np.int64)
        last = np.floor(np.clip(hi, -1.0, n)).astype(np.int64)
        first, last = np.maximum(first, 0), np.minimum(last, n - 1)
        count = np.where(hi > lo, np.maximum(last - first + 1, 0), 0)
        if count.any():
            e = np.repeat(np.arange(len(a)), count)
            line = first[e] + (np.arange(e.size) - np.repeat(np.cumsum(count) - count, count))
            edges.append(e)
            ts.append((line - ua[e]) / (ub[e] - ua[e]))
        for limit in (-0.5, n - 0.5):
            e = np.flatnonzero((lo < limit) & (limit < hi))
            edges.append(e)
            ts.append((limit - ua[e]) / (ub[e] - ua[e]))
    return a, b, slab_of, np.concatenate(edges), np.clip(np.concatenate(ts), 0.0, 1.0)


def _piece_turns(dose: DoseGrid, qa: FloatArray, qd: FloatArray, qz: FloatArray) -> FloatArray:
    """The dose at the turning point of each piece of edge (start ``qa``, step ``qd``, at ``qz``),
    NaN where it has none within the piece.

    Within a box the dose at a given z is bilinear, ``c00 + (c10 - c00) u + (c01 - c00) v + D u v``
    in the box's own coordinates; along a straight piece ``u = u0 + du t``, ``v = v0 + dv t`` it is
    a quadratic in t with ``D du dv`` as its leading coefficient (a saddle: a slanted edge can
    pass a dose higher or lower than at either end)."""
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    flat = dose.dose_gy.reshape(-1)
    dx, dy = x[1] - x[0], y[1] - y[0]
    mid = qa + qd / 2
    jx = np.clip(((mid[:, 0] - x[0]) / dx).astype(np.intp), 0, x.size - 2)
    iy = np.clip(((mid[:, 1] - y[0]) / dy).astype(np.intp), 0, y.size - 2)
    u0, du = (qa[:, 0] - x[jx]) / dx, qd[:, 0] / dx
    v0, dv = (qa[:, 1] - y[iy]) / dy, qd[:, 1] / dy
    if z.size > 1:
        kz = np.clip(np.searchsorted(z, qz, side="right") - 1, 0, z.size - 2)
        tz = np.clip((qz - z[kz]) / (z[kz + 1] - z[kz]), 0.0, 1.0)
        plane = y.size * x.size
    else:
        kz, tz, plane = np.zeros(qz.size, dtype=np.intp), np.zeros(qz.size), 0
    base = (kz * y.size + iy) * x.size + jx

    def corner(offset: int) -> FloatArray:
        out: FloatArray = np.take(flat, base + offset) * (1 - tz) + np.take(flat, base + offset + plane) * tz
        return out

    c00, c10, c01, c11 = corner(0), corner(1), corner(x.size), corner(x.size + 1)
    d = c00 - c10 - c01 + c11
    quad = d * du * dv
    lin = (c10 - c00) * du + (c01 - c00) * dv + d * (u0 * dv + v0 * du)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(quad != 0, -lin / (2 * quad), np.nan)
    inside = (t > 0) & (t < 1)
    u, v = u0 + du * t, v0 + dv * t
    value = c00 + (c10 - c00) * u + (c01 - c00) * v + d * u * v
    out: FloatArray = np.where(inside, value, np.nan)
    return out


def _trilinear(dose: DoseGrid, px: FloatArray, py: FloatArray, pz: FloatArray) -> FloatArray:
    """The dose interpolated trilinearly at points, each clamped into the grid."""
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    flat = dose.dose_gy.reshape(-1)
    fx = np.clip((px - x[0]) / (x[1] - x[0]), 0.0, x.size - 1)
    fy = np.clip((py - y[0]) / (y[1] - y[0]), 0.0, y.size - 1)
    jx = np.minimum(fx.astype(np.intp), x.size - 2)
    iy = np.minimum(fy.astype(np.intp), y.size - 2)
    tx, ty = fx - jx, fy - iy
    if z.size > 1:
        kz = np.clip(np.searchsorted(z, pz, side="right") - 1, 0, z.size - 2)
        tz = np.clip((pz - z[kz]) / (z[kz + 1] - z[kz]), 0.0, 1.0)
    else:
        kz, tz = np.zeros(px.size, dtype=np.intp), np.zeros(px.size)
    plane = y.size * x.size if z.size > 1 else 0
    base = (kz * y.size + iy) * x.size + jx
    out = np.zeros(px.size)
    for dz, wz in ((0, 1 - tz), (plane, tz)):
        for dy, wy in ((0, 1 - ty), (x.size, ty)):
            w = wz * wy
            out += (np.take(flat, base + (dz + dy)) * (1 - tx) + np.take(flat, base + (dz + dy + 1)) * tx) * w
    return out


@dataclass(frozen=True, eq=False)
class _Coverage:
    """The occupied cells of a slab stack, sparse: for each, its flat (slab, row, column)
    index, occupied area (mm2), the centroid of the occupied part and its variance along x
    and y."""

    index: npt.NDArray[np.int64]  # ascending
    area: FloatArray
    cx: FloatArray
    cy: FloatArray
    var_x: FloatArray
    var_y: FloatArray


_CHUNK_CELLS = 100_000  # slabs are sampled in groups of at most this many cells (bounded memory)


def _coverage(slabs: tuple[Slab, ...], xc: FloatArray, yc: FloatArray, dx: float, dy: float, k: int) -> _Coverage:
    """Scan-line coverage of a group of slabs (:func:`_coverage_of`), each distinct set of rings
    measured once: a slab's coverage depends on its rings and the lattice alone, and the slabs
    of a derived structure cut at another's end (Body - PTV at the PTV's end caps) repeat their
    neighbour's rings over a thinner z range. The same numbers as measuring every slab, bit
    for bit: each slab's crossings, pieces and sums come in the same order either way."""
    keys = [tuple(r.tobytes() for r in sl.rings) for sl in slabs]
    position: dict[tuple[bytes, ...], int] = {}  # each distinct set of rings: its place among them
    distinct: list[int] = []  # the first slab of each
    for i, key in enumerate(keys):
        if key not in position:
            position[key] = len(distinct)
            distinct.append(i)
    if len(distinct) == len(slabs):
        return _coverage_of(slabs, xc, yc, dx, dy, k)
    cov = _coverage_of(tuple(slabs[i] for i in distinct), xc, yc, dx, dy, k)
    cells = yc.size * xc.size
    which = np.array([position[key] for key in keys], dtype=np.int64)  # each slab's distinct set
    bounds = np.searchsorted(cov.index, np.arange(len(distinct) + 1, dtype=np.int64) * cells)
    start, count = bounds[which], bounds[which + 1] - bounds[which]
    take = np.repeat(start, count) + (np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count))
    slab = np.repeat(np.arange(len(slabs), dtype=np.int64), count)
    index = slab * cells + (cov.index[take] - which[slab] * cells)
    return _Coverage(index, cov.area[take], cov.cx[take], cov.cy[take], cov.var_x[take], cov.var_y[take])


def _coverage_of(slabs: tuple[Slab, ...], xc: FloatArray, yc: FloatArray, dx: float, dy: float, k: int) -> _Coverage:
    """Scan-line coverage of a group of slabs; rings of one slab combine by parity.

    Sparse: the pieces of scan line at the ends of each inside interval are accumulated
    only into the occupied cells, not into dense (slab, row, column) arrays; the lines that
    cross a pixel whole are counted with difference arrays along each row. The pieces of all
    three kinds are summed in one pass and cubes are products (``x**3`` is a slow ``pow``):
    the values agree with the dense version to rounding (about 1e-9 cc on a liver plan).
    """
    ns, nr, nc = len(slabs), yc.size, xc.size
    ring_edges = _ring_edges(slabs)
    if ring_edges is None:
        empty = np.zeros(0)
        return _Coverage(np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty)
    pts0, pts1, slab_of = ring_edges
    xa, ya, xb, yb = pts0[:, 0], pts0[:, 1], pts1[:, 0], pts1[:, 1]
    h = dy / k
    per_slab = nr * k
    ybase = yc[0] - dy / 2
    ylo, yhi = np.minimum(ya, yb), np.maximum(ya, yb)
    # line l of a slab sits at ybase + (l + 0.5) h; an edge crosses the lines with ylo <= y < yhi
    first = np.maximum(np.ceil((ylo - ybase) / h - 0.5).astype(np.int64), 0)
    last = np.minimum(np.ceil((yhi - ybase) / h - 0.5).astype(np.int64) - 1, per_slab - 1)
    count = np.maximum(last - first + 1, 0)
    edge = np.repeat(np.arange(xa.size), count)
    line = first[edge] + (np.arange(edge.size) - np.repeat(np.cumsum(count) - count, count))
    yl = ybase + (line + 0.5) * h
    xs = xa[edge] + (yl - ya[edge]) * (xb[edge] - xa[edge]) / (yb[edge] - ya[edge])
    gline = slab_of[edge] * per_slab + line
    order = np.lexsort((xs, gline))
    xs, gline = xs[order], gline[order]
    if xs.size % 2 or np.any(gline[1::2] != gline[0::2]):
        raise GeometryError("contour crossings do not pair up on a scan line: a ring is not closed")
    a, b, gl = xs[0::2], xs[1::2], gline[0::2]
    keep = b > a
    a, b, gl = a[keep], b[keep], gl[keep]
    grow = gl // k  # slab * rows + row
    ylin = ybase + (gl % per_slab + 0.5) * h
    xleft = xc[0] - dx / 2
    ia = np.clip(np.floor((a - xleft) / dx).astype(np.int64), 0, nc - 1)
    ib = np.clip(np.floor((b - xleft) / dx).astype(np.int64), 0, nc - 1)

    # pieces of pixels: both ends of each interval (one piece when it starts and ends in one pixel)
    same = ia == ib
    o = ~same
    pieces = (
        (grow[same] * nc + ia[same], a[same], b[same], ylin[same]),
        (grow[o] * nc + ia[o], a[o], xleft + (ia[o] + 1) * dx, ylin[o]),
        (grow[o] * nc + ib[o], xleft + ib[o] * dx, b[o], ylin[o]),
    )

    # whole pixels between the ends: difference arrays along each row
    width = nc + 1
    start_idx = grow[o] * width + ia[o] + 1
    stop_idx = grow[o] * width + ib[o]
    n_rows = ns * nr

    def run_sum(w: FloatArray) -> FloatArray:
        diff = np.bincount(start_idx, w, minlength=n_rows * width) - np.bincount(stop_idx, w, minlength=n_rows * width)
        out: FloatArray = np.cumsum(diff.reshape(n_rows, width), axis=1)[:, :nc].reshape(-1)
        return out

    n_full_all = run_sum(np.ones(start_idx.size))  # scan lines crossing each pixel from side to side
    occupied = n_full_all > 0
    idx = np.concatenate([p[0] for p in pieces])
    occupied[idx] = True
    cells = np.flatnonzero(occupied)  # ascending, as np.nonzero of a dense array would give

    # moments of the pieces (one pass over the pieces of all three kinds) and of the whole lines
    nb = cells.size
    pos = (np.cumsum(occupied) - 1)[idx]  # each piece's cell, as an index into ``cells``
    lo = np.concatenate([p[1] for p in pieces])
    hi = np.concatenate([p[2] for p in pieces])
    yv = np.concatenate([p[3] for p in pieces])
    ln = hi - lo
    lo2, hi2 = lo * lo, hi * hi
    lny = ln * yv
    sums = [np.bincount(pos, w, minlength=nb) for w in (ln, (hi2 - lo2) / 2, (hi2 * hi - lo2 * lo) / 3, lny, lny * yv)]
    n_full = n_full_all[cells]
    y_full = run_sum(ylin[o])[cells]
    yy_full = run_sum(ylin[o] ** 2)[cells]
    xrow = xc[cells % nc]
    ycol = yc[(cells // nc) % nr]
    length = sums[0] + n_full * dx
    mom_x = sums[1] + n_full * dx * xrow
    mom_xx = sums[2] + n_full * dx * (xrow**2 + dx * dx / 12)
    mom_y = sums[3] + y_full * dx
    mom_yy = sums[4] + yy_full * dx
    area = length * h
    keep = area >= 1e-9
    with np.errstate(invalid="ignore", divide="ignore"):
        safe = np.where(length > 0, length, 1.0)
        cx = np.where(length > 0, mom_x / safe, xrow)
        cy = np.where(length > 0, mom_y / safe, ycol)
        var_x = np.maximum(mom_xx / safe - cx**2, 0.0)
        var_y = np.maximum(mom_yy / safe - cy**2, 0.0) + h * h / 12
    return _Coverage(cells[keep], area[keep], cx[keep], cy[keep], var_x[keep], var_y[keep])


def cumulative_histogram(
    dose_gy: FloatArray, width_gy: FloatArray, volume_cc: FloatArray, *, bin_width_gy: float
) -> tuple[FloatArray, FloatArray]:
    """Cumulative DVH at bin edges from samples spread uniformly over ``dose ± width/2``.

    Returns ``(edges, volume_ge)``, exact (for this sample model) at every edge.
    """
    below = _below_edges(dose_gy, width_gy, volume_cc, bin_width_gy)
    edges: FloatArray = np.arange(below.size, dtype=np.float64) * bin_width_gy
    total = float(volume_cc.sum())
    v_ge = np.clip(total - below, 0.0, total)
    v_ge = np.minimum.accumulate(v_ge)  # monotone despite rounding
    return edges, v_ge


def _below_edges(dose_gy: FloatArray, width_gy: FloatArray, volume_cc: FloatArray, bin_width_gy: float) -> FloatArray:
    """Volume with dose below each bin edge ``j * bin_width_gy``, up to the first edge above
    every sample (beyond it, all the volume lies below)."""
    lo: FloatArray = np.maximum(dose_gy - width_gy / 2, 0.0)
    hi: FloatArray = np.maximum(dose_gy + width_gy / 2, 0.0)
    n_edges = math.ceil(float(hi.max()) / bin_width_gy) + 2
    edges: FloatArray = np.arange(n_edges, dtype=np.float64) * bin_width_gy
    steep = (hi - lo) < bin_width_gy * 1e-3
    below = np.zeros(n_edges)  # volume with dose < edge
    if steep.any():
        # a step: the sample counts as below every edge strictly above its dose
        k = np.floor(dose_gy[steep] / bin_width_gy).astype(np.int64) + 1
        k = np.minimum(k, n_edges - 1)
        below += np.cumsum(np.bincount(k, volume_cc[steep], minlength=n_edges))
    ramp = ~steep
    if ramp.any():
        c = volume_cc[ramp] / (hi[ramp] - lo[ramp])
        below += _hinge_sum(lo[ramp], c, edges, bin_width_gy) - _hinge_sum(hi[ramp], c, edges, bin_width_gy)
    return below


def _hinge_sum(p: FloatArray, c: FloatArray, edges: FloatArray, bw: float) -> FloatArray:
    """sum_i c_i * max(edge_j - p_i, 0) at every edge, in O(n + edges)."""
    n = edges.size
    k = np.minimum(np.floor(p / bw).astype(np.int64), n - 1)
    a = np.cumsum(np.bincount(k, c, minlength=n))
    b = np.cumsum(np.bincount(k, c * p, minlength=n))
    out = np.zeros(n)
    # edges j > k_i contribute: shift by one
    out[1:] = edges[1:] * a[:-1] - b[:-1]
    return np.maximum(out, 0.0)
