"""Technical checks: dose grid, coverage of targets and organs by the grid, heterogeneity, dose
type, prescription sources, beams, GTV inside PTV, dose algorithm, approval status.

A check whose input set is empty (no target, no organ, no treatment beam) is not evaluable and
says why: nothing passes over nothing. Problems of the export (a grid that does not cover what
it must) are findings of category ``resubmit``, not dose deviations of the plan.

Absent is never per protocol: an attribute a check needs that the export left out (or holds in a
form that says nothing) makes the check not evaluable, category ``query`` (a question to the
centre, not a resubmission), and the finding names the attribute. README, "What an absent
attribute gives", lists every check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from rtqa.dvh.geometry import EndCap, combine
from rtqa.errors import RtqaError
from rtqa.evaluation.checks.constraints import UNCOVERED_CC
from rtqa.evaluation.context import FRAME_RULE, FRAME_UNPROVEN, CaseContext
from rtqa.evaluation.grading import Measured, grade_measured, not_applicable, not_evaluable, plain, with_end_caps
from rtqa.evaluation.prescription import show_gy
from rtqa.model import Heterogeneity
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import Rule
from rtqa.report.model import EndCapValue, Finding, NotApplicable

Outcome = list[Finding | NotApplicable]
OAR_BOUNDARY_FRACTION = 0.05  # DOMAIN.md 4.2: below this on the grid boundary, uncovered OAR volume is ~0 Gy


def _needs_dose(func: Callable[[CaseContext, Rule, Mapping[str, str | None]], Outcome]) -> Any:
    def wrapped(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
        if ctx.dose is None:
            return [not_evaluable(rule, "no dose")]
        return func(ctx, rule, facts)

    return wrapped


@_needs_dose
def dose_grid_spacing(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    assert ctx.dose is not None
    # a course summed from its plans' own doses: each plan's grid is graded (the composite's grid
    # is the finest of them and would hide a boost calculated on a coarse grid)
    grids = [("", ctx.dose)]
    if len(ctx.case.plans) > 1:
        own = [(f"plan {pd.label}: ", pd.dose) for pd in ctx.case.plan_doses if pd.dose is not None]
        grids = own if len(own) == len(ctx.case.plans) else grids
    out: Outcome = []
    for label, grid in grids:
        x, y, z = grid.x_mm, grid.y_mm, grid.z_mm
        dx = float(x[1] - x[0]) if x.size > 1 else 0.0
        dy = float(y[1] - y[0]) if y.size > 1 else 0.0
        dz = float(np.max(np.diff(z))) if z.size > 1 else 0.0
        flat = [
            f"{axis} ({what})" for axis, n, what in (
                ("x", x.size, "one column"), ("y", y.size, "one row"),
                ("z", z.size, "one plane: GridFrameOffsetVector (3004,000C) gives no slice spacing"),
            ) if n < 2
        ]  # fmt: skip
        if flat:
            out.append(
                not_evaluable(
                    rule,
                    f"{label}the dose grid's spacing along {', '.join(flat)} cannot be measured; a grid with one "
                    "voxel along an axis has no spacing to grade",
                    category="query",
                    metric="largest voxel dimension",
                )
            )
            continue
        m = Measured(
            None, None, None, "largest voxel dimension", max(dx, dy, dz),
            f"{label}dose grid {dx:.2f} x {dy:.2f} x {dz:.2f} mm: largest " + "{value}",
        )  # fmt: skip
        out.append(grade_measured(rule, m, facts))
    return out


def _coverage(ctx: CaseContext, rule: Rule, targets: bool) -> Outcome:
    """Whether every target (organ) lies inside the dose grid, graded with the protocol's end-cap
    convention and carrying its uncovered volume and grade under every other: a grid cut just
    beyond a structure's last contour covers it under ``none`` and not under ``half_slab``."""
    kind = "target" if targets else "organ at risk"
    structures = [
        s
        for s, spec in ctx.protocol.structures.items()
        if (spec.role == "target") == targets and spec.role != "other" and s in ctx.structure_rois
    ]
    rois = [(s, i) for s in structures for i in ctx.structure_rois[s]]
    if ctx.frames.problem is not None:
        return [not_evaluable(rule, f"{FRAME_UNPROVEN} ({FRAME_RULE})", category="resubmit")]
    if not rois:
        return [not_evaluable(rule, f"no {kind} structure was found in the structure set: nothing to check")]
    chosen = ctx.protocol.end_cap
    uncovered: dict[EndCap, list[tuple[str, float]]] = {chosen: []}
    for s, i in rois:
        for cap, outside in ctx.uncovered_by_end_cap(s, (i,)).items():  # a convention that leaves nothing: none
            listed_here = uncovered.setdefault(cap, [])
            if outside > UNCOVERED_CC:
                listed_here.append((ctx.label(i), outside))
    graded = {cap: _coverage_finding(ctx, rule, kind, len(rois), u) for cap, u in uncovered.items()}
    rows = [EndCapValue(cap.value, graded[cap].value, graded[cap].grade) for cap in EndCap if cap in graded]
    return [with_end_caps(graded[chosen], rows, chosen.value)]


