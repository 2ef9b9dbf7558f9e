"""Eligibility: clinical facts in an allowed list, and structure metrics (the normal-liver volume)
that need no dose, so that a structure set alone gives the verdict before planning."""

from __future__ import annotations

from collections.abc import Mapping

from rtqa.dvh.geometry import EndCap
from rtqa.dvh.metrics import evaluate_metric
from rtqa.errors import RtqaError
from rtqa.evaluation.context import CaseContext
from rtqa.evaluation.grading import limit_text, with_end_caps
from rtqa.protocol.limits import Grade, format_value, round_value
from rtqa.protocol.loader import Rule
from rtqa.report.model import EndCapValue, Finding, NotApplicable


def _item(
    ctx: CaseContext, rule: Rule, g: Grade, message: str, value: float | None = None, value_text: str | None = None
) -> Finding:
    structure = rule.structure
    roi = ctx.roi_label(structure) if structure and value is not None else None
    how = ctx.how(structure) if structure and value is not None else None
    return Finding(
        rule.id,
        structure,
        roi,
        how,
        rule.metric.text if rule.metric else (rule.check or rule.id),
        value,
        rule.unit,
        g,
        message,
        rule.source,
        rule.unconfirmed,
        per_protocol=rule.per_protocol,
        category="eligibility",
        value_text=value_text,
    )


def check(ctx: CaseContext, rule: Rule, facts: Mapping[str, str | None]) -> list[Finding | NotApplicable]:
    if rule.check is not None:  # a clinical fact
        fact = ctx.fact(rule.check)
        name = rule.check.replace("_", "-")
        possible = ctx.possible(rule.check)
        if fact is None and possible:
            fits = [v for v in possible if v in rule.allowed]
            shown = "/".join(possible)
            if len(fits) == len(possible) or not fits:
                verdict = "eligible" if fits else "not eligible"
                message = (
                    f"{name} {shown} (the score is not known; {verdict} whichever it is: {', '.join(rule.allowed)})"
                )
                g = Grade.PER_PROTOCOL if fits else Grade.DEVIATION_UNACCEPTABLE
                return [_item(ctx, rule, g, message, value_text=shown)]
            bad = [v for v in possible if v not in rule.allowed]
            return [
                _item(
                    ctx,
                    rule,
                    Grade.NOT_EVALUABLE,
                    f"not evaluable: {name} {shown} (the score is not known): eligible if {', '.join(fits)}, "
                    f"not eligible if {', '.join(bad)}; give the score in the --clinical CSV",
                    value_text=shown,
                )
            ]
        if fact is None:
            return [
                _item(
                    ctx,
                    rule,
                    Grade.NOT_EVALUABLE,
                    f"not evaluable: needs the clinical fact {rule.check} (--clinical CSV)",
                )
            ]
        ok = fact in rule.allowed
        verdict = "eligible" if ok else "not eligible"
        message = f"{name} {fact} ({verdict}: {', '.join(rule.allowed)})"
        return [_item(ctx, rule, Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE, message, value_text=fact)]
    assert rule.structure is not None and rule.metric is not None and rule.per_protocol is not None
    missing = ctx.unavailable.get(rule.structure)
    if missing is not None:
        return [_item(ctx, rule, Grade.NOT_EVALUABLE, f"not evaluable: {rule.structure}: {missing.reason}")]
    if rule.structure in ctx.ambiguous:
        return [_item(ctx, rule, Grade.NOT_EVALUABLE, f"not evaluable: {ctx.ambiguous[rule.structure]}")]
    value: float | None
    try:
        if rule.metric.kind == "Volume":
            value = ctx.stack(rule.structure).volume_cc  # no dose needed: eligibility before planning
        elif ctx.dose is None:
            return [_item(ctx, rule, Grade.NOT_EVALUABLE, "not evaluable: no dose")]
        else:
            value = evaluate_metric(ctx.dvh(rule.structure), rule.metric)
    except RtqaError as exc:
        return [_item(ctx, rule, Grade.NOT_EVALUABLE, f"not evaluable: {rule.structure}: {exc}")]
    if value is None:
        return [
            _item(ctx, rule, Grade.NOT_EVALUABLE, f"not evaluable: {rule.structure}: {rule.metric.text} does not exist")
        ]
    rounded = round_value(value, rule.unit)
    ok = rule.per_protocol.met(rounded)
    message = (
        f"{rule.structure}: {rule.metric.text.split('[')[0]} = {format_value(rounded, rule.unit)} "
        f"({'meets' if ok else 'fails'} {limit_text(rule.per_protocol, rule.unit)})"
    )
    item = _item(ctx, rule, Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE, message, rounded)
    return [with_end_caps(item, _by_end_cap(ctx, rule, item), ctx.protocol.end_cap.value)]


def _by_end_cap(ctx: CaseContext, rule: Rule, item: Finding) -> list[EndCapValue]:
    """The eligibility value and verdict under every end-cap convention (a volume such as the
    normal liver's depends on where the structure's ends are taken to lie)."""
    assert rule.structure is not None and rule.metric is not None and rule.per_protocol is not None
    rows = []
    for cap in EndCap:
        if cap is ctx.protocol.end_cap:
            rows.append(EndCapValue(cap.value, item.value, item.grade))
            continue
        try:
            if rule.metric.kind == "Volume":
                value: float | None = ctx.stack(rule.structure, (), cap).volume_cc
            else:
                dvh = ctx.dvh_by_end_cap(rule.structure).get(cap)
                if dvh is None:
                    continue  # nothing left under that convention
                value = evaluate_metric(dvh, rule.metric)
        except RtqaError:
            continue  # nothing left under that convention
        if value is None:
            rows.append(EndCapValue(cap.value, None, Grade.NOT_EVALUABLE))
            continue
        rounded = round_value(value, rule.unit)
        ok = rule.per_protocol.met(rounded)
        rows.append(EndCapValue(cap.value, rounded, Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE))
    return rows
