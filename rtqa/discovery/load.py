"""Load one discovered plan set into domain objects: plans, structure set, the chosen dose."""

from __future__ import annotations

import dataclasses

import numpy as np

from rtqa.case import DoseChoice, LoadedCase, PlanDose, PlanSet, Prescription
from rtqa.discovery.dose_selection import BEAM_CROSSCHECK_LIMIT, choose_dose
from rtqa.discovery.grouping import file_sha256
from rtqa.dvh.budget import configured_budget_bytes, require_dose_budget
from rtqa.dvh.grid import add_dose, compute_common_grid, resample, sum_on_grid
from rtqa.errors import InputError
from rtqa.evaluation.prescription import derive_prescription
from rtqa.io import read_dose, read_dose_info, read_plan, read_stored_dvhs, read_structure_set
from rtqa.model import DoseGrid, DoseInfo, DoseType, Heterogeneity, Plan, StoredDVH


def load_case(plan_set: PlanSet, *, with_dose: bool = True) -> LoadedCase:
    """Read the files of a plan set and form its dose.

    Raises
    ------
    RtqaError
        Any reading error, or a dose that cannot be chosen (see :func:`choose_dose`).
    """
    warnings = list(plan_set.inferred_links)
    structure_set = read_structure_set(plan_set.structure_set.path) if plan_set.structure_set else None
    if structure_set is not None:
        warnings.extend(structure_set.warnings)
    plans = tuple(read_plan(h.path) for h in plan_set.plans)
    roi_names = {r.number: r.name for r in structure_set.rois} if structure_set else {}
    prescriptions = tuple(derive_prescription(p, roi_names=roi_names) for p in plans)
    for plan, rx in zip(plans, prescriptions, strict=True):
        warnings.extend(plan.warnings)
        warnings.extend(rx.warnings)
    dose = choice = None
    plan_doses: tuple[PlanDose, ...] = ()
    composite = None
    if with_dose and plans:
        infos = tuple(read_dose_info(h.path) for h in plan_set.doses)
        choice = choose_dose(plans, infos)
        warnings.extend(choice.warnings)
        if choice.per_plan:
            dose, plan_doses, composite = _course_dose(plans, prescriptions, choice)
        else:
            dose = (
                read_dose(choice.parts[0][0].path)
                if len(choice.parts) == 1 and choice.parts[0][1] == 1.0
                else read_dose_sum([(info.path, w) for info, w in choice.parts])
            )
            plan_doses = tuple(
                PlanDose(p.sop_instance_uid, p.label, rx.fractions, dose if len(plans) == 1 else None, choice.source)
                for p, rx in zip(plans, prescriptions, strict=True)
            )
            if len(plans) > 1:
                composite = f"{choice.source}: one dose of the whole course, as exported"
        if choice.crosscheck:
            beam_sum = read_dose_sum([(i.path, 1.0) for i in choice.crosscheck], held_bytes=dose.dose_gy.nbytes)
            diff = _relative_difference(dose, beam_sum)
            if diff > BEAM_CROSSCHECK_LIMIT:
                warnings.append(
                    f"the sum of the BEAM doses differs from the PLAN dose by {diff:.1%} of its maximum "
                    f"(more than {BEAM_CROSSCHECK_LIMIT:.0%}); the PLAN dose is used"
                )
        for grid in (dose, *(pd.dose for pd in plan_doses if pd.dose is not None and pd.dose is not dose)):
            if (
                structure_set is not None
                and grid.info is not None
                and structure_set.frame_of_reference_uid
                and grid.info.frame_of_reference_uid
                and structure_set.frame_of_reference_uid != grid.info.frame_of_reference_uid
            ):
                raise InputError(
                    grid.info.path,
                    f"{grid.info.frame_of_reference_uid} differs from the structure set's "
                    f"{structure_set.frame_of_reference_uid}: dose and contours are not in one frame",
                    attribute="FrameOfReferenceUID (0020,0052)",
                )
    sha = {path: file_sha256(path) for path in plan_set.files}
    stored: tuple[StoredDVH, ...] = ()
    if choice is not None and len(choice.parts) == 1 and choice.parts[0][0].has_dvh_sequence:
        stored = read_stored_dvhs(choice.parts[0][0].path)
    return LoadedCase(
        plan_set,
        plans,
        structure_set,
        dose,
        choice,
        prescriptions,
        tuple(warnings),
        sha,
        stored,
        plan_doses=plan_doses,
        composite=composite,
    )