def _coverage_finding(
    ctx: CaseContext, rule: Rule, kind: str, count: int, uncovered: list[tuple[str, float]]
) -> Finding:
    """The coverage finding for the ROIs (name, volume outside the grid) of one convention."""
    worst = max((u for _, u in uncovered), default=0.0)
    listed = ", ".join(f"{name} {u:.2f} cc" for name, u in uncovered)
    if not uncovered:
        return plain(
            rule, "uncovered volume", Grade.PER_PROTOCOL,
            f"every {kind} inside the dose grid ({count} ROIs)", value=0.0, unit="cc",
        )  # fmt: skip
    boundary = ctx.boundary_max_gy()
    rx = ctx.highest_gy or 0.0
    if kind != "target" and rx > 0 and boundary < OAR_BOUNDARY_FRACTION * rx:
        return plain(
            rule, "uncovered volume", Grade.PER_PROTOCOL,
            f"outside the dose grid: {listed}; the highest dose on the grid boundary, {boundary:.2f} Gy, is below "
            f"{OAR_BOUNDARY_FRACTION:.0%} of {rx:.2f} Gy: the uncovered parts receive next to nothing",
            value=round(worst, 2), unit="cc",
        )  # fmt: skip
    return plain(
        rule, "uncovered volume", Grade.NOT_EVALUABLE,
        f"not evaluable: resubmit the dose on a grid that covers every {kind}: outside the dose grid: {listed} "
        f"(highest dose on the grid boundary {boundary:.2f} Gy); metrics of these structures are graded over "
        "what the uncovered part can receive (0 Gy to that boundary dose)",
        value=round(worst, 2), unit="cc", category="resubmit",
    )  # fmt: skip


