"""The prescription of a plan, from the sources DOMAIN.md section 3 ranks.

In order of trust: the trial's stated prescription per target (clinical facts, supplied by
the protocol layer); a TARGET dose reference of type SITE or VOLUME with a
TargetPrescriptionDose (POINT and COORDINATES references are reference points, reported as
information, never a prescription); the sum of the
per-fraction BeamDose values times the number of fractions, which is a point dose and is
labelled so. Sources that disagree by more than 2 % are reported.
"""

from __future__ import annotations

import math

from rtqa.case import GroupPrescription, Prescription, PrescriptionSource, TargetPrescription
from rtqa.model import Plan

DISAGREEMENT_LIMIT = 0.02
# Dose references that prescribe: a site or a volume. POINT and COORDINATES references are
# calculation or reference points (Eclipse exports a "CALC POINT"): informational only.
PRESCRIPTION_TYPES = ("SITE", "VOLUME")
# A total prescription outside these bounds is no treatment (the highest external-beam courses,
# SBRT included, stay below 100 Gy; under 0.01 Gy is below the reports' rounding): it is not
# graded against, and the rules relative to it are not evaluable. A DS of 1e-320 would otherwise
# give a coverage of "inf %", and a BeamDose of 1e308 an infinite total.
MIN_PRESCRIPTION_GY = 0.01
MAX_PRESCRIPTION_GY = 100.0


def derive_prescription(
    plan: Plan,
    *,
    clinical_targets: tuple[TargetPrescription, ...] = (),
    roi_names: dict[int, str] | None = None,
) -> Prescription:
    """Derive the prescription of one plan with its source, over every fraction group.

    The number of fractions is the sum over the fraction groups; the BeamDose source is the sum
    over the groups of (fractions x the group's BeamDose per fraction). A disagreement between
    sources names each group, so that a boost group left out of a prescription shows.

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
    per_fraction = [
        sum(b.beam_dose_gy for b in fg.beams if b.beam_dose_gy is not None)
        if fg.beams and all(b.beam_dose_gy is not None for b in fg.beams)
        else None
        for fg in plan.fraction_groups
    ]
    # a BeamDose sum that overflows (1e308 per beam) reaches no report: the group shows none,
    # and the BeamDose source below is infinite, hence absurd and said so
    overflow = any(v is not None and not math.isfinite(v) for v in per_fraction)
    groups = tuple(
        GroupPrescription(fg.number, fg.fractions_planned, v if v is None or math.isfinite(v) else None)
        for fg, v in zip(plan.fraction_groups, per_fraction, strict=True)
    )
    counts = [g.fractions for g in groups]
    fractions = sum(c for c in counts if c is not None) if counts and None not in counts else None
    beam_total = None
    group_totals = [g.total_gy for g in groups]
    if groups and all(t is not None for t in group_totals):
        beam_total = sum(t for t in group_totals if t is not None)
    if overflow:
        beam_total = math.inf
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

    def highest(targets: tuple[TargetPrescription, ...]) -> float:
        # one target prescribed no treatment makes the source absurd: its value stands for it
        bad = [t.total_gy for t in targets if not _plausible(t.total_gy)]
        return bad[0] if bad else max(t.total_gy for t in targets)

    candidates: list[tuple[PrescriptionSource, float]] = []
    if clinical_targets:
        candidates.append((PrescriptionSource.CLINICAL, highest(clinical_targets)))
    if ref_targets:
        candidates.append((PrescriptionSource.DOSE_REFERENCE, highest(ref_targets)))
    if beam_total is not None and beam_total > 0:
        candidates.append((PrescriptionSource.BEAM_DOSES, beam_total))
    absurd = [(src, v) for src, v in candidates if not _plausible(v)]
    for src, value in absurd:
        warnings.append(
            f"the prescription from {src.value} ({show_gy(value)}) is outside {MIN_PRESCRIPTION_GY:g}-"
            f"{MAX_PRESCRIPTION_GY:g} Gy, no treatment: not used"
            + (
                "; the rules relative to the prescription are not evaluable"
                if candidates and src is candidates[0][0]
                else ""
            )
        )
    if absurd and absurd[0][0] is candidates[0][0]:
        # the most trusted source is absurd: a less trusted one must not stand in for it
        return Prescription(
            total_gy=None,
            fractions=fractions,
            source=None,
            warnings=tuple(warnings),
            groups=groups,
            absurd=tuple(absurd),
        )
    candidates = [c for c in candidates if c not in absurd]

    if not candidates:
        return Prescription(
            total_gy=None,
            fractions=fractions,
            source=None,
            warnings=(*warnings, "no prescription found: no clinical prescription, TARGET dose reference or BeamDose"),
            groups=groups,
        )
    source, total = candidates[0]
    targets = clinical_targets if source is PrescriptionSource.CLINICAL else ref_targets
    if source is PrescriptionSource.BEAM_DOSES:
        warnings.append("prescription taken from the sum of BeamDose values (a point dose, possibly a nominal split)")
    for other, value in candidates[1:]:
        if abs(value - total) > DISAGREEMENT_LIMIT * total:
            per_group = f" ({describe_groups(groups)})" if PrescriptionSource.BEAM_DOSES in (source, other) else ""
            warnings.append(
                f"prescription sources disagree: {source.value} gives {total:.2f} Gy, "
                f"{other.value} gives {value:.2f} Gy (more than {DISAGREEMENT_LIMIT:.0%} apart){per_group}"
            )
    return Prescription(
        total_gy=total,
        fractions=fractions,
        source=source,
        targets=targets,
        candidates=tuple(candidates),
        warnings=tuple(warnings),
        groups=groups,
        absurd=tuple(absurd),
    )


def describe_groups(groups: tuple[GroupPrescription, ...]) -> str:
    """Each fraction group with its fractions and BeamDose per fraction, for messages."""
    return "; ".join(g.describe() for g in groups)


def _plausible(total_gy: float) -> bool:
    """Whether a total prescription is a treatment (NaN and infinity are not)."""
    return MIN_PRESCRIPTION_GY <= total_gy <= MAX_PRESCRIPTION_GY


def show_gy(value: float) -> str:
    """``"5000 Gy"``, or words for a value that is not a number a report may print."""
    return f"{value:.4g} Gy" if math.isfinite(value) else "not a finite number"
