"""The DVH engine: partial-volume sampling of a slab stack in a dose grid. Pure numpy.

How a structure is sampled
--------------------------
In-plane, the sampling cells are the dose grid's own pixels (cell centres on the dose nodes,
so mask and dose cannot be shifted by half a voxel). On each slab, scan lines spaced at most
``line_spacing_mm`` apart cross the contours; contour crossings pair up by parity into
inside intervals, whose exact lengths and first moments are accumulated per pixel. This gives
each pixel its occupied area and the centroid of the occupied part: exact along x, sampled
finely along y, with no Python loop over pixels or points.

Along z, each slab is cut into sub-slabs no thicker than half the dose grid's z spacing, so a
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
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.ndimage import maximum_filter, minimum_filter

from rtqa.errors import GeometryError
from rtqa.geometry import EndCap, SlabStack
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
        j = int(np.flatnonzero(v >= volume_cc)[-1])
        if j + 1 >= v.size:
            return float(self.dose_edges_gy[j])
        drop = v[j] - v[j + 1]
        frac = 0.0 if drop <= 0 else (v[j] - volume_cc) / drop
        return float(self.dose_edges_gy[j] + frac * (self.dose_edges_gy[j + 1] - self.dose_edges_gy[j]))


def compute_dvh(
    structure: SlabStack,
    dose: DoseGrid,
    *,
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
    bin_width_gy
        Width of the dose bins of the cumulative curve (0.01 Gy or finer).
    line_spacing_mm
        Distance between scan lines; by default a tenth of the pixel, and finer for
        small structures (at least 40 lines across).
    max_subslab_mm
        Thickest sub-slab along z; by default half the dose grid's z spacing.
    """
    if bin_width_gy <= 0 or bin_width_gy > 0.01:
        raise ValueError("bin_width_gy must be in (0, 0.01]")
    x, y, z = dose.x_mm, dose.y_mm, dose.z_mm
    if x.size < 2 or y.size < 2:
        raise GeometryError("dose grid needs at least two columns and two rows")
    dx, dy = float(x[1] - x[0]), float(y[1] - y[0])
    if not (np.allclose(np.diff(x), dx, rtol=1e-4) and np.allclose(np.diff(y), dy, rtol=1e-4)):
        raise GeometryError("dose grid spacing must be uniform in x and y")
    x0, y0, _, x1, y1, _ = structure.bounds_mm
    if line_spacing_mm is None:
        line_spacing_mm = min(dy / 10, max(0.02, (y1 - y0) / 40))
    lines_per_row = max(1, math.ceil(dy / line_spacing_mm))
    if max_subslab_mm is None:
        dz = float(np.min(np.diff(z))) if z.size > 1 else 2 * dx
        max_subslab_mm = dz / 2

    # the pixel lattice around the structure, extended beyond the grid where needed
    j0 = math.floor((x0 - x[0]) / dx + 0.5)
    j1 = math.floor((x1 - x[0]) / dx + 0.5)
    i0 = math.floor((y0 - y[0]) / dy + 0.5)
    i1 = math.floor((y1 - y[0]) / dy + 0.5)
    cols = np.arange(j0, j1 + 1)
    rows = np.arange(i0, i1 + 1)
    xc = x[0] + cols * dx
    yc = y[0] + rows * dy
    in_x = (cols >= 0) & (cols < x.size)
    in_y = (rows >= 0) & (rows < y.size)
    jc = np.clip(cols, 0, x.size - 1)
    ic = np.clip(rows, 0, y.size - 1)
    z_lo_cover = z[0] - (z[1] - z[0]) / 2 if z.size > 1 else z[0] - dx
    z_hi_cover = z[-1] + (z[-1] - z[-2]) / 2 if z.size > 1 else z[-1] + dx

    doses: list[FloatArray] = []
    widths: list[FloatArray] = []
    volumes: list[FloatArray] = []
    uncovered = 0.0
    total = 0.0
    for slab in structure.slabs:
        area, cx, cy, vx, vy = _pixel_coverage(slab.rings, xc, yc, dx, dy, lines_per_row)
        occupied = area > 0
        if not occupied.any():
            continue
        r_idx, c_idx = np.nonzero(occupied)
        a = area[r_idx, c_idx]
        var_x = vx[r_idx, c_idx]
        var_y = vy[r_idx, c_idx]
        offx = cx[r_idx, c_idx] - xc[c_idx]
        offy = cy[r_idx, c_idx] - yc[r_idx]
        inplane_ok = in_x[c_idx] & in_y[r_idx]
        n_sub = max(1, math.ceil(slab.thickness_mm / max_subslab_mm - 1e-9))
        t = slab.thickness_mm / n_sub
        for m in range(n_sub):
            zm = slab.z_lo_mm + (m + 0.5) * t
            vol = a * t
            total += float(vol.sum())
            if not (z_lo_cover <= zm <= z_hi_cover):
                uncovered += float(vol.sum())
                continue
            plane, gz, lower, upper = _plane_at(dose, zm)
            sub = plane[np.ix_(ic, jc)]
            # the trilinear dose within a cell never leaves the range of its neighbouring nodes
            cell_max = maximum_filter(upper, size=3, mode="nearest")[np.ix_(ic, jc)]
            cell_min = minimum_filter(lower, size=3, mode="nearest")[np.ix_(ic, jc)]
            gy_, gx_ = (
                np.gradient(sub, dy, dx) if sub.shape[0] > 1 and sub.shape[1] > 1 else _gradient_fallback(sub, dy, dx)
            )
            gzs = gz[np.ix_(ic, jc)]
            d = sub[r_idx, c_idx] + gx_[r_idx, c_idx] * offx + gy_[r_idx, c_idx] * offy
            # width of the uniform distribution with the variance of the dose over the sample
            w = np.sqrt(
                12 * (gx_[r_idx, c_idx] ** 2 * var_x + gy_[r_idx, c_idx] ** 2 * var_y) + (gzs[r_idx, c_idx] * t) ** 2
            )
            d = np.clip(d, cell_min[r_idx, c_idx], cell_max[r_idx, c_idx])
            lo_d = np.maximum(d - w / 2, cell_min[r_idx, c_idx])
            hi_d = np.minimum(d + w / 2, cell_max[r_idx, c_idx])
            lo_d = np.minimum(lo_d, d)
            hi_d = np.maximum(hi_d, d)
            uncovered += float(vol[~inplane_ok].sum())
            doses.append(((lo_d + hi_d) / 2)[inplane_ok])
            widths.append((hi_d - lo_d)[inplane_ok])
            volumes.append(vol[inplane_ok])

    warnings: list[str] = []
    volume_cc = total / 1000.0
    if volume_cc < SMALL_STRUCTURE_CC:
        warnings.append(
            f"small structure ({volume_cc:.3f} cc < {SMALL_STRUCTURE_CC} cc): partial-volume effects dominate"
        )
    if uncovered > 0:
        warnings.append(f"{uncovered / 1000:.2f} cc of {structure.name} lies outside the dose grid")
    if not doses or sum(v.size for v in doses) == 0:
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
    d = np.concatenate(doses)
    w = np.concatenate(widths)
    v = np.concatenate(volumes) / 1000.0
    edges, v_ge = cumulative_histogram(d, w, v, bin_width_gy=bin_width_gy)
    mean = float(np.sum(d * v) / np.sum(v))
    return DVH(
        name=structure.name,
        dose_edges_gy=edges,
        volume_ge_cc=v_ge,
        volume_cc=volume_cc,
        uncovered_cc=uncovered / 1000.0,
        mean_gy=mean,
        min_gy=float(max(0.0, np.min(d - w / 2))),
        max_gy=float(np.max(d + w / 2)),
        end_cap=structure.end_cap,
        bin_width_gy=bin_width_gy,
        warnings=tuple(warnings),
    )


