"""Do the dose and the contours share a frame of reference, and what proves it. Pure.

Contours are graded on a dose only when both are provably in one patient coordinate system:

* declared: the dose's FrameOfReferenceUID (0020,0052) is a frame the structure set lists in
  ReferencedFrameOfReferenceSequence (3006,0010);
* through the plan, when either side leaves its frame out: the dose references a plan
  (ReferencedRTPlanSequence), that plan references the structure set
  (ReferencedStructureSetSequence), and the plan carries a FrameOfReferenceUID that agrees
  with every frame the dose and the structure set do declare.

Anything else (a side without a frame and no such chain of references) is not proven: the
dose is not used with the contours, and the export must be redone. Frames that are both
declared and differ are refused earlier, when the plan set is formed.

Each ROI names its own frame (StructureSetROISequence > ReferencedFrameOfReferenceUID,
3006,0024): an ROI drawn on another frame (an MR series) is not in the dose's coordinates
unless a registration is applied, which rtqa does not do; such an ROI is unusable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rtqa.model import DoseInfo, Plan, Roi, StructureSet


@dataclass(frozen=True)
class FrameLink:
    """The common frame of the dose and the contours, how it was established, or why it was not."""

    frame_uid: str | None  # the frame the contours must be on (None: not known)
    proof: str | None  # how the link was established; None when there is nothing to link or it failed
    problem: str | None  # why dose and contours cannot be graded together


def link_frames(structure_set: StructureSet | None, doses: tuple[DoseInfo, ...], plans: tuple[Plan, ...]) -> FrameLink:
    """Establish that every dose file and the structure set share a frame of reference.

    Parameters
    ----------
    structure_set
        The case's structure set (``None``: nothing to link).
    doses
        Every dose file the graded dose is formed from (none: nothing to link).
    plans
        The case's plans, whose references may prove the link.
    """
    declared = structure_set.frame_of_reference_uids if structure_set else ()
    if structure_set is None or not doses:
        return FrameLink(declared[0] if len(declared) == 1 else None, None, None)
    ss_name = os.path.basename(structure_set.path)
    frames: set[str] = set()
    proofs: list[str] = []
    for dose in doses:
        name = os.path.basename(dose.path)
        own = dose.frame_of_reference_uid
        if own and own in declared:
            frames.add(own)
            continue
        if own and declared:  # both declared, different: refused when the plan set is formed
            return FrameLink(None, None, f"dose {name} is on frame {own}, the structure set {ss_name} on {declared[0]}")
        via = _through_plan(structure_set, dose, plans)
        missing = _missing(name, ss_name, own, declared)
        if via is None:
            return FrameLink(
                None,
                None,
                f"{missing}, and no plan links them (the dose referencing a plan that references the structure "
                "set and carries a FrameOfReferenceUID agreeing with both)",
            )
        plan, frame = via
        frames.add(frame)
        proofs.append(
            f"{missing}; linked through plan {os.path.basename(plan.path)}: the dose references it, it references "
            f"the structure set, and it is on frame {frame}"
        )
    if len(frames) > 1:
        listed = ", ".join(sorted(frames))
        return FrameLink(None, None, f"the dose files are on {len(frames)} different frames: {listed}")
    (frame,) = frames
    proof = "; ".join(proofs) if proofs else f"declared: dose and structure set are both on frame {frame}"
    return FrameLink(frame, proof, None)


def _missing(dose: str, ss: str, own: str | None, declared: tuple[str, ...]) -> str:
    parts = []
    if not own:
        parts.append(f"dose {dose} has no FrameOfReferenceUID (0020,0052)")
    if not declared:
        parts.append(f"structure set {ss} has no ReferencedFrameOfReferenceSequence (3006,0010)")
    return " and ".join(parts)


def _through_plan(structure_set: StructureSet, dose: DoseInfo, plans: tuple[Plan, ...]) -> tuple[Plan, str] | None:
    declared = structure_set.frame_of_reference_uids
    for plan in plans:
        frame = plan.frame_of_reference_uid
        if (
            frame
            and plan.sop_instance_uid in dose.referenced_plan_uids
            and plan.referenced_structure_set_uid == structure_set.sop_instance_uid
            and (not dose.frame_of_reference_uid or dose.frame_of_reference_uid == frame)
            and (not declared or frame in declared)
        ):
            return plan, frame
    return None


def roi_frame_defect(roi: Roi, link: FrameLink) -> str | None:
    """Why an ROI is not in the frame the contours must be on, or None."""
    if link.frame_uid is None or roi.frame_of_reference_uid is None or roi.frame_of_reference_uid == link.frame_uid:
        return None
    return (
        f"drawn on frame {roi.frame_of_reference_uid} (StructureSetROISequence > ReferencedFrameOfReferenceUID), "
        f"not on the frame of the dose and the structure set, {link.frame_uid}: rtqa applies no registration"
    )