@_needs_dose
def target_coverage(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    return _coverage(ctx, rule, targets=True)


@_needs_dose
def oar_coverage(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    return _coverage(ctx, rule, targets=False)


HETEROGENEITY_TERMS = ("IMAGE", "ROI_OVERRIDE", "WATER")  # PS3.3 C.8.8.3 defined terms


@_needs_dose
def heterogeneity(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    info = ctx.dose.info if ctx.dose is not None else None
    if info is None:
        return [not_evaluable(rule, "the RT Dose's header is not known (a summed dose without it)", category="query")]
    state = info.heterogeneity
    values = "/".join(info.heterogeneity_values) if info.heterogeneity_values else "absent"
    undefined = [v for v in info.heterogeneity_values if v not in HETEROGENEITY_TERMS]
    if state is Heterogeneity.UNKNOWN:
        return [
            not_evaluable(
                rule,
                "TissueHeterogeneityCorrection (3004,0014) is absent from the RT Dose: whether the dose was "
                "calculated with heterogeneity correction is not stated; ask the centre",
                category="query",
                metric="TissueHeterogeneityCorrection",
                value_text="absent",
            )
        ]
    if undefined and not {"IMAGE", "ROI_OVERRIDE"} & set(info.heterogeneity_values):
        return [
            not_evaluable(
                rule,
                f"TissueHeterogeneityCorrection (3004,0014) is {values}: "
                f"{', '.join(repr(v) for v in undefined)} is not a defined term ({', '.join(HETEROGENEITY_TERMS)}), "
                "so it does not say whether heterogeneity correction was on; ask the centre",
                category="query",
                metric="TissueHeterogeneityCorrection",
                value_text=values,
            )
        ]
    if state is Heterogeneity.OFF:
        g, msg = Grade.DEVIATION_UNACCEPTABLE, f"heterogeneity correction off ({values})"
    else:
        g, msg = Grade.PER_PROTOCOL, f"heterogeneity correction on ({values})"
    return [plain(rule, "TissueHeterogeneityCorrection", g, msg, value_text=values)]


@_needs_dose
def dose_type(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    info = ctx.dose.info if ctx.dose is not None else None
    if info is None:
        return [
            not_evaluable(
                rule, "DoseType (3004,0004) of the RT Dose unknown (a summed dose without its header)", category="query"
            )
        ]
    value = info.dose_type.value
    ok = value in rule.allowed
    return [
        plain(
            rule, "DoseType", Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE,
            f"DoseType {value} (allowed: {', '.join(rule.allowed)})", value_text=value,
        )
    ]  # fmt: skip


def prescription_agreement(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    if not ctx.case.plans:
        return [not_evaluable(rule, "no plan (structure set only)")]
    out: Outcome = []
    for plan, rx in zip(ctx.case.plans, ctx.plan_rx, strict=True):
        if rx.total_gy is None:
            out.append(
                not_evaluable(
                    rule,
                    f"plan {plan.label}: no prescription found to compare (no rx_<target> in the --clinical CSV, "
                    "no TARGET DoseReferenceSequence item with TargetPrescriptionDose (300A,0026), no BeamDose "
                    "(300A,0084) with NumberOfFractionsPlanned (300A,0078))",
                    category="query",
                )
            )
            continue
        if rx.absurd:
            listed = ", ".join(f"{s.value} {show_gy(v)}" for s, v in rx.absurd)
            out.append(not_evaluable(rule, f"plan {plan.label}: a prescription source gives no treatment ({listed})"))
            continue
        if len(rx.candidates) < 2:
            out.append(
                plain(
                    rule, "prescription sources", Grade.PER_PROTOCOL,
                    f"plan {plan.label}: one prescription source ({rx.source.value if rx.source else 'none'}), "
                    "nothing to disagree with", value=0.0, unit="%",
                )
            )  # fmt: skip
            continue
        spread = max(abs(v - rx.total_gy) for _, v in rx.candidates) / rx.total_gy * 100
        listed = ", ".join(f"{s.value} {v:.2f} Gy" for s, v in rx.candidates)
        m = Measured(
            None, None, None, "prescription sources", spread,
            f"plan {plan.label}: {listed}; largest difference " + "{value}",
        )  # fmt: skip
        out.append(grade_measured(rule, m, facts))
    return out


def _treatment_beams(ctx: CaseContext) -> list[Any]:
    return [b for p in ctx.case.plans for b in p.treatment_beams]


def beam_radiation(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    beams = _treatment_beams(ctx)
    if not beams:
        return [not_evaluable(rule, "no treatment beams in the plan")]
    kinds = sorted({b.radiation_type or "absent" for b in beams})
    bad = [f"{b.name} ({b.radiation_type})" for b in beams if b.radiation_type and b.radiation_type not in rule.allowed]
    absent = [b.name or f"beam {b.number}" for b in beams if not b.radiation_type]
    if absent and not bad:
        return [
            not_evaluable(
                rule,
                f"RadiationType (300A,00C6) is absent for {', '.join(absent)}; expected {'/'.join(rule.allowed)}",
                category="query",
                metric="RadiationType",
                value_text="/".join(kinds),
            )
        ]
    if absent:
        bad.append(f"RadiationType (300A,00C6) absent for {', '.join(absent)}")
    return [
        plain(
            rule, "RadiationType", Grade.DEVIATION_UNACCEPTABLE if bad else Grade.PER_PROTOCOL,
            f"beams not {'/'.join(rule.allowed)}: {', '.join(bad)}" if bad
            else f"{len(beams)} treatment beams, all {'/'.join(rule.allowed)}; setup beams ignored",
            value_text="/".join(kinds),
        )
    ]  # fmt: skip


def beam_energy(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    beams = _treatment_beams(ctx)
    if not beams:
        return [not_evaluable(rule, "no treatment beams in the plan")]
    energies = [b.nominal_energy_mev for b in beams]
    if any(e is None for e in energies):
        names = ", ".join(b.name or f"beam {b.number}" for b in beams if b.nominal_energy_mev is None)
        return [
            not_evaluable(
                rule,
                f"NominalBeamEnergy (300A,0114) of the first control point is absent for {names}",
                category="query",
                metric="highest nominal energy",
            )
        ]
    values = [e for e in energies if e is not None]
    m = Measured(
        None, None, None, "highest nominal energy", max(values),
        f"treatment beam energies: {', '.join(sorted({f'{e:g}' for e in values}))} MV; highest " + "{value}",
    )  # fmt: skip
    return [grade_measured(rule, m, facts)]


def gtv_outside_ptv(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    assert rule.structure is not None and rule.within is not None
    for s in (rule.structure, rule.within):
        missing = ctx.unavailable.get(s)
        if missing is not None:
            if missing.present or missing.required:
                return [not_evaluable(rule, f"{s}: {missing.reason}", structure=rule.structure)]
            return [not_applicable(rule, f"optional structure {s} is not contoured")]
        if s in ctx.ambiguous:
            return [not_evaluable(rule, ctx.ambiguous[s], structure=rule.structure)]
    chosen = ctx.protocol.end_cap
    outside = {cap: _outside(ctx, rule.structure, rule.within, cap) for cap in (chosen, *ctx.other_end_caps())}
    if outside[chosen] is None:
        return [not_evaluable(rule, f"{rule.structure}: nothing of it is left to compare", structure=rule.structure)]
    m = Measured(
        rule.structure, None, None, f"{rule.structure} outside {rule.within}", outside[chosen],
        "{value}" + f" of {rule.structure} lies outside {rule.within}",
    )  # fmt: skip
    finding = grade_measured(rule, m, facts)
    rows = []
    for cap in EndCap:  # the outside volume and its grade under every convention
        value = outside.get(cap)
        if value is None:
            continue  # not computed, or nothing of the structure under that convention
        graded = finding if cap is chosen else grade_measured(rule, replace(m, value=value), facts)
        rows.append(EndCapValue(cap.value, graded.value, graded.grade, graded.interval, graded.possible_grades))
    return [with_end_caps(finding, rows, chosen.value)]


def _outside(ctx: CaseContext, structure: str, within: str, cap: EndCap) -> float | None:
    """The volume (cc) of ``structure`` outside ``within`` under one end-cap convention; None
    when ``structure`` has nothing under it."""
    try:
        inner = ctx.stack(structure, (), cap)
    except RtqaError:
        return None
    try:
        outer = ctx.stack(within, (), cap)
    except RtqaError:
        return float(inner.volume_cc)  # nothing of ``within`` under this convention: all of it lies outside
    try:
        return float(combine("-", inner, outer).volume_cc)
    except RtqaError:
        return 0.0  # the difference encloses no volume: nothing lies outside


def dose_algorithm(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    value = ctx.fact("dose_algorithm")
    allowed = ", ".join(rule.allowed)
    if value is None:
        return [
            not_evaluable(
                rule,
                f"dose_algorithm unknown (it is not in DICOM: give it in the --clinical CSV); per protocol if one of "
                f"{allowed}, deviation unacceptable otherwise",
                category="query",
                possible=(
                    (Grade.PER_PROTOCOL, f"dose-algorithm one of {allowed}"),
                    (Grade.DEVIATION_UNACCEPTABLE, "any other dose algorithm"),
                ),
            )
        ]
    ok = any(value.casefold() == a.casefold() for a in rule.allowed)
    return [
        plain(
            rule, "dose algorithm", Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE,
            f"dose algorithm {value!r} (allowed: {allowed})", value_text=value,
        )
    ]  # fmt: skip


def approval_status(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> Outcome:
    if not ctx.case.plans:
        return [not_evaluable(rule, "no plan (structure set only)")]
    out: Outcome = []
    for plan in ctx.case.plans:
        status = (plan.approval_status or "").upper()
        if status == "APPROVED":
            out.append(
                plain(rule, "ApprovalStatus", Grade.PER_PROTOCOL, f"plan {plan.label}: APPROVED", value_text=status)
            )
        elif status in rule.grades_by:
            g = Grade(rule.grades_by[status])
            out.append(
                plain(
                    rule, "ApprovalStatus", g,
                    f"plan {plan.label}: ApprovalStatus {status}: the submitted plan is not the approved plan — "
                    f"{g.value.replace('_', ' ')}", value_text=status,
                )
            )  # fmt: skip
        else:
            out.append(
                not_evaluable(
                    rule,
                    f"plan {plan.label}: ApprovalStatus (300E,0002) is {status or 'absent'}; expected APPROVED, "
                    f"{', '.join(rule.grades_by)}",
                    value_text=status or None,
                    category="query",
                    metric="ApprovalStatus",
                )
            )
    return out


CHECKS: dict[str, Callable[[CaseContext, Rule, Mapping[str, str | None]], Outcome]] = {
    "dose_grid_spacing": dose_grid_spacing,
    "target_coverage": target_coverage,
    "oar_coverage": oar_coverage,
    "heterogeneity": heterogeneity,
    "dose_type": dose_type,
    "prescription_agreement": prescription_agreement,
    "beam_radiation": beam_radiation,
    "beam_energy": beam_energy,
    "gtv_outside_ptv": gtv_outside_ptv,
    "dose_algorithm": dose_algorithm,
    "approval_status": approval_status,
}
