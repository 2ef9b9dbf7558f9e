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
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from rtqa.deadline import check_time
from rtqa.dvh.budget import require_sampling_budget
from rtqa.dvh.geometry import EndCap, Slab, SlabStack
from rtqa.errors import GeometryError
from rtqa.model import DoseGrid, FloatArray

SMALL_STRUCTURE_CC = 0.5
DEFAULT_BIN_WIDTH_GY = 0.01


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

    @property
    def covered_cc(self) -> float:
        return self.volume_cc - self.uncovered_cc

    @property
    def is_small(self) -> bool:
        return self.volume_cc < SMALL_STRUCTURE_CC

    @property
    def differential_cc(self) -> FloatArray:
        """Volume per bin ``[edge_j, edge_j+1)``."""
        return -np.diff(self.volume_ge_cc)

    def volume_at_dose(self, dose_gy: float) -> float:
        """Covered volume (cc) receiving at least ``dose_gy``, interpolated."""
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
        return float(self.dose_edges_gy[j] + frac * (self.dose_edges_gy[j + 1] - self.dose_edges_gy[j]))


@dataclass(frozen=True, eq=False)
class PreparedDose:
    """Arrays derived from a dose grid once and shared by every structure of a plan."""

    dose: DoseGrid
    dx: float
    dy: float
    grad_x: FloatArray  # dD/dx at the nodes
    grad_y: FloatArray  # dD/dy at the nodes
    grad_z: FloatArray  # slope between plane k and k+1
    near_min: FloatArray  # lowest node value around each node (3 x 3 in-plane, 5 planes)
    near_max: FloatArray


