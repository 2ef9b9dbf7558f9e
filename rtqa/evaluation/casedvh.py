"""DVHs of every structure of a loaded case (the work behind ``rtqa dvh``). Pure."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace

from rtqa.dvh.engine import compute_dvh, prepare_dose
from rtqa.dvh.geometry import EndCap, SlabStack, combine, evaluate_expression, roi_stack
from rtqa.dvh.stored import compare_with_stored, decode_stored_dvh, end_cap_vote, infer_end_cap, infer_units
from rtqa.errors import RtqaError
from rtqa.evaluation.identity import identify_structures
from rtqa.model import DoseGrid, StoredDVH, StructureSet
from rtqa.protocol.loader import Protocol
from rtqa.report.dvh_tables import StructureDVH


def compute_case_dvhs(
    structure_set: StructureSet,
    dose: DoseGrid,
    *,
    names: Sequence[str] = (),
    derived: Sequence[tuple[str, str]] = (),
    end_cap: EndCap = EndCap.HALF_SLAB,
) -> list[StructureDVH]:
    """The DVH of each ROI (or of the named ones) and of each derived structure.

    A structure that cannot be computed (no contours, unknown name) gets a ``problem``
    instead of a DVH: it is reported as missing, never as zero dose.
    """
    planes = structure_set.plane_positions_mm
    prepared = prepare_dose(dose)
    stacks: dict[str, SlabStack] = {}
    problems: dict[str, str] = {}
    for roi in structure_set.rois:
        if roi.name in stacks or roi.name in problems:
            problems[roi.name] = f"ROI name {roi.name!r} is used by more than one ROI"
            stacks.pop(roi.name, None)
            continue
        try:
            stacks[roi.name] = roi_stack(roi, planes, end_cap=end_cap)
        except RtqaError as exc:
            problems[roi.name] = str(exc)
    wanted = list(names) if names else [r.name for r in structure_set.rois]
    out: list[StructureDVH] = []
    seen: set[str] = set()
    for name in wanted:
        if name in seen:
            continue
        seen.add(name)
        if name in stacks:
            out.append(StructureDVH(name, name, compute_dvh(stacks[name], dose, prepared=prepared)))
        else:
            out.append(
                StructureDVH(name, None, None, problems.get(name, f"no ROI named {name!r} in the structure set"))
            )
    for name, expression in derived:
        try:
            stack = evaluate_expression(expression, stacks, name=name)
            out.append(StructureDVH(name, None, compute_dvh(stack, dose, prepared=prepared)))
        except RtqaError as exc:
            out.append(StructureDVH(name, None, None, str(exc)))
    return out


def review_stored_dvhs(
    structure_set: StructureSet,
    dvhs: Sequence[StructureDVH],
    stored: Sequence[StoredDVH],
    *,
    grid_max_gy: float,
    dose: DoseGrid | None = None,
    prescription_gy: float | None = None,
    roi_numbers: Collection[int] | None = None,
) -> list[str]:
    """Warnings from comparing the planning system's stored DVHs with rtqa's. Never grades.

    Only the ROIs in ``roi_numbers`` are compared (all when ``None``: the report uses them),
    and each ROI at most once: an export with 400 stored items naming one ROI costs one
    comparison, not 400 DVHs (the others are counted in a warning).

    Like is compared with like: the dose unit of the stored values is inferred once for the
    file (Gy, or percent of the prescription under a GY label); the end-cap convention the
    stored volumes follow is inferred, and with ``dose`` given rtqa's DVHs are recomputed with
    that convention before volumes and means are compared. A consistent export gives no
    difference warning.
    """
    units = infer_units(list(stored), grid_max_gy=grid_max_gy, prescription_gy=prescription_gy)
    warnings: list[str] = list(units.notes)
    by_roi = {s.roi: s.dvh for s in dvhs if s.dvh is not None and s.roi is not None}
    numbers = {r.number: r for r in structure_set.rois}
    planes = structure_set.plane_positions_mm
    decoded_items = []
    volumes: list[tuple[float, float, float]] = []
    skipped = 0
    unused = repeated = 0
    seen: set[int] = set()
    for item in stored:
        if len(item.roi_numbers) == 1:
            number = item.roi_numbers[0]
            if roi_numbers is not None and number not in roi_numbers:
                unused += 1
                continue
            if number in seen:
                repeated += 1
                continue
        decoded = (
            None
            if units.curve_gy_per_unit is None
            else decode_stored_dvh(
                item,
                grid_max_gy=grid_max_gy,
                gy_per_unit=units.curve_gy_per_unit,
                stats_gy_per_unit=units.stats_gy_per_unit or 1.0,
            )
        )
        roi = numbers.get(item.roi_numbers[0]) if len(item.roi_numbers) == 1 else None
        if decoded is None or roi is None:
            skipped += 1
            continue
        seen.add(roi.number)
        if units.stats_gy_per_unit is None:
            decoded = replace(decoded, stated_mean_gy=None)
        decoded_items.append((roi, item, decoded))
        if item.volume_units == "CM3":
            try:
                half = roi_stack(roi, planes, end_cap=EndCap.HALF_SLAB).volume_cc
                none = roi_stack(roi, planes, end_cap=EndCap.NONE).volume_cc
            except RtqaError:
                continue
            volumes.append((decoded.volume, half, none))
    convention = end_cap_vote(volumes)
    prepared = prepare_dose(dose) if dose is not None and decoded_items else None
    for roi, item, decoded in decoded_items:
        computed = by_roi.get(roi.name)
        wanted = convention or EndCap.HALF_SLAB
        if dose is not None and (computed is None or computed.end_cap is not wanted):
            try:
                computed = compute_dvh(roi_stack(roi, planes, end_cap=wanted), dose, prepared=prepared)
            except RtqaError:
                computed = None
        if computed is not None:
            warnings.extend(compare_with_stored(roi.name, computed, decoded, volume_units=item.volume_units))
    if skipped:
        warnings.append(f"{skipped} stored DVH(s) not compared (several ROIs, relative dose or volume per unit)")
    if repeated:
        warnings.append(
            f"{repeated} stored DVH(s) name an ROI an earlier stored DVH already names: only the first compared"
        )
    if unused:
        warnings.append(f"{unused} stored DVH(s) of ROIs this report does not use: not compared")
    verdict = infer_end_cap(volumes)
    if verdict:
        warnings.append(verdict)
    return warnings


def compute_protocol_dvhs(
    structure_set: StructureSet, dose: DoseGrid, protocol: Protocol, *, names: Sequence[str] = ()
) -> list[StructureDVH]:
    """DVHs under the protocol's structure names (several ROIs of one structure as their union)
    and of its derived structures, e.g. ``Liver-GTV``."""
    planes = structure_set.plane_positions_mm
    prepared = prepare_dose(dose)
    matching = identify_structures(structure_set.rois, (), protocol)
    rois = {r.name: r for r in structure_set.rois}
    stacks: dict[str, SlabStack] = {}
    labels: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name in protocol.structures:
        if name in matching.ambiguous:
            problems[name] = matching.ambiguous[name]
            continue
        matched = [m.roi for m in matching.matches.get(name, ())]
        parts = []
        for roi in matched:
            try:
                parts.append(roi_stack(rois[roi], planes, end_cap=protocol.end_cap))
            except RtqaError as exc:
                problems[name] = str(exc)
        if not parts:
            problems.setdefault(name, f"no ROI matches {name}")
            continue
        stack = parts[0]
        for p in parts[1:]:
            stack = combine("|", stack, p)
        stacks[name] = SlabStack(name, stack.slabs, stack.end_cap)
        labels[name] = " | ".join(matched)
    for name, spec in protocol.derived.items():
        if spec.prefer_roi and name in stacks:
            continue
        try:
            stacks[name] = evaluate_expression(spec.expression, stacks, name=name)
            problems.pop(name, None)
        except RtqaError as exc:
            problems[name] = str(exc)
    wanted = list(names) or [*protocol.structures, *(d for d in protocol.derived if d not in protocol.structures)]
    out = []
    for name in wanted:
        if name in stacks:
            out.append(StructureDVH(name, labels.get(name), compute_dvh(stacks[name], dose, prepared=prepared)))
        else:
            out.append(StructureDVH(name, None, None, problems.get(name, f"{name} is not a structure of the protocol")))
    return out
