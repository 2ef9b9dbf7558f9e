"""Fractionation rules: dose per fraction (per plan and per prescription level) and total dose."""

from __future__ import annotations

from collections.abc import Mapping

from rtqa.case import Prescription
from rtqa.evaluation.context import CaseContext
from rtqa.evaluation.grading import Measured, grade_measured, not_evaluable
from rtqa.model import Plan
from rtqa.protocol.loader import Rule
from rtqa.report.model import Finding, NotApplicable


def check(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> list[Finding | NotApplicable]:
    if not ctx.case.plans:
        return [not_evaluable(rule, "no plan (structure set only)", metric=_metric(rule))]
    if rule.id == "FX_DOSE_PER_FRACTION":
        return _per_fraction(ctx, rule, facts)
    return _total(ctx, rule, facts)


def _per_fraction(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> list[Finding | NotApplicable]:
    out: list[Finding | NotApplicable] = []
    for plan, rx in zip(ctx.case.plans, ctx.plan_rx, strict=True):
        if rx.total_gy is None or not rx.fractions:
            out.append(
                not_evaluable(rule, f"plan {plan.label}: {_missing(plan, rx)}", metric=_metric(rule), category="query")
            )
            continue
        levels = sorted({t.total_gy for t in rx.targets} or {rx.total_gy}, reverse=True)
        for level in levels:
            names = [t.name for t in rx.targets if t.total_gy == level]
            label = f" ({', '.join(names)})" if names and len(levels) > 1 else ""
            measured = Measured(
                names[0] if len(names) == 1 and len(levels) > 1 else None,
                None,
                None,
                "dose per fraction",
                level / rx.fractions,
                f"plan {plan.label}{label}: {level:.2f} Gy in {rx.fractions} fractions = " + "{value} per fraction",
            )
            out.append(grade_measured(rule, measured, facts))
    return out


def _total(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> list[Finding | NotApplicable]:
    if ctx.total_gy is None:
        missing = "; ".join(
            f"plan {p.label}: {_missing(p, rx)}" for p, rx in zip(ctx.case.plans, ctx.plan_rx, strict=True)
        )
        return [
            not_evaluable(rule, f"total prescribed dose unknown ({missing})", metric=_metric(rule), category="query")
        ]
    plans = " + ".join(f"{rx.total_gy:.2f} Gy" for rx in ctx.plan_rx)
    sources = ", ".join(sorted({rx.source.value for rx in ctx.plan_rx if rx.source}))
    detail = f"{plans} = " if len(ctx.plan_rx) > 1 else ""
    measured = Measured(
        None, None, None, "total dose", ctx.total_gy, f"total dose {detail}" + "{value}" + f" (from {sources})"
    )
    return [grade_measured(rule, measured, facts)]


def _missing(plan: Plan, rx: Prescription) -> str:
    """What the plan left out that the prescription or the number of fractions needs, by attribute."""
    parts = []
    if rx.total_gy is None:
        parts.append(
            "no prescription: no rx_<target> in the --clinical CSV, no TARGET dose reference with "
            "TargetPrescriptionDose (300A,0026), no BeamDose (300A,0084) on every beam"
        )
    if not plan.fraction_groups:
        parts.append("FractionGroupSequence (300A,0070) is absent: number of fractions unknown")
    elif rx.fractions is None:
        parts.append("NumberOfFractionsPlanned (300A,0078) is absent")
    elif rx.fractions == 0:
        parts.append("NumberOfFractionsPlanned (300A,0078) is 0")
    return "; ".join(parts) or "prescription or number of fractions unknown"


def _metric(rule: Rule) -> str:
    return "dose per fraction" if rule.id == "FX_DOSE_PER_FRACTION" else "total dose"