def _course_dose(
    plans: tuple[Plan, ...], prescriptions: tuple[Prescription, ...], choice: DoseChoice
) -> tuple[DoseGrid, tuple[PlanDose, ...], str]:
    """The composite dose of a course summed from its plans' own doses, each plan's dose kept.

    Each plan's dose is formed first (a PLAN dose, a BEAM sum, a session dose times its
    fractions); the composite is their sum on a common grid (:func:`compute_common_grid`),
    within the memory budget."""
    by_uid = dict(choice.per_plan)
    own: list[DoseGrid] = []
    for plan in plans:
        c = by_uid[plan.sop_instance_uid]
        # each plan's dose is kept (its own findings), and is read beside the ones before it
        own.append(
            read_dose_sum([(info.path, w) for info, w in c.parts], held_bytes=sum(g.dose_gy.nbytes for g in own))
        )
    names = [p.label or p.sop_instance_uid for p in plans]
    grid = compute_common_grid(own, names=names)
    require_dose_budget(
        rows=grid.y_mm.size,
        columns=grid.x_mm.size,
        frames=grid.z_mm.size,
        path=plans[0].path,
        budget_bytes=configured_budget_bytes(),
    )
    dose = sum_on_grid(own, grid)
    if dose.info is not None:  # the composite is as trustworthy as its least trustworthy part
        dose = DoseGrid(dose.dose_gy, dose.x_mm, dose.y_mm, dose.z_mm, info=_weakest_info(dose.info, own))
    per_plan = tuple(
        PlanDose(p.sop_instance_uid, p.label, rx.fractions, d, by_uid[p.sop_instance_uid].source)
        for p, rx, d in zip(plans, prescriptions, own, strict=True)
    )
    return dose, per_plan, f"sum of the doses of {len(plans)} plans; {grid.statement}"


_HETEROGENEITY_RANK = {Heterogeneity.ON: 0, Heterogeneity.UNKNOWN: 1, Heterogeneity.OFF: 2}


def _weakest_info(info: DoseInfo, grids: list[DoseGrid]) -> DoseInfo:
    """The header of a course's composite dose: the reference grid's, with the weakest
    heterogeneity statement and a non-PHYSICAL DoseType of any plan's dose, so that a boost
    calculated in water or exported as an EFFECTIVE dose is not hidden behind the primary."""
    infos = [g.info for g in grids if g.info is not None]
    weakest = max(infos, key=lambda i: _HETEROGENEITY_RANK[i.heterogeneity], default=info)
    odd = next((i for i in infos if i.dose_type is not DoseType.PHYSICAL), info)
    return dataclasses.replace(
        info,
        heterogeneity=weakest.heterogeneity,
        heterogeneity_values=weakest.heterogeneity_values,
        dose_type=odd.dose_type,
    )


def read_dose_sum(parts: list[tuple[str, float]], *, held_bytes: int = 0) -> DoseGrid:
    """The weighted sum of dose files on the grid of the first, read one file at a time.

    The plan holds the float64 sum and the one dose being read, never every dose: each read is
    checked against what the memory budget leaves beside the sum (and ``held_bytes``, a dose
    the plan already holds), so 20 BEAM doses take the memory of two. The sum is the one
    :func:`~rtqa.dvh.grid.sum_doses` forms, to the last bit (same additions, same order).

    Raises
    ------
    RtqaError
        As :func:`~rtqa.io.read_dose`, a dose over what the budget leaves included.
    """
    total: DoseGrid | None = None
    for path, weight in parts:
        held = held_bytes + (total.dose_gy.nbytes if total is not None else 0)
        grid = read_dose(path, held_bytes=held)
        if total is None:  # 0 + w x d is w x d: the sum starts as the first dose itself
            total = grid if weight == 1.0 else dataclasses.replace(grid, dose_gy=grid.dose_gy * weight)
        else:
            add_dose(total, grid, weight=weight)
        del grid
    if total is None:
        raise ValueError("no dose to sum")
    return total


def _relative_difference(a: DoseGrid, b: DoseGrid) -> float:
    diff = np.abs(a.dose_gy - resample(b, onto=a))
    return float(diff.max() / max(a.max_gy, 1e-9))
