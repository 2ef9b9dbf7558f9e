"""The prescription of a plan, from the sources DOMAIN.md section 3 ranks.

In order of trust: the trial's stated prescription per target (clinical facts, supplied by
the protocol layer); a TARGET dose reference of type SITE or VOLUME with a
TargetPrescriptionDose (POINT and COORDINATES references are reference points, reported as
information, never a prescription); the sum of the
per-fraction BeamDose values times the number of fractions, which is a point dose and is
labelled so. Sources that disagree by more than 2 % are reported.
"""

from __future__ import annotations

from rtqa.case import Prescription, PrescriptionSource, TargetPrescription
from rtqa.model import Plan

DISAGREEMENT_LIMIT = 0.02
# Dose references that prescribe: a site or a volume. POINT and COORDINATES references are
# calculation or reference points (Eclipse exports a "CALC POINT"): informational only.
PRESCRIPTION_TYPES = ("SITE", "VOLUME")


def derive_prescription(
    plan: Plan,
    *,
    clinical_targets: tuple[TargetPrescription, ...] = (),
    roi_names: dict[int, str] | None = None,
) -> Prescription:
    """Derive the prescription of one plan (first fraction group) with its source.

    Parameters
    ----------
    plan
        The RT Plan.
    clinical_targets
        Per-target prescriptions from the case-report form, if supplied; they take precedence.
    roi_names
        ROI number to name, to name dose references tied to an ROI.
    """
    names = roi_names or {}
    warnings: list[str] = []
    fractions = None
    beam_total = None
    if plan.fraction_groups:
        fg = plan.fraction_groups[0]
        if len(plan.fraction_groups) > 1:
            warnings.append(
                f"plan has {len(plan.fraction_groups)} fraction groups; the prescription is read from group {fg.number}"
            )
        fractions = fg.fractions_planned
        beam_doses = [b.beam_dose_gy for b in fg.beams]
        if fractions and beam_doses and all(d is not None for d in beam_doses):
            beam_total = sum(d for d in beam_doses if d is not None) * fractions

    ref_targets = tuple(
        TargetPrescription(
            name=names.get(d.referenced_roi_number or -1) or d.description or f"DoseReference {d.number}",
            total_gy=float(d.target_prescription_dose_gy),
            roi_number=d.referenced_roi_number,
        )
        for d in plan.dose_references
        if d.reference_type == "TARGET" and d.target_prescription_dose_gy and d.structure_type in PRESCRIPTION_TYPES
    )
    for d in plan.dose_references:
        if d.structure_type not in PRESCRIPTION_TYPES and d.target_prescription_dose_gy:
            warnings.append(
                f"dose reference {d.description or d.number!r} ({d.structure_type or 'no structure type'}, "
                f"{d.target_prescription_dose_gy:.2f} Gy) is a reference point: informational, not a prescription"
            )

    candidates: list[tuple[PrescriptionSource, float]] = []
    if clinical_targets:
        candidates.append((PrescriptionSource.CLINICAL, max(t.total_gy for t in clinical_targets)))
    if ref_targets:
        candidates.append((PrescriptionSource.DOSE_REFERENCE, max(t.total_gy for t in ref_targets)))
    if beam_total is not None and beam_total > 0:
        candidates.append((PrescriptionSource.BEAM_DOSES, beam_total))

    if not candidates:
        return Prescription(
            total_gy=None,
            fractions=fractions,
            source=None,
            warnings=(*warnings, "no prescription found: no clinical prescription, TARGET dose reference or BeamDose"),
        )
    source, total = candidates[0]
    targets = clinical_targets if source is PrescriptionSource.CLINICAL else ref_targets
    if source is PrescriptionSource.BEAM_DOSES:
        warnings.append("prescription taken from the sum of BeamDose values (a point dose, possibly a nominal split)")
    for other, value in candidates[1:]:
        if abs(value - total) > DISAGREEMENT_LIMIT * total:
            warnings.append(
                f"prescription sources disagree: {source.value} gives {total:.2f} Gy, "
                f"{other.value} gives {value:.2f} Gy (more than {DISAGREEMENT_LIMIT:.0%} apart)"
            )
    return Prescription(
        total_gy=total,
        fractions=fractions,
        source=source,
        targets=targets,
        candidates=tuple(candidates),
        warnings=tuple(warnings),
    )
