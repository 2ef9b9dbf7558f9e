"""The checks of every protocol rule kind, one small module each, and the registry that runs them.

A check is a pure function ``(context, rule, facts) -> list of Finding | NotApplicable``. The
runner applies what every rule shares first: a rule whose clinical facts exclude the patient is
listed as not applicable, with the reason, and never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

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
    facts = {f: ctx.fact(f) for f in rule.facts()}
    why = applicability(rule, facts)
    if why is not None:
        return [not_applicable(rule, why)]
    check = TECHNICAL[rule.check or ""] if rule.kind == "technical" else BY_KIND[rule.kind]
    return check(ctx, rule, facts)
