"""The resource budget: how much memory reading a dose and sampling a DVH may take, checked
before anything is allocated. Pure estimates from plain numbers.

Why a budget
------------
Every size rtqa allocates follows from numbers in the submitted files: the dose grid from
Rows x Columns x NumberOfFrames, the DVH sampling lattice from the structure's extent divided
by PixelSpacing, the sub-slabs from the slab thickness divided by the GridFrameOffsetVector
step, the histogram from the highest dose divided by the bin width. A careless export (or a
hostile one) with PixelSpacing 0.25 mm or a frame step of 1e-4 mm asks for tens of gigabytes;
rtqa refuses it up front, naming the file, the attribute and the memory it would need, instead
of swapping for minutes or being killed by the operating system.

The default budget is :data:`DEFAULT_BUDGET_BYTES` (2 GiB) per plan being checked: the dose
grid read and prepared, plus the DVH being computed, stay within it (DVHs are computed one at
a time; each is released before the next). It is raised
with ``rtqa check --max-memory 8G`` (or ``rtqa dvh --max-memory``), or with the environment
variable ``RTQA_MAX_MEMORY`` (which the CLI option sets, so worker processes inherit it).
The estimates are upper bounds of the engine's working arrays (float64, a few per sample),
not of Python's own overhead.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from rtqa.dvh.geometry import SlabStack
from rtqa.dvh.sizes import BUDGET_ENV as BUDGET_ENV
from rtqa.dvh.sizes import DEFAULT_BUDGET_BYTES as DEFAULT_BUDGET_BYTES
from rtqa.dvh.sizes import format_size as format_size
from rtqa.dvh.sizes import parse_size as parse_size
from rtqa.errors import DoseGridError, InputError
from rtqa.model import DoseGrid

# the highest total dose rtqa accepts in a dose grid: ten times any external-beam prescription
# in use (hypofractionated SBRT stays below 100 Gy), so a DoseGridScaling off by a factor of
# 1000 is caught, while hot spots of real plans are far below it
MAX_PLAUSIBLE_DOSE_GY = 1000.0

# bytes per item, counted from the engine's arrays (rtqa/dvh/engine.py): the coverage of the
# pixel lattice holds 5 float64 sums, 3 difference arrays and 5 result arrays per cell
# (13 x 8 bytes, rounded up for temporaries); each sub-slab sample carries about 30 float64
# and index arrays; each scan-line crossing 6; each dose voxel, once prepared, the dose, its
# three gradients and two neighbourhood bounds, plus the stored pixels and a transposed copy
_BYTES_PER_CELL = 128
_BYTES_PER_SAMPLE = 256
_BYTES_PER_CROSSING = 64
_BYTES_PER_VOXEL = 8 * 9
_BYTES_PER_BIN = 8 * 8
# each outline point of the exact extremes (a vertex or a crossing of a grid line, and the piece
# of edge that follows it): about 20 float64 and index arrays while the outline is built; and
# each of its evaluations, at the slab's faces and at every dose plane between them, about 32
_BYTES_PER_OUTLINE_POINT = 8 * 20
_BYTES_PER_OUTLINE_EVALUATION = 8 * 32


def configured_budget_bytes() -> int:
    """The budget in force: ``RTQA_MAX_MEMORY`` when set (as :func:`parse_size` reads it),
    else :data:`DEFAULT_BUDGET_BYTES`.

    Raises
    ------
    InputError
        ``RTQA_MAX_MEMORY`` set to something that is not a size.
    """
    text = os.environ.get(BUDGET_ENV)
    if not text:
        return DEFAULT_BUDGET_BYTES
    try:
        return parse_size(text)
    except ValueError as exc:
        raise InputError(None, f"environment variable {BUDGET_ENV}: {exc}") from None


@dataclass(frozen=True)
class DvhWork:
    """What sampling one structure in one dose grid would allocate.

    ``lattice_cells``: slabs x rows x columns of the pixel lattice around the structure;
    ``samples``: lattice cells x sub-slabs per slab (an upper bound of the occupied ones);
    ``crossings``: scan-line crossings of the contours; ``bins``: cumulative histogram edges.
    ``limited_by`` is the attribute of the dose grid that drives the largest term.
    """

    lattice_cells: int
    samples: int
    crossings: int
    bins: int
    limited_by: str
    outline_points: int = 0  # vertices and grid-line crossings of the contours (Dmin/Dmax)
    outline_evaluations: int = 0  # those points times the z where each is evaluated

    @property
    def bytes(self) -> int:
        return (
            self.lattice_cells * _BYTES_PER_CELL
            + self.samples * _BYTES_PER_SAMPLE
            + self.crossings * _BYTES_PER_CROSSING
            + self.bins * _BYTES_PER_BIN
            + self.outline_points * _BYTES_PER_OUTLINE_POINT
            + self.outline_evaluations * _BYTES_PER_OUTLINE_EVALUATION
        )


def estimate_dvh_work(
    *,
    extent_x_mm: float,
    extent_y_mm: float,
    slab_thicknesses_mm: list[float],
    ring_y_travel_mm: float,
    ring_edges: int,
    dx_mm: float,
    dy_mm: float,
    line_spacing_mm: float,
    max_subslab_mm: float,
    max_dose_gy: float,
    bin_width_gy: float,
    ring_x_travel_mm: float = 0.0,
    outline_evaluations: int = 0,
) -> DvhWork:
    """Estimate the arrays :func:`rtqa.dvh.engine.compute_dvh` would allocate.

    Parameters
    ----------
    extent_x_mm, extent_y_mm
        The structure's in-plane bounding box.
    slab_thicknesses_mm
        Thickness of each slab of the structure.
    ring_y_travel_mm
        Sum over every contour edge of its extent along y (each scan line it spans is a
        crossing), over all slabs.
    ring_edges
        Number of contour edges over all slabs.
    dx_mm, dy_mm
        The dose grid's column and row spacing (PixelSpacing).
    line_spacing_mm
        Scan-line spacing the engine will use.
    max_subslab_mm
        Thickest sub-slab (the grid's frame step, from GridFrameOffsetVector).
    max_dose_gy, bin_width_gy
        Highest dose of the grid and the histogram's bin width.
    ring_x_travel_mm
        Sum over every contour edge of its extent along x: with ``ring_y_travel_mm``, the
        crossings of the dose grid's lines that the exact Dmin/Dmax evaluate (a comb of long
        horizontal teeth costs the scan lines little and the outline much).
    outline_evaluations
        Those crossings and vertices, each times the z where it is evaluated (the faces of its
        slab and the dose planes between them: a thick slab on fine planes multiplies them).

    Examples
    --------
    >>> w = estimate_dvh_work(extent_x_mm=100, extent_y_mm=100, slab_thicknesses_mm=[3.0] * 10,
    ...     ring_y_travel_mm=2000, ring_edges=1000, dx_mm=2.5, dy_mm=2.5, line_spacing_mm=0.25,
    ...     max_subslab_mm=2.5, max_dose_gy=60, bin_width_gy=0.01)
    >>> w.lattice_cells, w.samples
    (17640, 35280)
    """
    rows = _count(extent_y_mm / dy_mm) + 2
    cols = _count(extent_x_mm / dx_mm) + 2
    per_slab = min(rows * cols, _MAX_COUNT)
    cells = min(per_slab * len(slab_thicknesses_mm), _MAX_COUNT)
    subslabs = min(sum(max(1, _count(t / max_subslab_mm - 1e-9, up=True)) for t in slab_thicknesses_mm), _MAX_COUNT)
    samples = min(per_slab * subslabs, _MAX_COUNT)
    crossings = min(_count(ring_y_travel_mm / line_spacing_mm, up=True) + ring_edges, _MAX_COUNT)
    bins = _count(max(max_dose_gy, 0.0) / bin_width_gy, up=True) + 2
    outline = min(
        _count(ring_x_travel_mm / dx_mm, up=True) + _count(ring_y_travel_mm / dy_mm, up=True) + ring_edges, _MAX_COUNT
    )
    evaluations = min(max(outline_evaluations, outline), _MAX_COUNT)
    in_plane = cells * _BYTES_PER_CELL + crossings * _BYTES_PER_CROSSING + outline * _BYTES_PER_OUTLINE_POINT
    along_z = (samples - cells) * _BYTES_PER_SAMPLE + (evaluations - outline) * _BYTES_PER_OUTLINE_EVALUATION
    limited_by = "GridFrameOffsetVector (3004,000C)" if along_z > in_plane else "PixelSpacing (0028,0030)"
    return DvhWork(cells, samples, crossings, bins, limited_by, outline, evaluations)


_MAX_COUNT = 10**15  # beyond any budget; keeps the numbers of a hostile extent printable


def _count(ratio: float, *, up: bool = False) -> int:
    """``floor(ratio)`` (``ceil`` if ``up``), capped at :data:`_MAX_COUNT` (an infinite or NaN
    ratio included)."""
    if not ratio < _MAX_COUNT:  # NaN compares false too
        return _MAX_COUNT
    return max(0, math.ceil(ratio) if up else math.floor(ratio))


def require_dvh_budget(
    work: DvhWork, *, structure: str, path: str | None, budget_bytes: int, held_bytes: int = 0
) -> None:
    """Refuse a DVH whose sampling would exceed what the budget leaves.

    ``held_bytes`` is what the plan already holds while the DVH is computed (the prepared
    dose grid), so that the dose and one DVH together stay within the budget.

    Raises
    ------
    DoseGridError
        Naming the dose file, the attribute that drives the size, the memory the DVH would
        need and how to raise the budget.
    """
    if work.bytes + held_bytes <= budget_bytes:
        return
    held = f" ({format_size(held_bytes)} of it held by the dose grid)" if held_bytes else ""
    outline = work.outline_points * _BYTES_PER_OUTLINE_POINT + work.outline_evaluations * _BYTES_PER_OUTLINE_EVALUATION
    why = (
        f"its contours cross the grid's lines {work.outline_points:,} times and are evaluated "
        f"{work.outline_evaluations:,} times (faces and dose planes): their outlines are far longer, or "
        "their slabs far thicker, than the structure's extent calls for"
        if outline > work.bytes - outline
        else "the grid's spacing is far finer than the structure's extent calls for"
    )
    raise DoseGridError(
        path,
        f"the DVH of {structure!r} would need {format_size(work.bytes)} "
        f"({work.lattice_cells:,} lattice cells, {work.samples:,} samples) on this dose grid, over the "
        f"memory budget of {format_size(budget_bytes)}{held}; {why} "
        f"(raise the budget with --max-memory or {BUDGET_ENV})",
        attribute=work.limited_by,
    )


def estimate_dose_bytes(*, rows: int, columns: int, frames: int) -> int:
    """Memory of a dose grid read and prepared for DVHs (see ``_BYTES_PER_VOXEL``)."""
    return rows * columns * frames * _BYTES_PER_VOXEL


def require_dose_budget(
    *, rows: int, columns: int, frames: int, path: str, budget_bytes: int, held_bytes: int = 0
) -> None:
    """Refuse a dose grid too large to read and prepare within what the budget leaves beside
    ``held_bytes`` (the sum of a plan's doses read before this one): the budget is the plan's.

    Raises
    ------
    DoseGridError
        Naming Rows, Columns and NumberOfFrames and the memory needed.
    """
    need = estimate_dose_bytes(rows=rows, columns=columns, frames=frames)
    if need + held_bytes <= budget_bytes:
        return
    held = f" beside the {format_size(held_bytes)} the plan already holds (its other doses)" if held_bytes else ""
    raise DoseGridError(
        path,
        f"{rows} x {columns} x {frames} voxels would need {format_size(need)} to read and prepare{held}, over the "
        f"memory budget of {format_size(budget_bytes)} (raise it with --max-memory or {BUDGET_ENV})",
        attribute="Rows (0028,0010) x Columns (0028,0011) x NumberOfFrames (0028,0008)",
    )


def require_plausible_dose(max_dose_gy: float, min_dose_gy: float, *, path: str) -> None:
    """Refuse doses no treatment delivers: negative, or above :data:`MAX_PLAUSIBLE_DOSE_GY`.

    The cumulative histogram has one bin per 0.01 Gy up to the highest dose, so an implausible
    maximum (DoseGridScaling off by orders of magnitude) would also allocate millions of bins.

    Raises
    ------
    DoseGridError
        Naming DoseGridScaling and PixelData and the dose found.
    """
    if not (math.isfinite(max_dose_gy) and math.isfinite(min_dose_gy)):
        raise DoseGridError(
            path, "the dose is not a finite number everywhere", attribute="DoseGridScaling (3004,000E) x PixelData"
        )
    if min_dose_gy < 0:
        raise DoseGridError(
            path,
            f"the dose grid holds negative doses (lowest {min_dose_gy:.4g} Gy); a dose is never negative",
            attribute="PixelData (7FE0,0010) x DoseGridScaling (3004,000E)",
        )
    if max_dose_gy > MAX_PLAUSIBLE_DOSE_GY:
        raise DoseGridError(
            path,
            f"the highest dose is {max_dose_gy:.4g} Gy, above the {MAX_PLAUSIBLE_DOSE_GY:g} Gy no plan delivers; "
            "is DoseGridScaling right?",
            attribute="DoseGridScaling (3004,000E)",
        )


def require_sampling_budget(
    structure: SlabStack,
    dose: DoseGrid,
    *,
    line_spacing_mm: float,
    max_subslab_mm: float,
    bin_width_gy: float,
    budget_bytes: int | None = None,
) -> DvhWork:
    """Estimate the DVH work of ``structure`` in ``dose`` and refuse it when it and the
    prepared dose grid together would exceed the budget.

    ``budget_bytes`` defaults to :func:`configured_budget_bytes`. Returns the estimate.

    Raises
    ------
    DoseGridError
        See :func:`require_dvh_budget`.
    """
    # a grid of one row or column is refused by the engine itself; any spacing does here
    dx = float(dose.x_mm[1] - dose.x_mm[0]) if dose.x_mm.size > 1 else 1.0
    dy = float(dose.y_mm[1] - dose.y_mm[0]) if dose.y_mm.size > 1 else 1.0
    travel = 0.0
    travel_x = 0.0
    edges = 0
    evaluations = 0.0
    # every ring of three points or more (the engine skips the others), all at once
    rings = [(n, ring) for n, slab in enumerate(structure.slabs) for ring in slab.rings if len(ring) >= 3]
    if rings:
        lengths = np.array([len(r) for _, r in rings])
        a = np.concatenate([r for _, r in rings])
        ends = np.cumsum(lengths)
        following = np.arange(1, a.shape[0] + 1)
        following[ends - 1] = ends - lengths  # each ring closes on its first point
        with np.errstate(all="ignore"):  # a hostile ring's inf or NaN reaches the estimate, as before
            step = np.abs(a[following] - a)
            along_x = np.add.reduceat(step[:, 0], ends - lengths)
            along_y = np.add.reduceat(step[:, 1], ends - lengths)
            travel, travel_x = float(along_y.sum()), float(along_x.sum())
            edges = int(lengths.sum())
            ring_points = along_x / dx + along_y / dy + lengths
            slab_points = np.bincount(np.array([n for n, _ in rings]), ring_points, minlength=len(structure.slabs))
            # the outline is evaluated at the slab's two faces and at each dose plane between them
            thickness = np.array([slab.thickness_mm for slab in structure.slabs])
            evaluations = float(np.sum(slab_points * (2 + thickness / max_subslab_mm)))
    x0, y0, _, x1, y1, _ = structure.bounds_mm
    work = estimate_dvh_work(
        extent_x_mm=x1 - x0,
        extent_y_mm=y1 - y0,
        slab_thicknesses_mm=[s.thickness_mm for s in structure.slabs],
        ring_y_travel_mm=travel,
        ring_x_travel_mm=travel_x,
        outline_evaluations=_count(evaluations, up=True),
        ring_edges=edges,
        dx_mm=dx,
        dy_mm=dy,
        line_spacing_mm=line_spacing_mm,
        max_subslab_mm=max_subslab_mm,
        max_dose_gy=dose.max_gy,
        bin_width_gy=bin_width_gy,
    )
    require_dvh_budget(
        work,
        structure=structure.name,
        path=dose.info.path if dose.info is not None else None,
        budget_bytes=configured_budget_bytes() if budget_bytes is None else budget_bytes,
        held_bytes=dose.dose_gy.size * _BYTES_PER_VOXEL,
    )
    return work
