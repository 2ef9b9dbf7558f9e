"""Pure dose-grid maths: canonical axes from DICOM geometry, interpolation, resampling.

A DICOM RT Dose stores frames of rows and columns along the directions of
ImageOrientationPatient, frames spaced by GridFrameOffsetVector along their cross product.
rtqa turns every axis-aligned grid (all eight standard patient orientations, and sagittal or
coronal grids) into one canonical layout: axes ``x_mm``, ``y_mm``, ``z_mm`` strictly increasing
and the dose array indexed ``[z, y, x]``. Oblique grids are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rtqa.errors import DoseGridError
from rtqa.model import DoseGrid, FloatArray

_AXIS_NAMES = "xyz"
_ORIENTATION_NAMES = {
    ((1, 0, 0), (0, 1, 0)): "HFS",
    ((-1, 0, 0), (0, -1, 0)): "HFP",
    ((-1, 0, 0), (0, 1, 0)): "FFS",
    ((1, 0, 0), (0, -1, 0)): "FFP",
}


@dataclass(frozen=True)
class CanonicalGrid:
    """How to turn a stored (frame, row, column) array into the canonical [z, y, x] layout."""

    x_mm: FloatArray
    y_mm: FloatArray
    z_mm: FloatArray
    axes: tuple[int, int, int]  # stored axis (0 frame, 1 row, 2 column) for z, y, x
    flips: tuple[bool, bool, bool]  # flip that canonical axis after transposing
    orientation: str

    def apply(self, stored: npt.NDArray[np.floating]) -> FloatArray:
        """Rearrange a stored (frames, rows, columns) array into [z, y, x] order."""
        out = np.transpose(stored, self.axes)
        for axis, flip in enumerate(self.flips):
            if flip:
                out = np.flip(out, axis=axis)
        return np.ascontiguousarray(out, dtype=np.float64)


def compute_canonical_grid(
    *,
    position_mm: tuple[float, float, float],
    orientation: tuple[float, ...],
    pixel_spacing_mm: tuple[float, float],
    frame_offsets_mm: FloatArray,
    rows: int,
    columns: int,
) -> CanonicalGrid:
    """Canonical axes of a dose grid from its DICOM geometry.

    Parameters
    ----------
    position_mm
        ImagePositionPatient: the centre of the first voxel transmitted.
    orientation
        ImageOrientationPatient: row direction cosines then column direction cosines.
    pixel_spacing_mm
        PixelSpacing: (spacing between rows, spacing between columns).
    frame_offsets_mm
        GridFrameOffsetVector, already made relative (first value 0) by the caller.
    rows, columns
        The in-plane size.

    Raises
    ------
    DoseGridError
        An oblique or degenerate orientation, non-positive spacing, or frame offsets that are
        not strictly monotonic.

    Examples
    --------
    >>> g = compute_canonical_grid(position_mm=(0., 0., 10.), orientation=(-1, 0, 0, 0, 1, 0),
    ...     pixel_spacing_mm=(2., 3.), frame_offsets_mm=np.array([0., 5.]), rows=2, columns=2)
    >>> g.orientation, g.x_mm.tolist(), g.z_mm.tolist()
    ('FFS', [-3.0, 0.0], [5.0, 10.0])
    """
    iop = np.asarray(orientation, dtype=np.float64)
    if iop.shape != (6,):
        raise DoseGridError(
            None, f"expected 6 direction cosines, got {iop.size}", attribute="ImageOrientationPatient (0020,0037)"
        )
    rounded = np.round(iop)
    if np.any(np.abs(iop - rounded) > 1e-4) or np.count_nonzero(rounded[:3]) != 1 or np.count_nonzero(rounded[3:]) != 1:
        raise DoseGridError(
            None,
            f"{tuple(float(v) for v in iop)} is oblique; rtqa needs a dose grid aligned with the "
            "patient axes (direction cosines of 0 or ±1)",
            attribute="ImageOrientationPatient (0020,0037)",
        )
    row_dir = rounded[:3]
    col_dir = rounded[3:]
    normal = np.cross(row_dir, col_dir)
    if not np.any(normal):
        raise DoseGridError(
            None, "row and column directions are parallel", attribute="ImageOrientationPatient (0020,0037)"
        )
    d_row, d_col = (float(v) for v in pixel_spacing_mm)
    if d_row <= 0 or d_col <= 0:
        raise DoseGridError(None, f"{pixel_spacing_mm} must be positive", attribute="PixelSpacing (0028,0030)")
    offsets = np.asarray(frame_offsets_mm, dtype=np.float64)
    steps = np.diff(offsets)
    if offsets.size > 1 and not (np.all(steps > 0) or np.all(steps < 0)):
        raise DoseGridError(
            None,
            "frame offsets must be strictly increasing or strictly decreasing",
            attribute="GridFrameOffsetVector (3004,000C)",
        )

    ipp = np.asarray(position_mm, dtype=np.float64)
    # stored axis 2 (columns) moves along row_dir, axis 1 (rows) along col_dir, axis 0 along normal
    directions = {2: row_dir, 1: col_dir, 0: normal}
    coords = {
        2: np.arange(columns) * d_col,
        1: np.arange(rows) * d_row,
        0: offsets,
    }
    axes: list[int] = []
    flips: list[bool] = []
    canon: list[FloatArray] = []
    for patient_axis in (2, 1, 0):  # z, y, x
        stored_axis = next(a for a, d in directions.items() if d[patient_axis] != 0)
        sign = directions[stored_axis][patient_axis]
        values = ipp[patient_axis] + sign * coords[stored_axis]
        flip = bool(values.size > 1 and values[-1] < values[0])
        axes.append(stored_axis)
        flips.append(flip)
        canon.append(values[::-1].copy() if flip else values)
    key = (tuple(int(v) for v in row_dir), tuple(int(v) for v in col_dir))
    if key in _ORIENTATION_NAMES:
        name = _ORIENTATION_NAMES[key]
    elif normal[2] != 0:
        name = f"decubitus axial (row {_axis_label(row_dir)}, column {_axis_label(col_dir)})"
    else:
        name = f"non-axial (row {_axis_label(row_dir)}, column {_axis_label(col_dir)})"
    if normal[2] == 0:  # the frames run along x (canon[2]) or y (canon[1])
        across = int(np.flatnonzero(normal)[0])
        _require_even_frames(canon[2 - across], _AXIS_NAMES[across])
    z, y, x = canon
    return CanonicalGrid(x, y, z, (axes[0], axes[1], axes[2]), (flips[0], flips[1], flips[2]), name)


def _require_even_frames(values: FloatArray, axis: str) -> None:
    """The frames of a sagittal or coronal dose run along x or y, which the DVH engine samples
    as a lattice (rtqa.dvh.engine.prepare_dose): at least two of them, at steps equal to the
    first one within 1e-4 on the patient axis, as the engine requires; refused here, naming the
    attribute, rather than by the engine without it."""
    if values.size < 2:
        raise DoseGridError(
            None,
            f"1 frame: the frames of this dose lie along the patient's {axis} axis, and a single one "
            "is a plane with no extent along it; rtqa needs at least two",
            attribute="NumberOfFrames (0028,0008)",
        )
    steps = np.diff(values)
    if not np.allclose(steps, steps[0], rtol=1e-4):
        raise DoseGridError(
            None,
            f"the frames of this dose lie along the patient's {axis} axis, where rtqa needs them "
            f"equally spaced (within 1e-4 of the first step); the steps range from "
            f"{float(np.min(steps)):g} to {float(np.max(steps)):g} mm",
            attribute="GridFrameOffsetVector (3004,000C)",
        )


def _axis_label(direction: FloatArray) -> str:
    k = int(np.flatnonzero(direction)[0])
    return ("+" if direction[k] > 0 else "-") + _AXIS_NAMES[k]


def relative_frame_offsets(
    offsets_mm: FloatArray, *, position_z_mm: float, orientation: tuple[float, ...]
) -> FloatArray:
    """GridFrameOffsetVector made relative (first value 0).

    Relative vectors start at 0. An absolute vector (first value = the z of
    ImagePositionPatient) is allowed only with orientation (1,0,0,0,1,0); any other non-zero
    start is refused (PS3.3 C.8.8.3.2).
    """
    offsets = np.asarray(offsets_mm, dtype=np.float64)
    if offsets.size == 0 or abs(offsets[0]) < 1e-6:
        return offsets
    identity = np.allclose(np.asarray(orientation, dtype=float), [1, 0, 0, 0, 1, 0], atol=1e-4)
    if identity and abs(offsets[0] - position_z_mm) < 0.01:
        relative: FloatArray = offsets - offsets[0]
        return relative
    if identity:
        why = f"neither 0 (relative) nor the ImagePositionPatient z {position_z_mm:g} (absolute)"
    else:
        shown = ",".join(f"{float(v):g}" for v in orientation)
        why = (
            f"not 0: with orientation ({shown}) the offsets must be relative (start at 0); absolute "
            "offsets are defined only for orientation (1,0,0,0,1,0)"
        )
    raise DoseGridError(None, f"first value {offsets[0]:g} is {why}", attribute="GridFrameOffsetVector (3004,000C)")


def interpolate_trilinear(
    dose: DoseGrid, x_mm: FloatArray, y_mm: FloatArray, z_mm: FloatArray, *, outside: float = np.nan
) -> FloatArray:
    """Trilinear interpolation of a dose grid at points; ``outside`` beyond the grid nodes.

    Points within half a voxel outside the outermost nodes take the value of the nearest face
    (the grid is taken to cover whole voxels). Axes may be non-uniform.
    """
    idx = []
    frac = []
    inside = np.ones(np.shape(x_mm), dtype=bool)
    for axis, p in ((dose.z_mm, z_mm), (dose.y_mm, y_mm), (dose.x_mm, x_mm)):
        i, f, ok = _axis_weights(axis, np.asarray(p, dtype=np.float64))
        idx.append(i)
        frac.append(f)
        inside &= ok
    iz, iy, ix = idx
    fz, fy, fx = frac
    d = dose.dose_gy
    nz, ny, nx = d.shape
    iz1 = np.minimum(iz + 1, nz - 1)
    iy1 = np.minimum(iy + 1, ny - 1)
    ix1 = np.minimum(ix + 1, nx - 1)
    c00 = d[iz, iy, ix] * (1 - fx) + d[iz, iy, ix1] * fx
    c01 = d[iz, iy1, ix] * (1 - fx) + d[iz, iy1, ix1] * fx
    c10 = d[iz1, iy, ix] * (1 - fx) + d[iz1, iy, ix1] * fx
    c11 = d[iz1, iy1, ix] * (1 - fx) + d[iz1, iy1, ix1] * fx
    c0 = c00 * (1 - fy) + c01 * fy
    c1 = c10 * (1 - fy) + c11 * fy
    out = c0 * (1 - fz) + c1 * fz
    result: FloatArray = np.where(inside, out, outside)
    return result


def _axis_weights(axis: FloatArray, p: FloatArray) -> tuple[npt.NDArray[np.intp], FloatArray, npt.NDArray[np.bool_]]:
    n = axis.size
    if n == 1:
        half = 0.5
        ok = np.abs(p - axis[0]) <= half
        return np.zeros(p.shape, dtype=np.intp), np.zeros(p.shape), ok
    lo_half = (axis[1] - axis[0]) / 2
    hi_half = (axis[-1] - axis[-2]) / 2
    ok = (p >= axis[0] - lo_half - 1e-9) & (p <= axis[-1] + hi_half + 1e-9)
    pc = np.clip(p, axis[0], axis[-1])
    i = np.clip(np.searchsorted(axis, pc, side="right") - 1, 0, n - 2)
    f = (pc - axis[i]) / (axis[i + 1] - axis[i])
    return i.astype(np.intp), np.clip(f, 0.0, 1.0), ok


def resample(dose: DoseGrid, *, onto: DoseGrid) -> FloatArray:
    """Trilinearly resample ``dose`` onto the nodes of ``onto``; 0 Gy outside ``dose``."""
    if (
        dose.x_mm.shape == onto.x_mm.shape
        and dose.y_mm.shape == onto.y_mm.shape
        and dose.z_mm.shape == onto.z_mm.shape
        and np.allclose(dose.x_mm, onto.x_mm, atol=1e-3)
        and np.allclose(dose.y_mm, onto.y_mm, atol=1e-3)
        and np.allclose(dose.z_mm, onto.z_mm, atol=1e-3)
    ):
        return dose.dose_gy
    z, y, x = np.meshgrid(onto.z_mm, onto.y_mm, onto.x_mm, indexing="ij")
    return interpolate_trilinear(dose, x, y, z, outside=0.0)


def sum_doses(doses: list[DoseGrid], *, weights: list[float] | None = None) -> DoseGrid:
    """Weighted sum of dose grids on the grid of the first one (others resampled trilinearly)."""
    if not doses:
        raise ValueError("no dose to sum")
    w = weights or [1.0] * len(doses)
    ref = doses[0]
    total = DoseGrid(dose_gy=np.zeros_like(ref.dose_gy), x_mm=ref.x_mm, y_mm=ref.y_mm, z_mm=ref.z_mm, info=ref.info)
    for d, wi in zip(doses, w, strict=True):
        add_dose(total, d, weight=wi)
    return total


@dataclass(frozen=True)
class CommonGrid:
    """The nodes a course's doses are summed on, and what it took to get there."""

    x_mm: FloatArray
    y_mm: FloatArray
    z_mm: FloatArray
    resampled: tuple[int, ...]  # indices of the input grids that had to be resampled
    statement: str  # for the report: the common grid and how each dose reached it
    reference: int = 0  # the input grid whose nodes the common grid keeps