def _gradient_fallback(a: FloatArray, dy: float, dx: float) -> tuple[FloatArray, FloatArray]:
    gy = np.gradient(a, dy, axis=0) if a.shape[0] > 1 else np.zeros_like(a)
    gx = np.gradient(a, dx, axis=1) if a.shape[1] > 1 else np.zeros_like(a)
    return gy, gx


def _plane_at(dose: DoseGrid, z_mm: float) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """The dose plane at ``z_mm`` (linear between dose planes, clamped), dD/dz there, and the
    node-wise minimum and maximum of the dose planes around it."""
    z = dose.z_mm
    if z.size == 1:
        return dose.dose_gy[0], np.zeros_like(dose.dose_gy[0]), dose.dose_gy[0], dose.dose_gy[0]
    k = int(np.clip(np.searchsorted(z, z_mm, side="right") - 1, 0, z.size - 2))
    span = z[k + 1] - z[k]
    f = float(np.clip((z_mm - z[k]) / span, 0.0, 1.0))
    lower, upper = dose.dose_gy[k], dose.dose_gy[k + 1]
    gz = (upper - lower) / span
    if z_mm < z[0] or z_mm > z[-1]:
        gz = np.zeros_like(lower)  # beyond the outermost plane the dose is held constant
    near = dose.dose_gy[max(k - 1, 0) : k + 3]  # a sub-slab may reach past its bracketing planes
    return lower + f * (upper - lower), gz, near.min(axis=0), near.max(axis=0)


