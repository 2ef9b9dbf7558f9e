"""Load one discovered plan set into domain objects: plans, structure set, the chosen dose."""

from __future__ import annotations

import numpy as np

from rtqa.case import LoadedCase, PlanSet
from rtqa.discovery.dose_selection import BEAM_CROSSCHECK_LIMIT, choose_dose
from rtqa.discovery.grouping import file_sha256
from rtqa.dvh.grid import resample, sum_doses
from rtqa.errors import InputError
from rtqa.evaluation.prescription import derive_prescription
from rtqa.io import read_dose, read_dose_info, read_plan, read_stored_dvhs, read_structure_set
from rtqa.model import DoseGrid, StoredDVH


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
    if with_dose and plans:
        infos = tuple(read_dose_info(h.path) for h in plan_set.doses)
        choice = choose_dose(plans, infos)
        warnings.extend(choice.warnings)
        grids = [read_dose(info.path) for info, _ in choice.parts]
        dose = (
            grids[0]
            if len(grids) == 1 and choice.parts[0][1] == 1.0
            else sum_doses(grids, weights=[w for _, w in choice.parts])
        )
        if choice.crosscheck:
            beam_sum = sum_doses([read_dose(i.path) for i in choice.crosscheck])
            diff = _relative_difference(dose, beam_sum)
            if diff > BEAM_CROSSCHECK_LIMIT:
                warnings.append(
                    f"the sum of the BEAM doses differs from the PLAN dose by {diff:.1%} of its maximum "
                    f"(more than {BEAM_CROSSCHECK_LIMIT:.0%}); the PLAN dose is used"
                )
        if (
            structure_set is not None
            and dose.info is not None
            and structure_set.frame_of_reference_uid
            and dose.info.frame_of_reference_uid
            and structure_set.frame_of_reference_uid != dose.info.frame_of_reference_uid
        ):
            raise InputError(
                dose.info.path,
                f"{dose.info.frame_of_reference_uid} differs from the structure set's "
                f"{structure_set.frame_of_reference_uid}: dose and contours are not in one frame",
                attribute="FrameOfReferenceUID (0020,0052)",
            )
    sha = {path: file_sha256(path) for path in plan_set.files}
    stored: tuple[StoredDVH, ...] = ()
    if choice is not None and len(choice.parts) == 1 and choice.parts[0][0].has_dvh_sequence:
        stored = read_stored_dvhs(choice.parts[0][0].path)
    return LoadedCase(plan_set, plans, structure_set, dose, choice, prescriptions, tuple(warnings), sha, stored)


def _relative_difference(a: DoseGrid, b: DoseGrid) -> float:
    diff = np.abs(a.dose_gy - resample(b, onto=a))
    return float(diff.max() / max(a.max_gy, 1e-9))