def same_nodes(a: DoseGrid, b: DoseGrid, *, atol_mm: float = 1e-3) -> bool:
    """True when two grids have the same nodes (to ``atol_mm``): summing needs no resampling."""
    return all(
        p.shape == q.shape and bool(np.allclose(p, q, atol=atol_mm))
        for p, q in ((a.x_mm, b.x_mm), (a.y_mm, b.y_mm), (a.z_mm, b.z_mm))
    )


def compute_common_grid(doses: list[DoseGrid], *, names: list[str] | None = None) -> CommonGrid:
    """The grid on which to sum several dose grids (a course's plans).

    Grids with identical nodes are summed as they are. Otherwise the common grid takes, per
    axis, the finest spacing of the inputs, anchored on the nodes of the finest grid (the one
    of smallest voxel volume, whose own nodes are kept) and extended by whole steps until it
    covers the union of every grid's extent (each grid covering whole voxels, half a step
    beyond its outer nodes). No dose is then lost off the edge of the first grid, and a boost
    on a finer grid keeps its resolution. Each other grid is resampled trilinearly onto it
    (:func:`resample`; 0 Gy outside a grid's own extent).

    Examples
    --------
    >>> a = DoseGrid(np.zeros((1, 1, 3)), np.array([0., 2., 4.]), np.array([0.]), np.array([0.]))
    >>> b = DoseGrid(np.zeros((1, 1, 2)), np.array([5., 6.]), np.array([0.]), np.array([0.]))
    >>> compute_common_grid([a, b]).x_mm.tolist()
    [-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    """
    if not doses:
        raise ValueError("no dose grid")
    labels = names or [f"dose {i + 1}" for i in range(len(doses))]
    if all(same_nodes(doses[0], d) for d in doses[1:]):
        return CommonGrid(doses[0].x_mm, doses[0].y_mm, doses[0].z_mm, (), "the doses share one grid: no resampling")
    ref = min(range(len(doses)), key=lambda i: _voxel_volume(doses[i]))
    axes = []
    for name in _AXES:
        own: FloatArray = getattr(doses[ref], name)
        step = min(_axis_step(getattr(d, name)) for d in doses)
        lo = min(float(getattr(d, name)[0]) - _axis_step(getattr(d, name)) / 2 for d in doses)
        hi = max(float(getattr(d, name)[-1]) + _axis_step(getattr(d, name)) / 2 for d in doses)
        below = max(0, int(np.floor((own[0] - lo) / step + 1e-6)))
        above = max(0, int(np.floor((hi - own[-1]) / step + 1e-6)))
        own_step = _axis_step(own)
        if own.size > 1 and abs(own_step - step) > 1e-6:  # the finest grid is finer along another axis
            inner = np.arange(own[0], own[-1] + step / 2, step)
        else:
            inner = own
        before = inner[0] - step * np.arange(below, 0, -1)
        after = inner[-1] + step * np.arange(1, above + 1)
        axes.append(np.concatenate([before, inner, after]))
    x, y, z = axes
    # a grid whose nodes are all nodes of the common grid is placed on it, values unchanged
    resampled = tuple(
        i
        for i, d in enumerate(doses)
        if not all(_nodes_within(getattr(d, n), a) for n, a in zip(_AXES, axes, strict=True))
    )
    spacing = " x ".join(f"{_axis_step(a):g}" for a in (x, y, z))
    extent = ", ".join(f"{n} {a[0]:.1f}..{a[-1]:.1f}" for n, a in zip("xyz", (x, y, z), strict=True))
    moved = "; ".join(f"{labels[i]} ({' x '.join(f'{s:g}' for s in _spacing(doses[i]))} mm)" for i in resampled)
    statement = (
        f"summed on a common grid of {spacing} mm ({extent} mm, {x.size} x {y.size} x {z.size} voxels), "
        f"the finest of the doses over the extent of all; resampled trilinearly onto it: {moved}"
    )
    return CommonGrid(x, y, z, resampled, statement, ref)


