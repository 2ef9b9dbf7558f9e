"""DVH constraints in TG-263 metric syntax: per ROI, on a union, against a prescription.

* A structure that is absent is not evaluable when required, not applicable when optional; one
  that is present but unusable is not evaluable either way.
* An ambiguous one-ROI structure (two ROIs match) is graded on each candidate; the worst grade
  is taken and the finding says so.
* Volume outside the dose grid is uncertain but bounded: it receives between 0 Gy and the
  highest dose on the grid boundary, so the metric is graded at both ends.
* A union graded against the highest prescription (the PTV hot spot) also grades each
  lower-dose target on itself minus the higher-dose targets, against its own prescription, so
  a hot spot in a lower-dose PTV of an integrated boost cannot hide under the higher one. The
  higher-dose targets are first grown by the rule's ``lower_dose_ring`` (the transition ring
  where the dose falls from the higher level, which no plan can keep under the lower one's
  limit); that ring stays graded in the union against the highest prescription. (A
  sequential boost is graded as a composite: its phases' lower-dose targets receive the boost's
  fall-off by design, and per-phase rules are not graded separately yet.)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np

from rtqa.dvh.engine import DVH
from rtqa.dvh.geometry import EndCap, SlabStack, combine, margin
from rtqa.dvh.metrics import MetricError, evaluate_metric
from rtqa.errors import RtqaError
from rtqa.evaluation.context import CaseContext
from rtqa.evaluation.grading import (
    Measured,
    grade_measured,
    not_applicable,
    not_evaluable,
    with_end_caps,
    worst,
    worst_by_end_cap,
)
from rtqa.evaluation.radiobiology import beside, grade_equivalent
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import Rule
from rtqa.report.model import EndCapValue, Finding, NotApplicable

UNCOVERED_CC = 0.005  # below this, volume outside the grid is rounding noise


def check(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> list[Finding | NotApplicable]:
    assert rule.structure is not None and rule.metric is not None
    structure = rule.structure
    missing = ctx.unavailable.get(structure)
    if missing is not None:
        if missing.present or missing.required:
            return [not_evaluable(rule, f"{structure}: {missing.reason}", structure=structure)]
        return [not_applicable(rule, f"optional structure {structure} is not contoured ({missing.reason})")]
    if ctx.dose is None:
        return [not_evaluable(rule, "no dose", structure=structure)]
    spec = ctx.protocol.structures.get(structure)
    many = spec is not None and spec.many
    candidates = ctx.candidates(structure)
    out: list[Finding | NotApplicable] = []
    if len(candidates) > 1:  # ambiguous: every candidate, the worst
        graded = [_one(ctx, rule, facts, structure, cand) for cand in candidates]
        # under every end-cap convention the worst candidate there: the grade may depend on the
        # convention through another candidate than the one graded
        chosen = worst_by_end_cap(graded, worst(graded), ctx.protocol.end_cap.value)
        note = (
            ctx.ambiguous[structure]
            + ": "
            + "; ".join(f"{f.matched_roi} {f.shown_value} {f.grade.value.replace('_', ' ')}" for f in graded)
        )
        out.append(replace(chosen, message=f"{chosen.message} ({note})"))
        return out
    (cand,) = candidates
    if many and rule.scope == "each":
        out.extend(_one(ctx, rule, facts, structure, (i,)) for i in cand)
    else:
        out.append(_one(ctx, rule, facts, structure, cand))
        if rule.reference == "highest" and many and len(ctx.case.plans) == 1:
            out.extend(_lower_levels(ctx, rule, facts, structure, cand))
    return out


def _one(
    ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None], structure: str, rois: tuple[int, ...]
) -> Finding:
    whole = not rois or tuple(ctx.structure_rois.get(structure, ())) == rois
    label = structure if whole or len(rois) > 1 else f"{structure} ({ctx.label(rois[0])})"
    matched = ctx.roi_label(structure, rois)
    how = ctx.how(structure, rois)
    try:
        dvhs = ctx.dvh_by_end_cap(structure, () if whole else rois)
    except RtqaError as exc:
        return not_evaluable(rule, f"{label}: {exc}", structure=structure, roi=matched, how=how)
    reference, ref_target = _reference(ctx, rule, structure, rois)
    key = structure if whole else f"{structure} {rois}"
    shape = (key, lambda cap: ctx.stack(structure, () if whole else rois, cap))
    return _grade_dvh(ctx, rule, facts, dvhs, label, structure, matched, how, reference, ref_target, shape)


def _grade_dvh(
    ctx: CaseContext,
    rule: Rule,
    facts: Mapping[str, str | None],
    dvhs: dict[EndCap, DVH],
    label: str,
    structure: str,
    matched: str | None,
    how: str | None,
    reference: float | None,
    ref_target: str | None,
    shape: tuple[str, Callable[[EndCap], SlabStack]],
) -> Finding:
    """The finding of a rule on one DVH (under every end-cap convention in ``dvhs``; ``shape``
    gives the key of the structure and its stack under each), with its EQD2 beside the physical
    value when the plan is not at 2 Gy per fraction; a rule stated in EQD2 or BED is graded on
    that dose instead."""
    key, stack = shape
    if rule.dose is not None:  # graded in the protocol's end-cap convention, the others beside
        physical = dvhs[ctx.protocol.end_cap]
        return grade_equivalent(ctx, rule, facts, key, stack, tuple(dvhs), physical, label, structure, matched, how)
    finding = _grade_physical(ctx, rule, facts, dvhs, label, structure, matched, how, reference, ref_target)
    return beside(ctx, rule, finding, key, lambda: stack(ctx.protocol.end_cap), structure)


def _grade_physical(
    ctx: CaseContext,
    rule: Rule,
    facts: Mapping[str, str | None],
    dvhs: dict[EndCap, DVH],
    label: str,
    structure: str,
    matched: str | None,
    how: str | None,
    reference: float | None,
    ref_target: str | None,
) -> Finding:
    """The finding on the protocol's convention's DVH, with its value (or interval) and grade
    under every other convention; when the grades differ, it says so (the grade stays the
    protocol's convention's, the plan is flagged)."""
    assert rule.metric is not None
    dvh = dvhs[ctx.protocol.end_cap]
    if rule.metric.is_relative and reference is None:
        return not_evaluable(
            rule, f"{label}: no prescription to relate {rule.metric.text} to", structure=structure, roi=matched, how=how
        )
    name = rule.metric.text.split("[")[0]
    of = f" of {reference:.2f} Gy ({ref_target})" if reference is not None and rule.metric.is_relative else ""
    sentence = f"{label}: {name} = {{value}}{of}"
    try:
        got = _measure(ctx, rule, dvh, reference)
    except MetricError as exc:
        return not_evaluable(rule, str(exc), structure=structure, roi=matched, how=how)
    if got is None:
        size = "" if dvh.uncovered_cc > UNCOVERED_CC else f" (structure {dvh.volume_cc:.3f} cc)"
        return not_evaluable(
            rule, f"{label}: {rule.metric.text} does not exist{size}", structure=structure, roi=matched, how=how
        )
    note = ""
    if got.interval is not None:
        note = (
            f"{dvh.uncovered_cc:.2f} cc of {label} lies outside the dose grid: it receives between 0 Gy "
            f"and the highest dose on the grid boundary, {got.top_gy:.2f} Gy"
        )
    measured = Measured(
        structure, matched, how, rule.metric.text, got.value, sentence, interval=got.interval,
        interval_ends=got.ends, note=note, reference_gy=reference if rule.metric.is_relative else None,
        reference_target=ref_target,
    )  # fmt: skip
    finding = grade_measured(rule, measured, facts)
    rows: list[EndCapValue] = []
    for cap in EndCap:
        if cap is ctx.protocol.end_cap:
            rows.append(EndCapValue(cap.value, finding.value, finding.grade, finding.interval, finding.possible_grades))
            continue
        if cap not in dvhs:
            continue  # nothing left under that convention (an ROI of one thin plane under none)
        try:
            other = _measure(ctx, rule, dvhs[cap], reference)
        except MetricError:
            other = None
        if other is None:
            rows.append(EndCapValue(cap.value, None, Grade.NOT_EVALUABLE))
            continue
        graded = grade_measured(
            rule, replace(measured, value=other.value, interval=other.interval, interval_ends=other.ends), facts
        )
        rows.append(EndCapValue(cap.value, graded.value, graded.grade, graded.interval, graded.possible_grades))
    return with_end_caps(finding, rows, ctx.protocol.end_cap.value)


@dataclass(frozen=True)
class _Value:
    """A metric on one DVH: a number, or an interval over what the volume outside the dose grid
    can receive (``ends`` say which end is which; ``top_gy`` is the highest boundary dose)."""

    value: float | None
    interval: tuple[float, float] | None = None
    ends: tuple[str, str] = ("low end", "high end")
    top_gy: float = 0.0


def _measure(ctx: CaseContext, rule: Rule, dvh: DVH, reference: float | None) -> _Value | None:
    """The rule's metric on one DVH; None when it does not exist. Volume outside the dose grid
    receives between 0 Gy and the highest dose on the grid boundary: the metric at both.
    Raises MetricError."""
    assert rule.metric is not None
    if dvh.uncovered_cc <= UNCOVERED_CC:
        v = evaluate_metric(dvh, rule.metric, reference_dose_gy=reference)
        return None if v is None else _Value(v)
    top = ctx.boundary_max_gy()
    ends = []
    for dose, end in ((0.0, "uncovered part at 0 Gy"), (top, f"uncovered part at {top:.2f} Gy")):
        v = evaluate_metric(with_uncovered_at(dvh, dose), rule.metric, reference_dose_gy=reference)
        if v is None:
            return None
        ends.append((v, end))
    ends.sort()
    return _Value(None, (ends[0][0], ends[1][0]), (ends[0][1], ends[1][1]), top)


def _lower_levels(
    ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None], structure: str, rois: tuple[int, ...]
) -> list[Finding | NotApplicable]:
    """Each lower-dose ROI minus the higher-dose ROIs (grown by the rule's transition ring, if
    any), against its own prescription."""
    levels = {i: ctx.rx_by_roi[i] for i in rois if i in ctx.rx_by_roi}
    ring = rule.lower_dose_ring
    width = ring.width_mm if ring is not None else 0.0
    graded_rule = _with_ring_source(rule)
    out: list[Finding | NotApplicable] = []
    for i, (rx, source) in sorted(levels.items()):
        higher = [j for j, (other, _) in levels.items() if other > rx]
        if not higher:
            continue
        names = " | ".join(ctx.label(j) for j in higher)
        if width > 0:
            names = f"({names}) + {width:g}mm" if len(higher) > 1 else f"{names} + {width:g}mm"
        label = f"{structure} ({ctx.label(i)} - {names})"
        matched = f"{ctx.label(i)} - ({names})" if len(higher) > 1 or width > 0 else f"{ctx.label(i)} - {names}"
        stacks: dict[EndCap, SlabStack] = {}
        for cap in (ctx.protocol.end_cap, *ctx.other_end_caps()):
            try:
                subtract = ctx.stack(structure, tuple(higher), cap)
                if width > 0:
                    subtract = margin(subtract, (width, width, width), name=names)
                stacks[cap] = combine("-", ctx.stack(structure, (i,), cap), subtract, name=label)
            except RtqaError as exc:
                if cap is ctx.protocol.end_cap:
                    out.append(not_evaluable(graded_rule, f"{label}: {exc}", structure=structure, roi=matched))
                    break
        if ctx.protocol.end_cap not in stacks:
            continue
        every = dict(stacks)
        primary = stacks.pop(ctx.protocol.end_cap)
        ctx.dvh_of(label, primary, stacks)
        dvhs = ctx.dvh_by_end_cap(label)
        ref = f"{ctx.label(i)}, {source}"
        shape = (label, lambda cap, every=every: every[cap])
        out.append(_grade_dvh(ctx, graded_rule, facts, dvhs, label, structure, matched, None, rx, ref, shape))
    return out


def _with_ring_source(rule: Rule) -> Rule:
    """The rule as graded outside the transition ring: its source names the ring's, and an
    unconfirmed ring width makes the finding unconfirmed."""
    ring = rule.lower_dose_ring
    if ring is None:
        return rule
    note = f"transition ring {ring.width_mm:g} mm: {ring.source}"
    limits_by = {
        fact: {v: replace(ls, source=f"{ls.source}; {note}", unconfirmed=ls.unconfirmed or ring.unconfirmed)
               for v, ls in by_value.items()}
        for fact, by_value in rule.limits_by.items()
    }  # fmt: skip
    return replace(
        rule, source=f"{rule.source}; {note}", unconfirmed=rule.unconfirmed or ring.unconfirmed, limits_by=limits_by
    )


def _reference(ctx: CaseContext, rule: Rule, structure: str, rois: tuple[int, ...]) -> tuple[float | None, str | None]:
    if rule.reference is None:
        return None, None
    if rule.reference == "highest":
        return ctx.highest_gy, "highest prescription"
    if rule.reference == "own":
        chosen = rois or tuple(ctx.structure_rois.get(structure, ()))
        own = [ctx.rx_by_roi[i] for i in chosen if i in ctx.rx_by_roi]
        if not own:
            return None, None
        best = max(own)
        return best[0], f"{ctx.label(chosen[0]) if len(chosen) == 1 else structure}, {best[1]}"
    values = [ctx.rx_by_roi[i][0] for i in ctx.structure_rois.get(rule.reference, []) if i in ctx.rx_by_roi]
    return (max(values), rule.reference) if values else (None, None)


def with_uncovered_at(dvh: DVH, dose_gy: float) -> DVH:
    """The DVH with its volume outside the dose grid counted at one dose (0 Gy, or the highest
    dose on the grid boundary): the two ends of what that volume can receive."""
    if dvh.uncovered_cc <= 0:
        return dvh
    u = dvh.uncovered_cc
    edges, v = dvh.dose_edges_gy, dvh.volume_ge_cc
    if dose_gy > edges[-1]:  # the boundary is hotter than the structure: extend the bins
        bw = dvh.bin_width_gy
        extra = edges[-1] + bw * np.arange(1, int(np.ceil((dose_gy - edges[-1]) / bw)) + 2)
        edges, v = np.concatenate([edges, extra]), np.concatenate([v, np.zeros(extra.size)])
    v = v + u * (edges <= dose_gy)
    covered = dvh.covered_cc
    mean = None if dvh.mean_gy is None else (dvh.mean_gy * covered + dose_gy * u) / dvh.volume_cc
    if dvh.is_partial:  # the hot end only: the minimum stays unknown
        lo = None
    else:
        lo = dose_gy if dvh.min_gy is None else min(dvh.min_gy, dose_gy)
    hi = dose_gy if dvh.max_gy is None else max(dvh.max_gy, dose_gy)
    return replace(dvh, dose_edges_gy=edges, volume_ge_cc=v, uncovered_cc=0.0, mean_gy=mean, min_gy=lo, max_gy=hi)
