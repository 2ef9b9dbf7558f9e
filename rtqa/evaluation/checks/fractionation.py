"""Fractionation rules: dose per fraction (per plan and per prescription level) and total dose."""

from __future__ import annotations

from collections.abc import Mapping

from rtqa.case import Prescription
from rtqa.evaluation.context import CaseContext
from rtqa.evaluation.grading import Measured, grade_measured, not_evaluable
from rtqa.evaluation.prescription import describe_groups
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
        if len(rx.groups) > 1:
            out.extend(_per_group(plan.label, rx, rule, facts))
            continue
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


def _per_group(
    label: str, rx: Prescription, rule: Rule, facts: Mapping[str, str | None]
) -> list[Finding | NotApplicable]:
    """Dose per fraction of each fraction group of a plan with several (a boost as a second group).

    A group delivers its own dose per fraction: the plan's total over all its fractions is a
    mean of the groups and no group's dose. Each group's dose per fraction is the sum of its
    BeamDose values, scaled to the plan's prescription when the BeamDose total differs from it
    (BeamDose may be a nominal split; the agreement of the two is the RX_AGREEMENT rule's)."""
    out: list[Finding | NotApplicable] = []
    beam_total = sum(g.total_gy or 0.0 for g in rx.groups)
    complete = all(g.total_gy is not None for g in rx.groups) and beam_total > 0
    scale = rx.total_gy / beam_total if complete and rx.total_gy else 1.0
    for g in rx.groups:
        if g.per_fraction_gy is None or not g.fractions:
            out.append(
                not_evaluable(
                    rule,
                    f"plan {label}, fraction group {g.number}: number of fractions or BeamDose unknown "
                    "(a plan with several fraction groups is graded per group)",
                    metric=_metric(rule),
                    category="query",
                )
            )
            continue
        scaled = f", scaled by {scale:.4f} to the {rx.total_gy:.2f} Gy prescription" if abs(scale - 1) > 1e-6 else ""
        measured = Measured(
            None,
            None,
            None,
            "dose per fraction",
            g.per_fraction_gy * scale,
            f"plan {label}, fraction group {g.number}: {g.fractions} fractions of "
            + "{value}"
            + f" (BeamDose per fraction{scaled})",
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
    groups = [g for rx in ctx.plan_rx for g in rx.groups]
    if len(groups) > len(ctx.plan_rx):  # a plan of several fraction groups: the total is over all of them
        detail += f"({describe_groups(tuple(groups))}) "
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
