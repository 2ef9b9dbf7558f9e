"""The data of the report's image views, and the hot-spot location of each organ finding. Pure.

For each target (its centre) and each organ with a finding worse than per protocol (its hottest
point), an axial, a coronal and a sagittal slice: dose (and CT when the submission has one),
the contours of the structures cut by the plane, and isodose levels at 95, 100 and 107 % of the
prescription and at the organ's limit. The grid is canonical (``[z, y, x]``, increasing patient
axes: +x patient left, +y posterior, +z head), so the views are the same whatever the
orientation the files were written in.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import numpy as np
import shapely

from rtqa.case import LoadedCase
from rtqa.dvh.geometry import SlabStack, combine, evaluate_expression, roi_stack
from rtqa.dvh.grid import interpolate_trilinear
from rtqa.errors import RtqaError
from rtqa.evaluation.identity import Identity, identify_structures
from rtqa.model import CtVolume, DoseGrid, FloatArray, StructureSet
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import Protocol
from rtqa.protocol.names import NameMap
from rtqa.report.model import Finding, PlanReport
from rtqa.report.palette import assign_colours
from rtqa.report.views_model import BoolArray, ContourTrace, SliceView

PIXEL_MM = 2.0  # view pixels: fine enough to show a 3 mm dose grid and 5 mm contour spacing
HOT_VOLUME_CC = 0.03
SAME_CENTRE_MM = 15.0  # a target whose centre is this close to another's shares its views
PLANES = ("axial", "coronal", "sagittal")
_WORSE = (Grade.VARIATION_ACCEPTABLE, Grade.DEVIATION_UNACCEPTABLE)


def compute_plan_views(
    report: PlanReport,
    case: LoadedCase,
    protocol: Protocol,
    *,
    ct: CtVolume | None = None,
    images: bool = True,
    names: NameMap | None = None,
) -> PlanReport:
    """The report with its image views and the hot-spot location of every organ finding worse
    than per protocol (``Finding.location_mm``); with ``images=False`` the locations alone (the
    cheap part, for JSON and CSV). A case without dose or contours is returned as is.
    """
    dose, ss = case.dose, case.structure_set
    if dose is None or ss is None or dose.dose_gy.size == 0:
        return report
    if not images and not any(f.grade in _WORSE for f in report.findings):
        return report
    matching = identify_structures(ss.rois, case.plans, protocol, names=names, institution=report.institution)
    stacks = protocol_stacks(ss, protocol, matching)
    planes = ss.plane_positions_mm
    target_stacks: dict[str, SlabStack] = {}
    for name, spec in protocol.structures.items():
        if spec.role != "target" or name in matching.ambiguous:
            continue
        for m in matching.matches.get(name, ()):
            try:
                target_stacks[m.roi] = roi_stack(ss.rois[m.index], planes, end_cap=protocol.end_cap)
            except RtqaError:
                continue
    organ_stacks = {
        name: stacks[name] for name, spec in protocol.structures.items() if spec.role != "target" and name in stacks
    }
    rx_gy = _prescription_gy(report)

    subjects: list[tuple[str, str, tuple[float, float, float], list[tuple[str, float]]]] = []
    centres: list[tuple[str, tuple[float, float, float]]] = []
    for roi_name, stack in target_stacks.items():
        centre = stack_centre_mm(stack)
        near = next((n for n, c in centres if math.dist(c, centre) < SAME_CENTRE_MM), None)
        if near is not None:
            continue  # a GTV inside its PTV: the PTV's views show it
        centres.append((roi_name, centre))
        subjects.append((roi_name, "centre of the target", centre, []))

    located: dict[str, tuple[float, float, float]] = {}
    for f in report.findings:
        if f.grade not in _WORSE or f.structure is None or f.structure in located:
            continue
        structure_spec = protocol.structures.get(f.structure)
        if (structure_spec is not None and structure_spec.role == "target") or f.structure not in stacks:
            continue
        point = hottest_point_mm(stacks[f.structure], dose)
        if point is None:
            continue
        located[f.structure] = point
        worse = [g for g in report.findings if g.structure == f.structure and g.grade in _WORSE]
        levels = [lv for g in worse if (lv := limit_isodose(g)) is not None]
        why = ", ".join(f"{g.rule} {g.grade.value.replace('_', ' ')}" for g in worse)
        subjects.append((f.structure, f"hottest point ({why})", point, levels))

    findings = tuple(
        dataclasses.replace(f, location_mm=located[f.structure]) if f.structure in located and f.grade in _WORSE else f
        for f in report.findings
    )
    if not images:
        return dataclasses.replace(report, findings=findings)
    drawn = {**target_stacks, **{n: s for n, s in organ_stacks.items() if n not in protocol.derived}}
    for name, *_ in subjects:
        if name not in drawn and name in stacks:
            drawn[name] = stacks[name]
    colours = assign_colours(list(drawn))
    views: list[SliceView] = []
    for name, reason, point, extra in subjects:
        levels = [(f"{pct} % ({rx_gy * pct / 100:.1f} Gy)", rx_gy * pct / 100) for pct in (95, 100, 107) if rx_gy]
        levels.extend((label, gy) for label, gy in extra if gy > 0)
        for plane in PLANES:
            views.append(
                compute_slice_view(
                    dose,
                    point,
                    plane,
                    subject=name,
                    reason=reason,
                    structures={n: (s, colours[n][0]) for n, s in drawn.items()},
                    isodoses=tuple(levels),
                    ct=ct,
                )
            )
    return dataclasses.replace(report, findings=findings, views=tuple(views))


def protocol_stacks(
    structure_set: StructureSet, protocol: Protocol, identity: Identity | None = None
) -> dict[str, SlabStack]:
    """The slab stack of every protocol structure (its matched ROIs as their union) and derived
    structure that can be formed, by the rules of :func:`rtqa.evaluation.casedvh.compute_protocol_dvhs`
    (kept apart so that evaluation code stays untouched; a structure that cannot be formed is
    simply not drawn)."""
    planes = structure_set.plane_positions_mm
    matching = identity or identify_structures(structure_set.rois, (), protocol)
    rois = structure_set.rois
    stacks: dict[str, SlabStack] = {}
    for name in protocol.structures:
        if name in matching.ambiguous:
            continue
        parts = []
        for m in matching.matches.get(name, ()):
            try:
                parts.append(roi_stack(rois[m.index], planes, end_cap=protocol.end_cap))
            except RtqaError:
                continue
        if not parts:
            continue
        stack = parts[0]
        for part in parts[1:]:
            stack = combine("|", stack, part)
        stacks[name] = SlabStack(name, stack.slabs, stack.end_cap)
    for name, spec in protocol.derived.items():
        if spec.prefer_roi and name in stacks:
            continue
        try:
            stacks[name] = evaluate_expression(spec.expression, stacks, name=name)
        except RtqaError:
            site = matching.matches.get(name, ())
            if len(site) == 1:  # the site's own composite ROI stands in (as the evaluation uses it)
                try:
                    stacks[name] = roi_stack(rois[site[0].index], planes, end_cap=protocol.end_cap)
                except RtqaError:
                    continue
    return stacks


def _prescription_gy(report: PlanReport) -> float | None:
    """The highest prescription of the plan (a boost's isodoses are the ones a reviewer wants)."""
    rx = report.prescription or {}
    values = [t.get("total_gy") for t in rx.get("targets", [])] + [rx.get("total_gy")]
    numbers = [float(v) for v in values if isinstance(v, int | float) and v > 0]
    return max(numbers) if numbers else None


def limit_isodose(f: Finding) -> tuple[str, float] | None:
    """The dose a finding's per-protocol limit sits at, as an isodose level (label, Gy).

    Dose metrics (``D0.03cc[Gy]``, ``Mean[Gy]``, ``D2%[%]`` of a reference) give their limit;
    volume metrics (``V20Gy[%]``) give their dose threshold; anything else gives none.
    """
    lim = f.per_protocol
    if lim is None or lim.value is None:
        return None
    if f.metric.startswith(("D", "Mean", "Max")) and not f.metric.startswith("DC"):
        if f.unit == "Gy":
            return (f"{f.rule} limit {lim.value:g} Gy", lim.value)
        if f.unit == "%" and f.reference_gy:
            gy = lim.value / 100 * f.reference_gy
            return (f"{f.rule} limit {lim.value:g} % ({gy:.1f} Gy)", gy)
        return None
    m = re.match(r"^V(\d+(?:\.\d+)?)(Gy|%)\[", f.metric)
    if m:
        threshold = float(m.group(1))
        if m.group(2) == "%":
            if not f.reference_gy:
                return None
            threshold = threshold / 100 * f.reference_gy
        return (f"{f.rule} threshold {threshold:g} Gy", threshold)
    return None


def stack_centre_mm(stack: SlabStack) -> tuple[float, float, float]:
    """The centre of volume of a structure (its slabs' areas times thicknesses)."""
    weights, points = [], []
    for slab in stack.slabs:
        region = slab.region()
        if region.is_empty:
            continue
        w = region.area * slab.thickness_mm
        c = region.centroid
        weights.append(w)
        points.append((c.x, c.y, (slab.z_lo_mm + slab.z_hi_mm) / 2))
    if not weights:
        lo_x, lo_y, lo_z, hi_x, hi_y, hi_z = stack.bounds_mm
        return ((lo_x + hi_x) / 2, (lo_y + hi_y) / 2, (lo_z + hi_z) / 2)
    centre = np.average(np.asarray(points), axis=0, weights=np.asarray(weights))
    return (float(centre[0]), float(centre[1]), float(centre[2]))


def structure_mask(stack: SlabStack, x_mm: FloatArray, y_mm: FloatArray, z_mm: FloatArray) -> BoolArray:
    """Which points (any shape of arrays) lie inside the structure: in the slab that holds their
    z, inside its region."""
    x, y, z = np.broadcast_arrays(np.asarray(x_mm), np.asarray(y_mm), np.asarray(z_mm))
    out = np.zeros(x.shape, dtype=bool)
    if not stack.slabs:
        return out
    lo = np.array([s.z_lo_mm for s in stack.slabs])
    hi = np.array([s.z_hi_mm for s in stack.slabs])
    idx = np.searchsorted(lo, z, side="right") - 1
    ok = (idx >= 0) & (z < hi[np.clip(idx, 0, len(hi) - 1)])
    regions = _prepared_regions(stack)
    for i in np.unique(idx[ok]):
        region = regions[int(i)]
        if region is None:
            continue
        sel = ok & (idx == i)
        out[sel] = shapely.contains_xy(region, x[sel], y[sel])
    return out


@functools.lru_cache(maxsize=128)
def _prepared_regions(stack: SlabStack) -> tuple[Any, ...]:
    """The region of every slab, made once and prepared for fast point tests (the views test
    the same slabs many times)."""
    out: list[Any] = []
    for slab in stack.slabs:
        region = slab.region()
        if region.is_empty:
            out.append(None)
            continue
        shapely.prepare(region)
        out.append(region)
    return tuple(out)


def hottest_point_mm(stack: SlabStack, dose: DoseGrid) -> tuple[float, float, float] | None:
    """The centre of the organ's hottest 0.03 cc: the dose-weighted centre of its hottest grid
    voxels (voxel centres inside the organ) adding up to 0.03 cc, at least one voxel.

    When those voxels do not touch one another (two hot spots of nearly equal dose), the single
    hottest voxel is returned, so the point never falls between two spots.
    """
    lo_x, lo_y, lo_z, hi_x, hi_y, hi_z = stack.bounds_mm
    ix = np.flatnonzero((dose.x_mm >= lo_x) & (dose.x_mm <= hi_x))
    iy = np.flatnonzero((dose.y_mm >= lo_y) & (dose.y_mm <= hi_y))
    iz = np.flatnonzero((dose.z_mm >= lo_z) & (dose.z_mm <= hi_z))
    if not (ix.size and iy.size and iz.size):
        return None
    zz, yy, xx = np.meshgrid(dose.z_mm[iz], dose.y_mm[iy], dose.x_mm[ix], indexing="ij")
    mask = structure_mask(stack, xx, yy, zz)
    if not mask.any():
        return None
    sub = dose.dose_gy[np.ix_(iz, iy, ix)]
    values = sub[mask]
    dx, dy, dz = dose.info.spacing_mm if dose.info is not None else _spacing(dose)
    voxel_cc = max(dx * dy * dz, 1e-9) / 1000.0
    k = max(1, min(values.size, math.ceil(HOT_VOLUME_CC / voxel_cc)))
    order = np.argsort(values)[::-1][:k]
    pts = np.column_stack([xx[mask][order], yy[mask][order], zz[mask][order]])
    spread = np.max(np.abs(pts - pts[0]), axis=0) if k > 1 else np.zeros(3)
    if np.any(spread > 2.01 * np.array([dx, dy, dz])):
        best = pts[0]
    else:
        best = np.average(pts, axis=0, weights=np.maximum(values[order], 1e-12))
    return (float(best[0]), float(best[1]), float(best[2]))


def _spacing(dose: DoseGrid) -> tuple[float, float, float]:
    def step(a: FloatArray) -> float:
        return float(np.median(np.diff(a))) if a.size > 1 else 1.0

    return (step(dose.x_mm), step(dose.y_mm), step(dose.z_mm))


def compute_slice_view(
    dose: DoseGrid,
    point_mm: tuple[float, float, float],
    plane: str,
    *,
    subject: str,
    reason: str,
    structures: dict[str, tuple[SlabStack, str]],
    isodoses: tuple[tuple[str, float], ...],
    ct: CtVolume | None = None,
    pixel_mm: float = PIXEL_MM,
) -> SliceView:
    """One plane through ``point_mm`` over the extent of the dose grid, on square pixels.

    Screen order follows :data:`rtqa.report.views_model.LETTERS`: columns run along +x (axial,
    coronal) or +y (sagittal); rows along +y (axial) or -z (coronal, sagittal).
    """
    px, py, pz = point_mm
    xs = np.arange(dose.x_mm[0], dose.x_mm[-1] + 1e-6, pixel_mm)
    ys = np.arange(dose.y_mm[0], dose.y_mm[-1] + 1e-6, pixel_mm)
    zs = np.arange(dose.z_mm[-1], dose.z_mm[0] - 1e-6, -pixel_mm)  # head at the top
    if plane == "axial":
        h, v = xs, ys
        gy, gx = np.meshgrid(v, h, indexing="ij")
        gz = np.full_like(gx, pz)
        ph, pv = px, py
    elif plane == "coronal":
        h, v = xs, zs
        gz, gx = np.meshgrid(v, h, indexing="ij")
        gy = np.full_like(gx, py)
        ph, pv = px, pz
    elif plane == "sagittal":
        h, v = ys, zs
        gz, gy = np.meshgrid(v, h, indexing="ij")
        gx = np.full_like(gy, px)
        ph, pv = py, pz
    else:
        raise ValueError(f"plane {plane!r} is not axial, coronal or sagittal")
    dose_2d = interpolate_trilinear(dose, gx, gy, gz, outside=np.nan)
    ct_2d = None
    if ct is not None:
        # the trilinear sampler works on any canonical grid; a CT is one
        shell = DoseGrid(ct.hu, ct.x_mm, ct.y_mm, ct.z_mm)
        ct_2d = interpolate_trilinear(shell, gx, gy, gz, outside=np.nan)
    traces = []
    for name, (stack, colour) in structures.items():
        mask = structure_mask(stack, gx, gy, gz)
        if mask.any():
            traces.append(ContourTrace(name, colour, mask))
    dv = v[1] - v[0] if v.size > 1 else pixel_mm
    marker = ((ph - h[0]) / pixel_mm, (pv - v[0]) / dv)
    return SliceView(
        subject=subject,
        reason=reason,
        plane=plane,
        point_mm=(float(px), float(py), float(pz)),
        h_mm=h,
        v_mm=v,
        pixel_mm=pixel_mm,
        dose_gy=dose_2d,
        ct_hu=ct_2d,
        contours=tuple(traces),
        isodoses=isodoses,
        marker_px=(float(marker[0]), float(marker[1])),
    )
