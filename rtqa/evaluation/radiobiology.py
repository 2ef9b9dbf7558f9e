"""EQD2 and BED of a case's constraints: graded when a rule is stated in them, shown beside the
physical value otherwise. Pure.

* Which doses are converted (:func:`dose_parts`): each plan of a course with its own dose and
  its own fractions; a single dose (one plan, or a course exported as one MULTI_PLAN dose) with
  the fraction counts of every fraction group and plan it holds. A dose holding several counts
  has no single dose per fraction per voxel: its equivalent dose is bounded
  (:mod:`rtqa.dvh.radiobiology`) and the metric graded over the interval.
* When the EQD2 is shown beside a physical value (:func:`off_two_gy`): when some target level
  of some plan (a plan's prescription, a target's own prescription, a fraction group) is not
  delivered at 2 Gy per fraction (to 0.01 Gy). Physical limits such as QUANTEC's assume 2 Gy
  fractions.
* A plan whose number of fractions is unknown gets no EQD2, never an assumed one: a rule
  stated in EQD2 is not evaluable and says why; the report warns once that no EQD2 is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from rtqa.case import LoadedCase, Prescription
from rtqa.dvh.engine import DVH, PreparedDose, compute_dvh, prepare_dose
from rtqa.dvh.geometry import EndCap, SlabStack
from rtqa.dvh.metrics import Metric, evaluate_metric
from rtqa.dvh.radiobiology import DosePart, EquivalentDose, Measure, compute_equivalent_dose
from rtqa.evaluation.context import CaseContext
from rtqa.evaluation.grading import Measured, grade_measured, not_evaluable, with_end_caps
from rtqa.model import DoseGrid
from rtqa.protocol.limits import Grade, format_value
from rtqa.protocol.model import AlphaBeta, Rule
from rtqa.report.model import EndCapValue, EquivalentValue, Finding

TWO_GY_TOLERANCE_GY = 0.005  # a dose per fraction that rounds to 2.00 Gy is 2 Gy
UNCOVERED_CC = 0.005  # as in the constraint check: below this, volume outside the grid is noise
BOUND_ENDS = ("each voxel's dose per fraction at its lowest", "each voxel's dose per fraction at its highest")


def dose_parts(case: LoadedCase, prescriptions: Sequence[Prescription]) -> tuple[DosePart, ...] | str:
    """The doses of a case to convert, each with its fraction counts, or why there are none.

    Each plan of a course with its own dose is one part with its fraction groups' counts; a
    case with one dose (one plan, or a course exported as one dose) is one part with the counts
    of every fraction group of every plan (bounded when there are several)."""
    if case.dose is None or not case.plans:
        return "no dose"
    counts: list[tuple[int, ...]] = []
    for plan, rx in zip(case.plans, prescriptions, strict=True):
        groups = tuple(g.fractions for g in rx.groups) or (rx.fractions,)
        if any(n is None or n < 1 for n in groups):
            return (
                f"plan {plan.label}: number of fractions unknown (NumberOfFractionsPlanned absent or not a "
                "positive number): no dose per fraction, so no EQD2 or BED"
            )
        counts.append(tuple(int(n) for n in groups if n is not None))
    own = {pd.plan_uid: pd.dose for pd in case.plan_doses}
    doses = [own.get(p.sop_instance_uid) for p in case.plans]
    if len(case.plans) > 1 and all(d is not None for d in doses):
        parts = zip(case.plans, doses, counts, strict=True)
        return tuple(DosePart(f"plan {p.label}", d, n) for p, d, n in parts if d is not None)
    if len(case.plans) == 1:
        what = f"plan {case.plans[0].label}"
    else:
        what = f"the course dose ({case.dose_choice.source if case.dose_choice else 'as exported'})"
    return (DosePart(what, case.dose, tuple(n for c in counts for n in c)),)


def off_two_gy(ctx: CaseContext) -> tuple[bool | None, str]:
    """Whether some target level of some plan is not delivered at 2 Gy per fraction, and the
    levels that say so (``None`` when a plan's number of fractions is unknown)."""
    levels: list[tuple[str, float]] = []
    single = len(ctx.case.plans) == 1
    for plan, rx in zip(ctx.case.plans, ctx.plan_rx, strict=True):
        if not rx.fractions:
            return None, f"plan {plan.label}: number of fractions unknown"
        name = f"plan {plan.label}" if not single else "plan"
        if rx.total_gy is not None:
            levels.append((f"{name} {rx.total_gy:.2f} Gy / {rx.fractions}", rx.total_gy / rx.fractions))
        targets = {t.name: t.total_gy for t in rx.targets}
        if single:  # a target's own prescription (dose reference, case-report form, name)
            targets.update({ctx.label(i): v for i, (v, _) in ctx.rx_by_roi.items()})
        for target, total in sorted(targets.items()):
            levels.append((f"{target} {total:.2f} Gy / {rx.fractions}", total / rx.fractions))
        if len(rx.groups) > 1:
            known = [g for g in rx.groups if g.per_fraction_gy is not None and g.fractions]
            beam_total = sum(g.total_gy or 0.0 for g in known)
            scale = rx.total_gy / beam_total if rx.total_gy and beam_total and len(known) == len(rx.groups) else 1.0
            for g in known:
                assert g.per_fraction_gy is not None
                levels.append((f"{name} fraction group {g.number}", g.per_fraction_gy * scale))
    if not levels:
        return None, "no prescription: the dose per fraction of the targets is unknown"
    off: dict[str, list[str]] = {}
    for what, d in levels:
        if abs(d - 2.0) > TWO_GY_TOLERANCE_GY:
            off.setdefault(f"{d:.2f}", []).append(what)
    if not off:
        return False, "every target level at 2 Gy per fraction"
    return True, "; ".join(f"{d} Gy per fraction: {', '.join(whats)}" for d, whats in off.items())


@dataclass(frozen=True)
class _Ends:
    """A metric on one or more equivalent-dose DVHs: one value, an interval, or why neither."""

    value: float | None
    interval: tuple[float, float] | None
    ends: tuple[str, str]
    missing: str | None
    note: str


class Radiobiology:
    """The equivalent doses of one case, converted once per (measure, α/β), and their DVHs."""

    def __init__(self, ctx: CaseContext) -> None:
        self.ctx = ctx
        self.parts = dose_parts(ctx.case, ctx.plan_rx)
        self.shown, self.why = off_two_gy(ctx) if ctx.case.plans else (False, "no plan")
        self._doses: dict[tuple[Measure, float], EquivalentDose] = {}
        self._prepared: dict[int, PreparedDose] = {}
        self._dvhs: dict[tuple[str, Measure, float, int], DVH] = {}

    def dose(self, measure: Measure, alpha_beta_gy: float) -> EquivalentDose:
        assert not isinstance(self.parts, str)
        key = (measure, alpha_beta_gy)
        if key not in self._doses:
            self._doses[key] = compute_equivalent_dose(self.parts, measure=measure, alpha_beta_gy=alpha_beta_gy)
        return self._doses[key]

    def dvhs(self, key: str, stack: SlabStack, eq: EquivalentDose) -> list[tuple[DVH, DoseGrid]]:
        """The DVH of ``stack`` on the equivalent dose: one, or two for the ends of a bound."""
        grids = [eq.low] if eq.exact else [eq.low, eq.high]
        out = []
        for grid in grids:
            k = (key, eq.measure, eq.alpha_beta_gy, id(grid))
            if k not in self._dvhs:
                prepared = self._prepared.get(id(grid))
                if prepared is None:
                    prepared = self._prepared[id(grid)] = prepare_dose(grid)
                self._dvhs[k] = compute_dvh(stack, grid, prepared=prepared)
            out.append((self._dvhs[k], grid))
        return out

    def metric_on(self, key: str, stack: SlabStack, eq: EquivalentDose, metric: Metric) -> _Ends:
        """The metric on the equivalent dose, at both ends of the bound and of the volume
        outside the dose grid (0 Gy, or the highest equivalent dose on the grid boundary)."""
        from rtqa.evaluation.checks.constraints import with_uncovered_at  # the check imports this module

        values: list[tuple[float, str]] = []
        notes: list[str] = []
        pairs = self.dvhs(key, stack, eq)
        for j, (dvh, grid) in enumerate(pairs):
            bound = "" if len(pairs) == 1 else BOUND_ENDS[j]
            if dvh.uncovered_cc > UNCOVERED_CC:
                top = _boundary_max(grid)
                note = (
                    f"{dvh.uncovered_cc:.2f} cc lies outside the dose grid: it receives between 0 Gy and "
                    f"{top:.2f} Gy {eq.measure.label}"
                )
                if note not in notes:
                    notes.append(note)
                ends = ((0.0, "uncovered part at 0 Gy"), (top, f"uncovered part at {top:.2f} Gy"))
                for d, what in ends:
                    v = evaluate_metric(with_uncovered_at(dvh, d), metric)
                    if v is None:
                        return _Ends(None, None, ("", ""), f"{metric.text} does not exist", "")
                    values.append((v, ", ".join(p for p in (bound, what) if p)))
            else:
                v = evaluate_metric(dvh, metric)
                if v is None:
                    return _Ends(None, None, ("", ""), f"{metric.text} does not exist ({dvh.volume_cc:.3f} cc)", "")
                values.append((v, bound))
        if not eq.exact:
            notes.append("the dose per fraction of each voxel is bounded, not known (see the basis)")
        values.sort()
        lo, hi = values[0], values[-1]
        if lo[0] == hi[0]:
            return _Ends(lo[0], None, ("", ""), None, "; ".join(notes))
        return _Ends(None, (lo[0], hi[0]), (lo[1], hi[1]), None, "; ".join(notes))


def _boundary_max(grid: DoseGrid) -> float:
    d = grid.dose_gy
    faces = [d[0], d[-1], d[:, 0], d[:, -1], d[:, :, 0], d[:, :, -1]]
    return float(max(float(np.max(f)) for f in faces))


def radiobiology(ctx: CaseContext) -> Radiobiology:
    """The case's :class:`Radiobiology`, made once per context."""
    rb = ctx.radiobiology
    if rb is None:
        rb = ctx.radiobiology = Radiobiology(ctx)
        if isinstance(rb.parts, str) and ctx.case.dose is not None and ctx.protocol.alpha_beta:
            ctx.warnings.append(f"no EQD2 shown: {rb.parts}")
    return rb


def grade_equivalent(
    ctx: CaseContext,
    rule: Rule,
    facts: Mapping[str, str | None],
    key: str,
    stack: Callable[[EndCap], SlabStack],
    caps: Sequence[EndCap],
    physical: DVH,
    label: str,
    structure: str,
    matched: str | None,
    how: str | None,
) -> Finding:
    """A rule stated in EQD2 or BED, graded on the equivalent dose (physical value beside it) in
    the protocol's end-cap convention, and its value and grade under the other conventions of
    ``caps`` (``stack`` gives the structure under each) beside it."""
    assert rule.dose is not None and rule.metric is not None
    measure = Measure(rule.dose.measure)
    ab = rule.dose.alpha_beta
    rb = radiobiology(ctx)
    name = rule.metric.text.split("[")[0]
    if isinstance(rb.parts, str):
        return not_evaluable(
            rule, f"{label}: {name} in {measure.label} needs the dose per fraction: {rb.parts}",
            structure=structure, roi=matched, how=how,
        )  # fmt: skip
    eq = rb.dose(measure, ab.value_gy)
    got = rb.metric_on(key, stack(ctx.protocol.end_cap), eq, rule.metric)
    if got.missing is not None:
        return not_evaluable(rule, f"{label}: {got.missing}", structure=structure, roi=matched, how=how)
    phys = _physical(physical, rule.metric)
    sentence = f"{label}: {name} {measure.label} ({ab.describe()}) = {{value}}"
    measured = Measured(
        structure, matched, how, rule.metric.text, got.value, sentence,
        interval=got.interval, interval_ends=got.ends if got.interval else ("low end", "high end"),
        note="; ".join(p for p in (f"physical {_show(phys, rule.unit)}", f"{measure.label} {eq.statement}") if p),
    )  # fmt: skip
    finding = grade_measured(rule, measured, facts)
    value = EquivalentValue(
        measure.value, True, rule.metric.text, finding.value, rule.unit, ab.value_gy, ab.source,
        ab.unconfirmed, phys, rule.unit, finding.interval, got.note,
        f"the rule is stated in {measure.label}; {eq.statement}",
    )  # fmt: skip
    finding = replace(finding, unconfirmed=finding.unconfirmed or ab.unconfirmed, equivalent=value)
    rows: list[EndCapValue] = []
    for cap in EndCap:
        if cap is ctx.protocol.end_cap:
            rows.append(EndCapValue(cap.value, finding.value, finding.grade, finding.interval, finding.possible_grades))
            continue
        if cap not in caps:
            continue  # nothing left under that convention
        other = rb.metric_on(f"{key} [{cap.value}]", stack(cap), eq, rule.metric)
        if other.missing is not None:
            rows.append(EndCapValue(cap.value, None, Grade.NOT_EVALUABLE))
            continue
        ends = other.ends if other.interval else ("low end", "high end")
        graded = grade_measured(rule, replace(measured, value=other.value, interval=other.interval,
                                              interval_ends=ends), facts)  # fmt: skip
        rows.append(EndCapValue(cap.value, graded.value, graded.grade, graded.interval, graded.possible_grades))
    return with_end_caps(finding, rows, ctx.protocol.end_cap.value)


def beside(
    ctx: CaseContext, rule: Rule, finding: Finding, key: str, stack: Callable[[], SlabStack], structure: str
) -> Finding:
    """The finding with its EQD2 beside the physical value, for information, when some target
    level of the plan is not at 2 Gy per fraction and the protocol states an α/β for it."""
    if rule.metric is None or (finding.value is None and finding.interval is None):
        return finding
    ab: AlphaBeta | None = ctx.protocol.alpha_beta_for(structure)
    if ab is None:
        return finding
    rb = radiobiology(ctx)
    if isinstance(rb.parts, str) or rb.shown is False:
        return finding
    metric = _absolute(rule.metric)
    if metric is None:
        value = EquivalentValue(
            "eqd2", False, rule.metric.text, None, rule.unit, ab.value_gy, ab.source, ab.unconfirmed,
            finding.value, finding.unit, note="not shown: the metric's threshold is relative to the prescription",
        )  # fmt: skip
        return replace(finding, equivalent=value)
    eq = rb.dose(Measure.EQD2, ab.value_gy)
    got = rb.metric_on(key, stack(), eq, metric)
    why = f"shown because {rb.why}" if rb.shown else f"shown because it cannot be ruled out ({rb.why})"
    value = EquivalentValue(
        "eqd2", False, metric.text, got.value, metric.output_unit, ab.value_gy, ab.source, ab.unconfirmed,
        finding.value, finding.unit, got.interval, got.missing or got.note, f"{why}; {eq.statement}",
    )  # fmt: skip
    return replace(finding, equivalent=value)


def _absolute(metric: Metric) -> Metric | None:
    """The metric in Gy when its dose output is relative to the prescription (D95%[%] ->
    D95%[Gy]); None when its dose threshold is (V95%[%]: the prescription's own EQD2 would be
    needed)."""
    if metric.value_unit == "%" and metric.kind in ("V", "CV"):
        return None
    if metric.output_unit == "%" and metric.kind in ("D", "DC", "Mean", "Max", "Min"):
        return replace(metric, text=metric.text.rsplit("[", 1)[0] + "[Gy]", output_unit="Gy")
    return metric


def _physical(dvh: DVH, metric: Metric) -> float | None:
    return evaluate_metric(dvh, metric) if dvh.uncovered_cc <= UNCOVERED_CC else None


def _show(value: float | None, unit: str) -> str:
    return format_value(value, unit) if value is not None else "- (part outside the dose grid)"
