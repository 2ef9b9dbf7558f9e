"""DVHs of every structure of a loaded case (the work behind ``rtqa dvh``). Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rtqa.dvh import DVH, compute_dvh, prepare_dose
from rtqa.errors import RtqaError
from rtqa.geometry import EndCap, SlabStack, evaluate_expression, roi_stack
from rtqa.metrics import evaluate_metric
from rtqa.model import DoseGrid, StructureSet

SUMMARY_METRICS = ("D98%[Gy]", "D95%[Gy]", "D50%[Gy]", "D2%[Gy]", "D2cc[Gy]", "D0.03cc[Gy]")


@dataclass(frozen=True, eq=False)
class StructureDVH:
    name: str
    roi: str | None  # the ROI in the file; None for a derived structure
    dvh: DVH | None
    problem: str | None = None  # why there is no DVH (missing, empty, ...)

    def d_gy(self) -> dict[str, float | None]:
        if self.dvh is None:
            return {}
        return {m.split("[")[0]: evaluate_metric(self.dvh, m) for m in SUMMARY_METRICS}


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
