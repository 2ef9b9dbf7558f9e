"""Which dose files make the dose of a plan (DOMAIN.md section 3, PS3.3 C.8.8.3). Pure.

* one PLAN dose (or FRACTION dose of a single-fraction-group plan): use it;
* BEAM doses only: sum them if they cover every treatment beam of the fraction group,
  otherwise refuse;
* PLAN and BEAM together: use PLAN, and cross-check the BEAM sum (warn above 1 %);
* two PLAN doses for one plan: an ambiguity, never a sum;
* FRACTION_SESSION / BEAM_SESSION: one session, multiplied by the number of fractions;
* a course of several plans (a sequential boost, linked or not): a MULTI_PLAN dose over all its
  plans, else the sum of the dose of each plan; a plan without its own dose then makes the
  composite impossible (:class:`~rtqa.errors.CourseDoseError`, naming every such plan).
"""

from __future__ import annotations

import os

from rtqa.case import DoseChoice
from rtqa.errors import CourseDoseError, DoseSelectionError
from rtqa.model import DoseInfo, DoseSummationType, Plan

BEAM_CROSSCHECK_LIMIT = 0.01


def choose_dose(plans: tuple[Plan, ...], doses: tuple[DoseInfo, ...]) -> DoseChoice:
    """Choose the dose of a plan or a composite of plans.

    Raises
    ------
    DoseSelectionError
        No usable dose, an incomplete BEAM set, or an ambiguity (two PLAN doses).
    """
    if not plans:
        raise DoseSelectionError("no plan to choose a dose for")
    if len(plans) > 1:
        uids = {p.sop_instance_uid for p in plans}
        multi = [
            d for d in doses if d.summation_type is DoseSummationType.MULTI_PLAN and set(d.referenced_plan_uids) >= uids
        ]
        if len(multi) == 1:
            return DoseChoice(((multi[0], 1.0),), "MULTI_PLAN")
        if len(multi) > 1:
            raise DoseSelectionError(_ambiguous("MULTI_PLAN", multi))
        parts: list[tuple[DoseInfo, float]] = []
        warnings: list[str] = []
        labels = []
        per_plan: list[tuple[str, DoseChoice]] = []
        missing: list[tuple[str, str]] = []
        for plan in plans:
            own = tuple(
                d
                for d in doses
                if plan.sop_instance_uid in d.referenced_plan_uids
                and d.summation_type is not DoseSummationType.MULTI_PLAN
            )
            try:
                choice = choose_dose((plan,), own)
            except DoseSelectionError as exc:  # every plan without its dose is named, not the first
                missing.append((plan.label or os.path.basename(plan.path), str(exc)))
                continue
            parts.extend(choice.parts)
            warnings.extend(choice.warnings)
            labels.append(choice.source)
            per_plan.append((plan.sop_instance_uid, choice))
        if missing:
            named = tuple(name for name, _ in missing)
            raise CourseDoseError(
                f"the composite dose of the course ({', '.join(p.label or os.path.basename(p.path) for p in plans)}) "
                f"cannot be formed: no MULTI_PLAN dose covers its plans, and {len(missing)} plan(s) have no dose of "
                "their own: " + "; ".join(f"{name}: {why}" for name, why in missing),
                named,
            )
        return DoseChoice(
            tuple(parts), "sum of plans (" + "; ".join(labels) + ")", warnings=tuple(warnings), per_plan=tuple(per_plan)
        )

    plan = plans[0]
    mine = [d for d in doses if not d.referenced_plan_uids or plan.sop_instance_uid in d.referenced_plan_uids]
    # a session dose is one session of one fraction group: with several groups it cannot be scaled
    fractions = plan.fraction_groups[0].fractions_planned if len(plan.fraction_groups) == 1 else None
    by_type: dict[DoseSummationType, list[DoseInfo]] = {}
    for d in mine:
        by_type.setdefault(d.summation_type, []).append(d)
    plan_doses = by_type.get(DoseSummationType.PLAN, [])
    if len(plan.fraction_groups) <= 1:
        plan_doses = plan_doses + by_type.get(DoseSummationType.FRACTION, [])
    beam_doses = by_type.get(DoseSummationType.BEAM, [])
    if len(plan_doses) > 1:
        raise DoseSelectionError(_ambiguous("PLAN", plan_doses))
    if plan_doses:
        beams_ok = bool(beam_doses) and not _missing_beams(plan, beam_doses)
        return DoseChoice(
            ((plan_doses[0], 1.0),),
            plan_doses[0].summation_type.value,
            crosscheck=tuple(beam_doses) if beams_ok else (),
        )
    if beam_doses:
        _require_complete(plan, beam_doses)
        return DoseChoice(tuple((d, 1.0) for d in beam_doses), f"BEAM sum ({len(beam_doses)} files)")
    for session_type, single in ((DoseSummationType.FRACTION_SESSION, True), (DoseSummationType.BEAM_SESSION, False)):
        session = by_type.get(session_type, [])
        if not session:
            continue
        if not fractions:
            lacks = (
                f"a plan of {len(plan.fraction_groups)} fraction groups does not give one"
                if len(plan.fraction_groups) > 1
                else "the plan lacks it"
            )
            raise DoseSelectionError(f"{session_type.value} dose needs the number of fractions: {lacks}")
        if single and len(session) > 1:
            raise DoseSelectionError(_ambiguous(session_type.value, session))
        if not single:
            _require_complete(plan, session)
        return DoseChoice(
            tuple((d, float(fractions)) for d in session),
            f"{session_type.value} x {fractions} fractions",
            warnings=(f"dose is one session ({session_type.value}); multiplied by {fractions} fractions",),
        )
    found = ", ".join(sorted({d.summation_type.value for d in mine})) or "none"
    raise DoseSelectionError(
        f"no usable dose for plan {plan.label or plan.sop_instance_uid}: dose types found: {found}"
    )


def _ambiguous(kind: str, doses: list[DoseInfo]) -> str:
    names = ", ".join(os.path.basename(d.path) for d in doses)
    return f"{len(doses)} {kind} doses for one plan ({names}): ambiguous, rtqa never sums them"


def _missing_beams(plan: Plan, doses: list[DoseInfo]) -> set[int]:
    wanted = {b.number for b in plan.treatment_beams}
    if plan.fraction_groups:  # the beams of every fraction group (a boost group has its own beams)
        wanted &= {b.beam_number for fg in plan.fraction_groups for b in fg.beams} or wanted
    have = {n for d in doses for n in d.referenced_beam_numbers}
    return wanted - have


def _require_complete(plan: Plan, doses: list[DoseInfo]) -> None:
    numbers = [n for d in doses for n in d.referenced_beam_numbers]
    if any(not d.referenced_beam_numbers for d in doses):
        raise DoseSelectionError("a BEAM dose does not say which beam it belongs to (ReferencedBeamNumber absent)")
    if len(numbers) != len(set(numbers)):
        raise DoseSelectionError(f"BEAM doses repeat a beam ({sorted(numbers)}): rtqa will not sum them")
    missing = _missing_beams(plan, doses)
    if missing:
        have = sorted(set(numbers))
        raise DoseSelectionError(
            f"BEAM doses cover beams {have} but treatment beam(s) {sorted(missing)} of plan "
            f"{plan.label or plan.sop_instance_uid} have no dose: the plan dose cannot be formed"
        )
