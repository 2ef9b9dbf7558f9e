"""A structure set and a dose with no RT Plan (every DVH benchmark, and many exports): paired by
patient and frame of reference for ``rtqa dvh``, never for grading (``rtqa check`` needs the plan:
its prescription, fractions and beams)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from rtqa.case import Discovery, UnassignedFile
from rtqa.discovery.grouping import NO_PLAN
from rtqa.errors import RtqaError
from rtqa.io.header import read_header
from rtqa.model import FileHeader

_LISTED = 5  # structure sets named in the reason a dose stays unpaired (the patient's first)


@dataclass(frozen=True)
class PlanlessCase:
    """A structure set and one dose of the same patient and frame of reference, without a plan."""

    patient_id: str
    structure_set: FileHeader
    dose: FileHeader
    link: str  # how they were linked, for the output


def pair_planless(found: Discovery) -> tuple[list[PlanlessCase], list[UnassignedFile]]:
    """Pair each dose that has no plan with the one structure set (not used by any plan) of its
    patient that shares its FrameOfReferenceUID. Returns the pairs and the files still unassigned
    (a dose with no such structure set, or with several: rtqa does not guess)."""
    free = [p.structure_set for p in found.plan_sets if not p.plans and p.structure_set is not None]
    pairs: list[PlanlessCase] = []
    left: list[UnassignedFile] = []
    for u in found.unassigned:
        if not u.reason.startswith(NO_PLAN):
            left.append(u)
            continue
        try:
            dose = read_header(u.path)
        except RtqaError:
            left.append(u)
            continue
        frame = dose.frame_of_reference_uid
        matches = [s for s in free if frame and s.patient_id == dose.patient_id and s.frame_of_reference_uid == frame]
        if len(matches) == 1:
            ss = matches[0]
            pairs.append(
                PlanlessCase(
                    dose.patient_id,
                    ss,
                    dose,
                    f"no RT Plan: dose {os.path.basename(dose.path)} and structure set "
                    f"{os.path.basename(ss.path)} linked by PatientID {dose.patient_id!r} and "
                    f"FrameOfReferenceUID {frame}",
                )
            )
        elif matches:
            why = f"{len(matches)} structure sets of the patient share its frame of reference (ambiguous)"
            left.append(UnassignedFile(u.path, f"{u.reason}; {why}"))
        else:
            left.append(UnassignedFile(u.path, f"{u.reason}; {_no_partner(dose, free)}"))
    return pairs, left


def _no_partner(dose: FileHeader, free: list[FileHeader]) -> str:
    """Why no structure set pairs with ``dose``: the dose's PatientID and FrameOfReferenceUID
    (or that it has none) beside those of the structure sets found, each with what differs."""
    frame = dose.frame_of_reference_uid
    head = (
        f"the dose (PatientID {dose.patient_id!r}) has no FrameOfReferenceUID, so no structure set can be linked to it"
        if not frame
        else f"no structure set shares the dose's PatientID {dose.patient_id!r} and FrameOfReferenceUID {frame}"
    )
    if not free:
        return f"{head}; the input holds no structure set outside a plan"
    ordered = sorted(free, key=lambda s: (s.patient_id != dose.patient_id, s.path))
    listed = []
    for s in ordered[:_LISTED]:
        differs = [
            *(["another patient"] if s.patient_id != dose.patient_id else []),
            *(["another frame of reference"] if frame and s.frame_of_reference_uid != frame else []),
        ]
        listed.append(
            f"{os.path.basename(s.path)} (PatientID {s.patient_id!r}, FrameOfReferenceUID "
            f"{s.frame_of_reference_uid or 'absent'}{': ' + ' and '.join(differs) if differs else ''})"
        )
    more = f" and {len(free) - _LISTED} more" if len(free) > _LISTED else ""
    found = "structure set found" if len(free) == 1 else "structure sets found"
    return f"{head}; {found}: {', '.join(listed)}{more}"