def prepare_dose(dose: DoseGrid) -> PreparedDose:
    """Gradients and neighbourhood bounds of a dose grid (see :func:`compute_dvh`).

    Raises
    ------
    GeometryError
        A grid with fewer than two rows or columns, or non-uniform x/y spacing.
    """
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    if x.size < 2 or y.size < 2:
        raise GeometryError("dose grid needs at least two columns and two rows")
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    if not (np.allclose(np.diff(x), dx, rtol=1e-4) and np.allclose(np.diff(y), dy, rtol=1e-4)):
        raise GeometryError("dose grid spacing must be uniform in x and y")
    d = dose.dose_gy
    gz = np.diff(d, axis=0) / np.diff(z)[:, None, None] if z.size > 1 else np.zeros_like(d)
    return PreparedDose(
        dose=dose,
        dx=dx,
        dy=dy,
        grad_x=np.gradient(d, dx, axis=2),
        grad_y=np.gradient(d, dy, axis=1),
        grad_z=gz,
        near_min=_neighbourhood(d, np.minimum),
        near_max=_neighbourhood(d, np.maximum),
    )


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
) -> list[DVH]:
    """The DVHs of variants of one structure (the same ROI under each end-cap convention), each
    slab they share sampled once: a slab's samples depend on nothing but the slab, the dose grid
    and the scan-line spacing, which is taken from the first structure for all. Variants that
    differ only at their ends cost little more than one DVH. Parameters as :func:`compute_dvh`.
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
            chunk = _sample(tuple(slabs[first : first + step]), dose, pd, rows, cols, k, max_subslab_mm)
            if chunk.dmid.size:
                chunk = chunk._replace(below=_below_edges(chunk.dmid, chunk.width, chunk.v, bin_width_gy))
            for n in owners_of:
                totals[n] += chunk.total
                uncovered[n] += chunk.uncovered
                if chunk.dmid.size:
                    parts[n].append(chunk)
    return [_assemble(st, totals[n], uncovered[n], parts[n], bin_width_gy) for n, st in enumerate(structures)]


def _slab_key(slab: Slab) -> tuple[object, ...]:
    """What makes two slabs the same: their limits and their rings, point for point."""
    return (round(slab.z_lo_mm, 9), round(slab.z_hi_mm, 9), tuple(r.tobytes() for r in slab.rings))


def _assemble(structure: SlabStack, total: float, uncovered: float, parts: list[_Samples], bin_width_gy: float) -> DVH:
    """The DVH of a structure from the samples of its slabs."""
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
    return DVH(
        name=structure.name,
        dose_edges_gy=edges,
        volume_ge_cc=v_ge,
        volume_cc=volume_cc,
        uncovered_cc=uncovered / 1000.0,
        mean_gy=mean,
        min_gy=float(max(0.0, min(float(np.min(p.lo)) for p in parts))),
        max_gy=max(float(np.max(p.hi)) for p in parts),
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


def _sample(
    slabs: tuple[Slab, ...],
    dose: DoseGrid,
    pd: PreparedDose,
    rows: npt.NDArray[np.int64],
    cols: npt.NDArray[np.int64],
    k: int,
    max_subslab_mm: float,
) -> _Samples:
    """Sample a group of slabs (see :func:`compute_dvh`)."""
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
    z_lo = np.array([sl.z_lo_mm for sl in slabs])
    thick = np.array([sl.thickness_mm for sl in slabs])
    n_sub = np.maximum(1, np.ceil(thick / max_subslab_mm - 1e-9)).astype(np.int64)
    t_sub = thick / n_sub
    first_sub = np.cumsum(n_sub) - n_sub
    slab_of_sub = np.repeat(np.arange(len(slabs)), n_sub)
    m_sub = np.arange(slab_of_sub.size) - first_sub[slab_of_sub]
    zm_sub = z_lo[slab_of_sub] + (m_sub + 0.5) * t_sub[slab_of_sub]
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

    z_lo_cover = z[0] - (z[1] - z[0]) / 2 if z.size > 1 else z[0] - dx
    z_hi_cover = z[-1] + (z[-1] - z[-2]) / 2 if z.size > 1 else z[-1] + dx
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

    dval = at_node(d)
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
    # the trilinear dose within a cell never leaves the range of its neighbouring nodes
    cmin = np.minimum(np.take(pd.near_min.reshape(-1), flat0), np.take(pd.near_min.reshape(-1), flat1))
    cmax = np.maximum(np.take(pd.near_max.reshape(-1), flat0), np.take(pd.near_max.reshape(-1), flat1))
    dval = np.clip(dval, cmin, cmax)
    # width of the uniform distribution with the variance of the dose over the sample
    w = np.sqrt(12 * (gx**2 * cov.var_x[cell] + gy**2 * cov.var_y[cell]) + (gz * t) ** 2)
    lo_d = np.minimum(np.maximum(dval - w / 2, cmin), dval)
    hi_d = np.maximum(np.minimum(dval + w / 2, cmax), dval)
    dmid, width, v = (lo_d + hi_d) / 2, hi_d - lo_d, vol / 1000.0
    return _Samples(total, uncovered, dmid, width, v, lo_d, hi_d, empty)


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
    """Scan-line coverage of a group of slabs; rings of one slab combine by parity.

    Sparse: the pieces of scan line at the ends of each inside interval are accumulated
    only into the occupied cells, not into dense (slab, row, column) arrays; the lines that
    cross a pixel whole are counted with difference arrays along each row. The pieces of all
    three kinds are summed in one pass and cubes are products (``x**3`` is a slow ``pow``):
    the values agree with the dense version to rounding (about 1e-9 cc on a liver plan).
    """
    ns, nr, nc = len(slabs), yc.size, xc.size
    rings = [(i, r) for i, sl in enumerate(slabs) for r in sl.rings if len(r) >= 3]
    if not rings:
        empty = np.zeros(0)
        return _Coverage(np.zeros(0, dtype=np.int64), empty, empty, empty, empty, empty)
    lengths = np.array([len(r) for _, r in rings])
    pts0 = np.concatenate([r for _, r in rings])
    ends = np.cumsum(lengths)
    following = np.arange(1, pts0.shape[0] + 1)
    following[ends - 1] = ends - lengths  # each ring closes on its first point
    pts1 = pts0[following]
    slab_of = np.repeat(np.array([i for i, _ in rings]), lengths)
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
