"""The checks of every protocol rule kind, one small module each, and the registry that runs them.

A check is a pure function ``(context, rule, facts) -> list of Finding | NotApplicable``. The
runner applies what every rule shares first: a rule whose clinical facts exclude the patient is
listed as not applicable, with the reason, and never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from rtqa.deadline import check_time
from rtqa.evaluation.checks import constraints, eligibility, fractionation, technical
from rtqa.evaluation.context import CaseContext
from rtqa.evaluation.grading import applicability, not_applicable
from rtqa.protocol.loader import Rule
from rtqa.report.model import Finding, NotApplicable

Outcome = list[Finding | NotApplicable]
Check = Callable[[CaseContext, Rule, Mapping[str, str | None]], Outcome]

TECHNICAL: dict[str, Check] = technical.CHECKS
BY_KIND: dict[str, Check] = {
    "fractionation": fractionation.check,
    "constraint": constraints.check,
    "eligibility": eligibility.check,
}


def run_rule(ctx: CaseContext, rule: Rule) -> Outcome:
    """The findings of one rule (or why it does not apply)."""
    check_time()  # the plan's time budget, for threads that no timer signal reaches
    facts = {f: ctx.fact(f) for f in rule.facts()}
    why = applicability(rule, facts)
    if why is None:
        rule, why = narrowed(rule, {f: p for f in rule.facts() if (p := ctx.possible(f)) is not None})
    if why is not None:
        return [not_applicable(rule, why)]
    check = TECHNICAL[rule.check or ""] if rule.kind == "technical" else BY_KIND[rule.kind]
    return check(ctx, rule, facts)


def narrowed(rule: Rule, possible: Mapping[str, tuple[str, ...]]) -> tuple[Rule, str | None]:
    """The rule restricted to the values a fact known in part may take (Child-Pugh class B
    without its score: B7, B8, B9), so that the grading goes over those values only, as over
    any unknown fact; or why the rule does not apply when none of them is one it applies to."""
    if not possible:
        return rule, None
    gated = rule.facts()
    when = dict(rule.when)
    limits_by = {f: dict(v) for f, v in rule.limits_by.items()}
    for fact, values in possible.items():
        keep = tuple(v for v in gated[fact] if v in values)
        if not keep:
            return rule, (
                f"{fact.replace('_', '-')} one of {', '.join(values)} (known in part): the rule applies to "
                f"{', '.join(gated[fact])} only"
            )
        if fact in when:
            when[fact] = tuple(v for v in when[fact] if v in values)
        if fact in limits_by:
            limits_by[fact] = {v: lim for v, lim in limits_by[fact].items() if v in values}
    return replace(rule, when=when, limits_by=limits_by), None