def _pixel_coverage(
    rings: tuple[FloatArray, ...], xc: FloatArray, yc: FloatArray, dx: float, dy: float, k: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, FloatArray]:
    """Occupied area, its centroid and its variance along x and y, per pixel (rows ``yc``,
    columns ``xc``), with contours combined by parity."""
    nr, nc = yc.size, xc.size
    area = np.zeros((nr, nc))
    if not rings:
        return area, area.copy(), area.copy(), area.copy(), area.copy()
    pts0 = np.concatenate(rings)
    pts1 = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    xa, ya, xb, yb = pts0[:, 0], pts0[:, 1], pts1[:, 0], pts1[:, 1]
    h = dy / k
    ybase = yc[0] - dy / 2
    ylo, yhi = np.minimum(ya, yb), np.maximum(ya, yb)
    # line l sits at ybase + (l + 0.5) h; an edge crosses the lines with ylo <= y < yhi
    first = np.ceil((ylo - ybase) / h - 0.5).astype(np.int64)
    last = np.ceil((yhi - ybase) / h - 0.5).astype(np.int64) - 1
    first = np.maximum(first, 0)
    last = np.minimum(last, nr * k - 1)
    count = np.maximum(last - first + 1, 0)
    if count.sum() == 0:
        return area, area.copy(), area.copy(), area.copy(), area.copy()
    edge = np.repeat(np.arange(xa.size), count)
    starts = np.repeat(np.cumsum(count) - count, count)
    line = first[edge] + (np.arange(edge.size) - starts)
    yl = ybase + (line + 0.5) * h
    e_dy = yb[edge] - ya[edge]
    xs = xa[edge] + (yl - ya[edge]) * (xb[edge] - xa[edge]) / e_dy
    order = np.lexsort((xs, line))
    xs, line = xs[order], line[order]
    if xs.size % 2:
        raise GeometryError("contour crossings do not pair up: a ring is not closed")
    a, b, lines = xs[0::2], xs[1::2], line[0::2]
    if np.any(line[1::2] != lines):
        raise GeometryError("contour crossings do not pair up on a scan line")
    keep = b > a
    a, b, lines = a[keep], b[keep], lines[keep]
    row = lines // k
    ylin = ybase + (lines + 0.5) * h
    xleft = xc[0] - dx / 2
    fa = (a - xleft) / dx
    fb = (b - xleft) / dx
    ia = np.clip(np.floor(fa).astype(np.int64), 0, nc - 1)
    ib = np.clip(np.floor(fb).astype(np.int64), 0, nc - 1)
    same = ia == ib
    size = nr * nc
    sums = np.zeros((5, size))  # length, x, x^2, y, y^2 moments per pixel

    def add(idx: npt.NDArray[np.int64], lo: FloatArray, hi: FloatArray, yv: FloatArray) -> None:
        ln = hi - lo
        for n, w in enumerate((ln, (hi**2 - lo**2) / 2, (hi**3 - lo**3) / 3, ln * yv, ln * yv**2)):
            sums[n] += np.bincount(idx, w, minlength=size)

    # intervals inside one pixel
    s = same
    add(row[s] * nc + ia[s], a[s], b[s], ylin[s])
    # partial first and last pixels of longer intervals
    s = ~same
    add(row[s] * nc + ia[s], a[s], xleft + (ia[s] + 1) * dx, ylin[s])
    add(row[s] * nc + ib[s], xleft + ib[s] * dx, b[s], ylin[s])
    # whole pixels in between, by difference arrays along each row
    full = np.zeros((3, nr, nc + 1))
    for n, w in enumerate((np.ones_like(ylin[s]), ylin[s], ylin[s] ** 2)):
        np.add.at(full[n], (row[s], ia[s] + 1), w)
        np.add.at(full[n], (row[s], ib[s]), -w)
    n_full, y_full, yy_full = (np.cumsum(f, axis=1)[:, :nc] for f in full)
    length = sums[0].reshape(nr, nc) + n_full * dx
    mom_x = sums[1].reshape(nr, nc) + n_full * dx * xc[None, :]
    mom_xx = sums[2].reshape(nr, nc) + n_full * dx * (xc[None, :] ** 2 + dx * dx / 12)
    mom_y = sums[3].reshape(nr, nc) + y_full * dx
    mom_yy = sums[4].reshape(nr, nc) + yy_full * dx
    area = length * h
    with np.errstate(invalid="ignore", divide="ignore"):
        cx = np.where(length > 0, mom_x / length, xc[None, :])
        cy = np.where(length > 0, mom_y / length, yc[:, None])
        var_x = np.where(length > 0, np.maximum(mom_xx / length - cx**2, 0.0), 0.0)
        var_y = np.where(length > 0, np.maximum(mom_yy / length - cy**2, 0.0) + h * h / 12, 0.0)
    area[area < 1e-9] = 0.0
    return area, cx, cy, var_x, var_y


def cumulative_histogram(
    dose_gy: FloatArray, width_gy: FloatArray, volume_cc: FloatArray, *, bin_width_gy: float
) -> tuple[FloatArray, FloatArray]:
    """Cumulative DVH at bin edges from samples spread uniformly over ``dose ± width/2``.

    Returns ``(edges, volume_ge)``, exact (for this sample model) at every edge.
    """
    lo: FloatArray = np.maximum(dose_gy - width_gy / 2, 0.0)
    hi: FloatArray = np.maximum(dose_gy + width_gy / 2, 0.0)
    n_edges = math.ceil(float(hi.max()) / bin_width_gy) + 2
    edges: FloatArray = np.arange(n_edges, dtype=np.float64) * bin_width_gy
    total = float(volume_cc.sum())
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
    v_ge = np.clip(total - below, 0.0, total)
    v_ge = np.minimum.accumulate(v_ge)  # monotone despite rounding
    return edges, v_ge


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
