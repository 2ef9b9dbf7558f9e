"""The one grading function every check shares (DESIGN.md, "How a verdict is reached"). Pure.

* A value is rounded to its report precision, then graded against per-protocol and
  variation-acceptable limits.
* A rule gated by clinical facts (``when``, ``limits_by``) applies only to the fact values it
  names: a known value outside them makes it *not applicable* (listed with the reason, never
  dropped). An unknown fact is graded under every value the rule applies to: one grade on every
  branch is the grade (the finding says the fact was unknown and did not matter); different
  grades make the finding not evaluable, listing the grade of each branch, and the plan takes
  its best case.
* A value known only within an interval (volume outside the dose grid, at 0 Gy or at the highest
  dose on the grid boundary) is graded at both ends: the same grade is the grade, otherwise not
  evaluable with the interval shown.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from rtqa.protocol.limits import Grade, Limit, format_value, grade, round_value
from rtqa.protocol.loader import LimitSet, Rule
from rtqa.report.model import EndCapValue, Finding, NotApplicable

SYMBOL = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}


def limit_text(limit: Limit | None, unit: str) -> str:
    if limit is None:
        return ""
    if limit.op == "between":
        return f"{limit.low:g}–{limit.high:g} {unit}".strip()
    return f"{SYMBOL[limit.op]} {limit.value:g} {unit}".strip()


def limits_sentence(limits: LimitSet, unit: str) -> str:
    text = f"per protocol {limit_text(limits.per_protocol, unit)}"
    if limits.variation is not None:
        text += f"; variation acceptable {limit_text(limits.variation, unit)}"
    return text


def _limits_by_branch(entries: list[tuple[Grade, str, str, LimitSet]], unit: str) -> str:
    """The limits applied, grouped by the fact values that share them."""
    groups: dict[str, list[str]] = {}
    for _, values, _, lim in entries:
        if values not in groups.setdefault(limits_sentence(lim, unit), []):
            groups[limits_sentence(lim, unit)].append(values)
    if len(groups) == 1:
        return next(iter(groups))
    return "; ".join(f"{', '.join(values)}: {sentence}" for sentence, values in groups.items())


def grade_label(g: Grade) -> str:
    return g.value.replace("_", " ")


@dataclass(frozen=True)
class Measured:
    """What a check measured for one finding, before grading.

    ``value`` is the number (None with ``interval`` when it is only bounded); ``sentence`` is
    the finding's message with ``{value}`` where the value goes.
    """

    structure: str | None
    roi: str | None
    how: str | None
    metric: str
    value: float | None
    sentence: str
    interval: tuple[float, float] | None = None
    interval_ends: tuple[str, str] = ("low end", "high end")
    reference_gy: float | None = None
    reference_target: str | None = None
    unit: str | None = None  # the rule's unit unless given
    category: str = "plan_quality"
    note: str = ""  # appended to the message whatever the grade (e.g. an ambiguity)


def applicability(rule: Rule, facts: Mapping[str, str | None]) -> str | None:
    """Why a rule does not apply under the known facts, or None when it applies (or may)."""
    for fact, values in rule.facts().items():
        value = facts.get(fact)
        if value is not None and value not in values:
            return f"{fact.replace('_', '-')} {value}: the rule applies to {', '.join(values)} only"
    return None


def branches(rule: Rule, facts: Mapping[str, str | None]) -> list[tuple[dict[str, str], LimitSet, str]]:
    """(fact values, limits, condition text) of every branch the rule must be graded under."""
    gated = rule.facts()
    known = {f: v for f, v in facts.items() if v is not None and f in gated}
    unknown = [f for f in gated if f not in known]
    out = []
    for combo in itertools.product(*(gated[f] for f in unknown)):
        values = {**known, **dict(zip(unknown, combo, strict=True))}
        condition = ", ".join(f"{f.replace('_', '-')} {v}" for f, v in zip(unknown, combo, strict=True))
        out.append((values, rule.limits_for(values), condition))
    return out


def grade_measured(rule: Rule, m: Measured, facts: Mapping[str, str | None]) -> Finding:
    """Grade a measured value under the rule's limits, across unknown facts and intervals.

    Every branch (a value of an unknown fact, an end of an interval) is graded; one grade on all
    of them is the grade, otherwise the finding is not evaluable and lists each grade with the
    branches that give it (the plan then takes the best of them).
    """
    unit = m.unit if m.unit is not None else rule.unit
    numbers = [v for v in (m.value, *(m.interval or ())) if v is not None]
    if not all(math.isfinite(v) for v in numbers):
        # an infinite or NaN value reaches no report and grades nothing (a prescription of 1e-320
        # once gave a coverage of "inf %" graded per protocol)
        return not_evaluable(
            rule,
            f"{m.metric} is not a finite number ({', '.join(f'{v:g}' for v in numbers)})",
            structure=m.structure,
            roi=m.roi,
            how=m.how,
            metric=m.metric,
        )
    rounded = None if m.value is None else round_value(m.value, unit)
    interval = None if m.interval is None else (round_value(m.interval[0], unit), round_value(m.interval[1], unit))
    if interval is not None and interval[0] == interval[1]:
        rounded, interval = interval[0], None
    if rounded is not None:
        shown = format_value(rounded, unit)
    elif interval is not None:
        shown = f"{format_value(interval[0], unit)}–{format_value(interval[1], unit)}"
    else:
        shown = "-"
    text = m.sentence.replace("{value}", shown)
    unknown = [f for f in rule.facts() if facts.get(f) is None]
    # (grade, fact values of the branch, end of the interval, limits)
    entries: list[tuple[Grade, str, str, LimitSet]] = []
    for _, lim, cond in branches(rule, facts):
        values = cond.split(" ", 1)[1] if " " in cond else cond
        if rounded is not None:
            entries.append((grade(rounded, lim.per_protocol, lim.variation), values, "", lim))
            continue
        assert interval is not None
        ends = [(grade(v, lim.per_protocol, lim.variation), f"{e} ({format_value(v, unit)})")
                for v, e in zip(interval, m.interval_ends, strict=True)]  # fmt: skip
        if ends[0][0] is ends[1][0]:
            entries.append((ends[0][0], values, "", lim))
        else:
            entries.extend((g, values, e, lim) for g, e in ends)
    grades = {e[0] for e in entries}
    unconfirmed = rule.unconfirmed or any(lim.unconfirmed for *_, lim in entries)
    sources = list(dict.fromkeys(lim.source for *_, lim in entries if lim.source)) or [rule.source]
    same_limits = len({(lim.per_protocol, lim.variation) for *_, lim in entries}) == 1
    per_protocol, variation = (entries[0][3].per_protocol, entries[0][3].variation) if same_limits else (None, None)
    facts_name = ", ".join(f.replace("_", "-") for f in unknown)
    possible: tuple[tuple[Grade, str], ...] = ()
    if len(grades) == 1:
        g = grades.pop()
        message = f"{text} — {grade_label(g)} ({_limits_by_branch(entries, unit)})"
        if unknown:
            values = ", ".join(dict.fromkeys(v for _, v, _, _ in entries))
            message += (
                f"; {facts_name} unknown: the grade is the same under every value the rule applies to ({values}), "
                "so it did not matter"
            )
        if interval is not None:
            message += f"; the same grade at both ends ({m.interval_ends[0]}, {m.interval_ends[1]})"
    else:
        g = Grade.NOT_EVALUABLE
        by_grade: dict[Grade, dict[tuple[str, str], list[str]]] = {}
        for eg, values, end, lim in entries:
            group = by_grade.setdefault(eg, {}).setdefault((end, limits_sentence(lim, unit)), [])
            if values not in group:
                group.append(values)
        by_grade_text: dict[Grade, list[str]] = {}
        for eg, groups in by_grade.items():
            for (end, sentence), values_ in groups.items():
                parts = [f"{facts_name} {', '.join(values_)}" if unknown else "", end]
                where = " with the ".join(p for p in parts if p)
                by_grade_text.setdefault(eg, []).append(where if same_limits else f"{where} ({sentence})")
        items_by_grade = by_grade_text
        possible = tuple((eg, "; ".join(items)) for eg, items in items_by_grade.items())
        depends = " and ".join(
            p for p in (f"{facts_name}, unknown (--clinical CSV)" if unknown else "",
                        "what the part outside the dose grid receives" if interval is not None else "") if p
        )  # fmt: skip
        message = (
            f"not evaluable: {text}; the grade depends on {depends}: "
            + "; ".join(f"{grade_label(eg)} if {conds}" for eg, conds in possible)
            + (f" ({limits_sentence(entries[0][3], unit)})" if same_limits else "")
        )
    if m.note:
        message += f" ({m.note})"
    return Finding(
        rule.id,
        m.structure,
        m.roi,
        m.how,
        m.metric,
        rounded,
        unit,
        g,
        message,
        "; ".join(sources),
        unconfirmed,
        m.reference_gy,
        m.reference_target,
        per_protocol,
        variation,
        category=m.category,
        interval=interval,
        possible_grades=possible,
    )


def not_evaluable(
    rule: Rule,
    why: str,
    *,
    structure: str | None = None,
    roi: str | None = None,
    how: str | None = None,
    category: str = "plan_quality",
    value_text: str | None = None,
    possible: tuple[tuple[Grade, str], ...] = (),
    metric: str | None = None,
) -> Finding:
    metric = metric or (rule.metric.text if rule.metric else (rule.check or rule.id))
    return Finding(
        rule.id,
        structure,
        roi,
        how,
        metric,
        None,
        rule.unit,
        Grade.NOT_EVALUABLE,
        f"not evaluable: {why}",
        rule.source,
        rule.unconfirmed,
        per_protocol=rule.per_protocol,
        variation=rule.variation,
        category=category,
        value_text=value_text,
        possible_grades=possible,
    )


def plain(
    rule: Rule,
    metric: str,
    g: Grade,
    message: str,
    *,
    value: float | None = None,
    unit: str = "",
    value_text: str | None = None,
    category: str = "plan_quality",
    structure: str | None = None,
) -> Finding:
    """A finding graded by a check of its own (an allowed list, a status), not by limits."""
    if value is not None and not math.isfinite(value):  # never shown, never graded
        return not_evaluable(rule, f"{metric} is not a finite number ({value:g})", structure=structure, metric=metric)
    return Finding(
        rule.id,
        structure,
        None,
        None,
        metric,
        value,
        unit,
        g,
        message,
        rule.source,
        rule.unconfirmed,
        category=category,
        value_text=value_text,
    )


def not_applicable(rule: Rule, reason: str, structure: str | None = None) -> NotApplicable:
    return NotApplicable(rule.id, structure if structure is not None else rule.structure, reason)


def worst(findings: list[Finding]) -> Finding:
    """Of findings on the candidates of an ambiguous structure: the worst graded one, or a not
    evaluable one if any candidate could not be graded."""
    ne = [f for f in findings if f.grade is Grade.NOT_EVALUABLE]
    if ne:
        return ne[0]
    return max(findings, key=lambda f: f.grade.severity)


def with_end_caps(finding: Finding, rows: Sequence[EndCapValue], chosen: str) -> Finding:
    """The finding with its value (or interval) and grade under every end-cap convention
    (``rows``, the protocol's ``chosen`` one among them). When the grades differ the message says
    so, each grade with its conventions and values; the grade stays the chosen convention's and
    the plan is flagged for the reviewer (:attr:`Finding.convention_sensitive`)."""
    if len(rows) < 2:
        return finding
    return replace(finding, by_end_cap=tuple(rows), message=finding.message + _end_cap_note(rows, finding.unit, chosen))


def _end_cap_note(rows: Sequence[EndCapValue], unit: str, chosen: str) -> str:
    """What :func:`with_end_caps` appends to the message: nothing when every convention gives the
    same grade (and, not evaluable, the same possible grades), else each grade with its
    conventions and values."""
    if len({r.outcome for r in rows}) < 2:
        return ""
    groups: dict[tuple[Grade, frozenset[Grade]], list[str]] = {}
    labels: dict[tuple[Grade, frozenset[Grade]], str] = {}
    for r in sorted(rows, key=lambda r: r.end_cap != chosen):  # the protocol's convention first
        groups.setdefault(r.outcome, []).append(f"{r.end_cap} ({r.shown(unit)})")
        possible = " or ".join(grade_label(g) for g in dict.fromkeys(g for g, _ in r.possible))
        labels[r.outcome] = grade_label(r.grade) + (f" ({possible})" if possible else "")
    text = ", ".join(f"{labels[o]} with {' and '.join(caps)}" for o, caps in groups.items())
    return (
        f"; convention-sensitive: {text} (the structure's ends decide: graded with the protocol's {chosen}, "
        "for the reviewer)"
    )


def worst_by_end_cap(graded: Sequence[Finding], chosen: Finding, cap: str) -> Finding:
    """The finding ``chosen`` by :func:`worst` among the findings on the candidates of an
    ambiguous structure, with the worst candidate under every end-cap convention: under the
    protocol's (``cap``) that is ``chosen`` itself; under another, the candidate :func:`worst`
    picks among their values there. So the merged finding is convention-sensitive whenever, for
    some convention, the worst grade over the candidates differs from the worst under the
    protocol's, even when no single candidate's grade depends on the convention, or when the
    candidate that is worst under the protocol's is not the one that is worse under another."""
    if not chosen.by_end_cap:
        return chosen  # not graded on a DVH (not evaluable before it): nothing to compare
    rows: list[EndCapValue] = []
    for own in chosen.by_end_cap:
        if own.end_cap == cap:
            rows.append(own)
            continue
        there = [e for f in graded for e in f.by_end_cap if e.end_cap == own.end_cap]
        ne = [e for e in there if e.grade is Grade.NOT_EVALUABLE]
        rows.append(ne[0] if ne else max(there, key=lambda e: e.grade.severity))
    base = chosen.message
    note = _end_cap_note(chosen.by_end_cap, chosen.unit, cap)
    if note and base.endswith(note):
        base = base[: -len(note)]  # said again below, with the candidates' worst values
    return with_end_caps(replace(chosen, message=base, by_end_cap=()), rows, cap)