_AXES = ("x_mm", "y_mm", "z_mm")


def _nodes_within(nodes: FloatArray, axis: FloatArray, *, atol_mm: float = 1e-3) -> bool:
    """True when every node is a node of ``axis`` (to ``atol_mm``)."""
    k = np.clip(np.searchsorted(axis, nodes), 1, max(axis.size - 1, 1))
    nearest = np.minimum(np.abs(axis[k - 1] - nodes), np.abs(axis[np.minimum(k, axis.size - 1)] - nodes))
    return bool(np.all(nearest <= atol_mm))


def _axis_step(axis: FloatArray) -> float:
    return float(np.median(np.diff(axis))) if axis.size > 1 else 1.0


def _spacing(dose: DoseGrid) -> tuple[float, float, float]:
    return (_axis_step(dose.x_mm), _axis_step(dose.y_mm), _axis_step(dose.z_mm))


def _voxel_volume(dose: DoseGrid) -> float:
    sx, sy, sz = _spacing(dose)
    return sx * sy * sz


def sum_on_grid(doses: list[DoseGrid], grid: CommonGrid, *, weights: list[float] | None = None) -> DoseGrid:
    """The weighted sum of dose grids on ``grid`` (each resampled onto it when its nodes differ)."""
    w = weights or [1.0] * len(doses)
    target = DoseGrid(np.zeros((grid.z_mm.size, grid.y_mm.size, grid.x_mm.size)), grid.x_mm, grid.y_mm, grid.z_mm)
    total = target.dose_gy
    for d, wi in zip(doses, w, strict=True):
        total += wi * resample(d, onto=target)
    # the DoseInfo (frame, dose type, heterogeneity) of the grid whose nodes the sum keeps
    return DoseGrid(dose_gy=total, x_mm=grid.x_mm, y_mm=grid.y_mm, z_mm=grid.z_mm, info=doses[grid.reference].info)


# nodes of the target grid resampled at once: the trilinear weights take about 20 float64
# arrays of this many items, so a resampling never needs more than ~100 MB beside the grids
RESAMPLE_CHUNK_NODES = 1 << 19


def add_dose(total: DoseGrid, dose: DoseGrid, *, weight: float = 1.0) -> None:
    """Add ``weight`` x ``dose``, resampled onto the grid of ``total``, into ``total`` in place.

    A sum of many doses (a plan's BEAM doses) is formed by reading one dose at a time and adding
    it here, so that the plan holds the sum and one dose, never every dose. The additions are
    the ones :func:`sum_doses` always made, in the same order and in float64: the sum is the same
    to the last bit. A dose on another grid is resampled a few frames of ``total`` at a time
    (each node's value depends on that node alone, so the chunks change no bit either).
    """
    onto = total.dose_gy
    if (
        dose.x_mm.shape == total.x_mm.shape
        and dose.y_mm.shape == total.y_mm.shape
        and dose.z_mm.shape == total.z_mm.shape
        and np.allclose(dose.x_mm, total.x_mm, atol=1e-3)
        and np.allclose(dose.y_mm, total.y_mm, atol=1e-3)
        and np.allclose(dose.z_mm, total.z_mm, atol=1e-3)
    ):
        onto += weight * dose.dose_gy
        return
    per_frame = max(1, total.y_mm.size * total.x_mm.size)
    step = max(1, RESAMPLE_CHUNK_NODES // per_frame)
    for k in range(0, total.z_mm.size, step):
        z, y, x = np.meshgrid(total.z_mm[k : k + step], total.y_mm, total.x_mm, indexing="ij")
        onto[k : k + step] += weight * interpolate_trilinear(dose, x, y, z, outside=0.0)
