"""The grading rules every check shares (DESIGN.md, "How a verdict is reached"), on tiny inputs.

Each test builds a Rule and a Measured value by hand and checks the Finding that
``rtqa.evaluation.grading`` makes of them: rounding before grading, the branches of an unknown
clinical fact, the two ends of an interval, rules that do not apply, and the helpers that
build findings without limits. The limits used are the protocol's normal-liver mean limits
(rules/nct03535259.yaml: Child-Pugh A <= 28 / <= 30 Gy, B <= 15 / <= 18 Gy) or plain numbers
chosen so that the expected grade follows from reading the limit.
"""

from __future__ import annotations

import pytest

from rtqa.dvh.metrics import parse_metric
from rtqa.evaluation.grading import (
    Measured,
    applicability,
    branches,
    grade_measured,
    limit_text,
    limits_sentence,
    not_applicable,
    not_evaluable,
    plain,
    worst,
)
from rtqa.protocol.limits import Grade, Limit
from rtqa.protocol.loader import LimitSet, Rule
from rtqa.report.model import Finding

LE28, LE30 = Limit.parse("<= 28"), Limit.parse("<= 30")
A = LimitSet(LE28, LE30, "source A", False)
B = LimitSet(Limit.parse("<= 15"), Limit.parse("<= 18"), "source B", True)


def rule(**kw) -> Rule:
    base = dict(
        id="R",
        kind="constraint",
        source="rule source",
        unconfirmed=False,
        per_protocol=LE28,
        variation=LE30,
        unit="Gy",
        structure="Liver",
        metric=parse_metric("Mean[Gy]"),
    )
    return Rule(**{**base, **kw})  # type: ignore[arg-type]


def by_child_pugh(**kw) -> Rule:
    """The protocol's NORMAL_LIVER_MEAN shape: limits by Child-Pugh class."""
    return rule(per_protocol=None, variation=None, limits_by={"child_pugh": {"A5": A, "A6": A, "B7": B, "B8": B}}, **kw)


def measured(value: float | None = None, **kw) -> Measured:
    return Measured("Liver", "LIVER", "exact", "Mean[Gy]", value, "Liver: Mean = {value}", **kw)


# -- limit texts --------------------------------------------------------------------------------


def test_limit_texts_use_the_comparison_symbols_and_the_unit():
    assert limit_text(None, "Gy") == ""
    assert limit_text(Limit.parse("<= 28"), "Gy") == "≤ 28 Gy"
    assert limit_text(Limit.parse(">= 95"), "%") == "≥ 95 %"
    assert limit_text(Limit.parse("< 120"), "cc") == "< 120 cc"
    assert limit_text(Limit.parse("> 700"), "") == "> 700"  # no unit: no trailing space
    assert limit_text(Limit.parse("between 1.8 and 2.2"), "Gy") == "1.8–2.2 Gy"
    assert limit_text(Limit.parse("between 10 and 15"), "") == "10–15"


def test_limits_sentence_names_the_variation_only_when_there_is_one():
    assert limits_sentence(A, "Gy") == "per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy"
    assert limits_sentence(LimitSet(LE28, None, "", False), "Gy") == "per protocol ≤ 28 Gy"


# -- facts: applicability and branches ----------------------------------------------------------


def test_a_known_fact_outside_the_rule_makes_it_not_applicable_with_the_reason():
    r = by_child_pugh()
    assert applicability(r, {"child_pugh": "C10"}) == "child-pugh C10: the rule applies to A5, A6, B7, B8 only"
    assert applicability(r, {"child_pugh": "B7"}) is None
    assert applicability(r, {"child_pugh": None}) is None  # unknown: may apply, graded on every branch
    assert applicability(r, {}) is None
    gated = rule(when={"motion_management": ("gating",)})
    assert applicability(gated, {"motion_management": "none"}) == (
        "motion-management none: the rule applies to gating only"
    )


def test_an_unknown_fact_gives_one_branch_per_value_the_rule_applies_to():
    got = branches(by_child_pugh(), {"child_pugh": None})
    assert [(v, lim, cond) for v, lim, cond in got] == [
        ({"child_pugh": "A5"}, A, "child-pugh A5"),
        ({"child_pugh": "A6"}, A, "child-pugh A6"),
        ({"child_pugh": "B7"}, B, "child-pugh B7"),
        ({"child_pugh": "B8"}, B, "child-pugh B8"),
    ]


def test_a_known_fact_gives_the_one_branch_of_its_value():
    assert branches(by_child_pugh(), {"child_pugh": "B8"}) == [({"child_pugh": "B8"}, B, "")]
    # a fact the rule does not depend on is ignored
    plain_rule = rule()
    assert branches(plain_rule, {"child_pugh": "B8"}) == [({}, LimitSet(LE28, LE30, "rule source", False), "")]


def test_two_unknown_facts_give_every_combination():
    r = rule(when={"motion_management": ("gating", "breath_hold")}, limits_by={"child_pugh": {"A5": A, "B7": B}})
    got = branches(r, {})
    assert [cond for *_, cond in got] == [
        "motion-management gating, child-pugh A5",
        "motion-management gating, child-pugh B7",
        "motion-management breath_hold, child-pugh A5",
        "motion-management breath_hold, child-pugh B7",
    ]
    assert [lim for _, lim, _ in got] == [A, B, A, B]


# -- one value ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "rounded", "expected"),
    [
        (28.004, 28.0, Grade.PER_PROTOCOL),  # 28.004 Gy rounds to 28.00 Gy: meets <= 28
        (28.006, 28.01, Grade.VARIATION_ACCEPTABLE),  # 28.01 Gy: over 28, within 30
        (30.004, 30.0, Grade.VARIATION_ACCEPTABLE),
        (30.006, 30.01, Grade.DEVIATION_UNACCEPTABLE),
    ],
)
def test_a_value_is_rounded_to_the_report_precision_before_grading(value, rounded, expected):
    f = grade_measured(rule(), measured(value), {})
    assert f.value == rounded and f.grade is expected


def test_a_graded_finding_carries_its_value_limits_and_sources():
    r = rule(id="NORMAL_LIVER_MEAN", unconfirmed=False)
    m = measured(16.1, reference_gy=50.0, reference_target="PTV", category="resubmit")
    f = grade_measured(r, m, {})
    assert f == Finding(
        "NORMAL_LIVER_MEAN",
        "Liver",
        "LIVER",
        "exact",
        "Mean[Gy]",
        16.1,
        "Gy",
        Grade.PER_PROTOCOL,
        "Liver: Mean = 16.10 Gy — per protocol (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy)",
        "rule source",
        False,
        50.0,
        "PTV",
        LE28,
        LE30,
        category="resubmit",
        interval=None,
        possible_grades=(),
    )


def test_the_measured_unit_overrides_the_rules_unit_for_rounding_and_text():
    # 93.46 % rounds to 93.5 % (0.1 % precision); in Gy it would stay 93.46
    f = grade_measured(
        rule(per_protocol=Limit.parse(">= 95"), variation=Limit.parse(">= 90")), measured(93.46, unit="%"), {}
    )
    assert f.value == 93.5 and f.unit == "%" and f.grade is Grade.VARIATION_ACCEPTABLE
    assert f.message.startswith("Liver: Mean = 93.5 % — variation acceptable (per protocol ≥ 95 %")


def test_a_note_is_appended_whatever_the_grade():
    f = grade_measured(rule(), measured(10.0, note="two ROIs match"), {})
    assert f.message.endswith("(per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy) (two ROIs match)")
    f = grade_measured(rule(), measured(None, interval=(27.0, 29.0), note="uncovered"), {})
    assert f.grade is Grade.NOT_EVALUABLE and f.message.endswith(" (uncovered)")


def test_unconfirmed_limits_of_a_branch_make_the_finding_unconfirmed():
    assert grade_measured(rule(unconfirmed=True), measured(10.0), {}).unconfirmed
    assert not grade_measured(rule(), measured(10.0), {}).unconfirmed
    # the rule itself is confirmed, the Child-Pugh B limits (LimitSet B) are not
    assert not grade_measured(by_child_pugh(), measured(10.0), {"child_pugh": "A5"}).unconfirmed
    assert grade_measured(by_child_pugh(), measured(10.0), {"child_pugh": "B7"}).unconfirmed


def test_a_known_fact_grades_against_the_limits_of_its_value():
    # 16.1 Gy: over B's 15 Gy, within its 18 Gy
    f = grade_measured(by_child_pugh(), measured(16.1), {"child_pugh": "B7"})
    assert f.grade is Grade.VARIATION_ACCEPTABLE
    assert (f.per_protocol, f.variation, f.source) == (B.per_protocol, B.variation, "source B")
    assert (
        f.message
        == "Liver: Mean = 16.10 Gy — variation acceptable (per protocol ≤ 15 Gy; variation acceptable ≤ 18 Gy)"
    )


# -- an unknown fact ------------------------------------------------------------------------------


def test_an_unknown_fact_that_does_not_matter_gives_the_common_grade_and_says_so():
    # 31 Gy is over A's 30 Gy and B's 18 Gy: a deviation whatever the class
    f = grade_measured(by_child_pugh(), measured(31.0), {"child_pugh": None})
    assert f.grade is Grade.DEVIATION_UNACCEPTABLE and f.value == 31.0 and f.possible_grades == ()
    assert f.message == (
        "Liver: Mean = 31.00 Gy — deviation unacceptable (A5, A6: per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy; "
        "B7, B8: per protocol ≤ 15 Gy; variation acceptable ≤ 18 Gy); child-pugh unknown: the grade is the same under "
        "every value the rule applies to (A5, A6, B7, B8), so it did not matter"
    )
    assert f.per_protocol is None and f.variation is None  # the limits differ by branch
    assert f.source == "source A; source B"
    assert f.unconfirmed  # B's limits are unconfirmed


def test_an_unknown_fact_whose_branches_disagree_is_not_evaluable_with_each_grade():
    # 16.1 Gy: per protocol under A (<= 28), variation acceptable under B (<= 15 / <= 18)
    f = grade_measured(by_child_pugh(), measured(16.1), {"child_pugh": None})
    assert f.grade is Grade.NOT_EVALUABLE and f.value == 16.1
    assert f.possible_grades == (
        (Grade.PER_PROTOCOL, "child-pugh A5, A6 (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy)"),
        (Grade.VARIATION_ACCEPTABLE, "child-pugh B7, B8 (per protocol ≤ 15 Gy; variation acceptable ≤ 18 Gy)"),
    )
    assert f.best_case is Grade.PER_PROTOCOL
    assert f.message == (
        "not evaluable: Liver: Mean = 16.10 Gy; the grade depends on child-pugh, unknown (--clinical CSV): "
        "per protocol if child-pugh A5, A6 (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy); "
        "variation acceptable if child-pugh B7, B8 (per protocol ≤ 15 Gy; variation acceptable ≤ 18 Gy)"
    )


def test_an_unknown_when_fact_with_the_same_limits_lists_the_branches_once():
    # the same limits under both values: no per-branch limits, the sentence once at the end
    r = rule(limits_by={"motion": {"gating": A, "free": LimitSet(LE28, LE30, "source A2", False)}})
    f = grade_measured(r, measured(10.0), {})
    assert f.grade is Grade.PER_PROTOCOL
    assert f.per_protocol == LE28 and f.variation == LE30  # one set of limits on every branch
    assert f.message == (
        "Liver: Mean = 10.00 Gy — per protocol (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy); motion unknown: "
        "the grade is the same under every value the rule applies to (gating, free), so it did not matter"
    )
    assert f.source == "source A; source A2"


def test_sources_fall_back_to_the_rules_and_are_not_repeated():
    r = rule(limits_by={"motion": {"gating": LimitSet(LE28, LE30, "", False), "free": LimitSet(LE28, LE30, "", False)}})
    assert grade_measured(r, measured(10.0), {}).source == "rule source"
    r = rule(limits_by={"motion": {"gating": A, "free": A}})
    assert grade_measured(r, measured(10.0), {}).source == "source A"


# -- an interval ----------------------------------------------------------------------------------


def test_an_interval_within_one_grade_is_that_grade_at_both_ends():
    f = grade_measured(rule(), measured(None, interval=(10.004, 20.0)), {})
    assert f.grade is Grade.PER_PROTOCOL and f.value is None and f.interval == (10.0, 20.0)
    assert f.possible_grades == ()
    assert f.message == (
        "Liver: Mean = 10.00 Gy–20.00 Gy — per protocol (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy); "
        "the same grade at both ends (low end, high end)"
    )


def test_an_interval_straddling_a_limit_is_not_evaluable_with_its_ends():
    m = measured(None, interval=(27.0, 29.0), interval_ends=("uncovered part at 0 Gy", "uncovered part at 40.00 Gy"))
    f = grade_measured(rule(), m, {})
    assert f.grade is Grade.NOT_EVALUABLE and f.interval == (27.0, 29.0) and f.value is None
    assert f.possible_grades == (
        (Grade.PER_PROTOCOL, "uncovered part at 0 Gy (27.00 Gy)"),
        (Grade.VARIATION_ACCEPTABLE, "uncovered part at 40.00 Gy (29.00 Gy)"),
    )
    assert f.per_protocol == LE28 and f.variation == LE30
    assert f.message == (
        "not evaluable: Liver: Mean = 27.00 Gy–29.00 Gy; the grade depends on what the part outside the dose grid "
        "receives: per protocol if uncovered part at 0 Gy (27.00 Gy); variation acceptable if uncovered part at "
        "40.00 Gy (29.00 Gy) (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy)"
    )


def test_an_interval_whose_ends_round_to_one_value_is_that_value():
    # 20.001 and 20.004 Gy both round to 20.00 Gy
    f = grade_measured(rule(), measured(None, interval=(20.001, 20.004)), {})
    assert f.value == 20.0 and f.interval is None and f.grade is Grade.PER_PROTOCOL
    assert "both ends" not in f.message and f.message.startswith("Liver: Mean = 20.00 Gy — per protocol")


def test_an_interval_is_rounded_at_each_end_before_grading():
    # 28.004 rounds to 28.00 (per protocol), 30.004 to 30.00 (variation acceptable)
    f = grade_measured(rule(), measured(None, interval=(28.004, 30.004)), {})
    assert f.interval == (28.0, 30.0)
    assert f.possible_grades == (
        (Grade.PER_PROTOCOL, "low end (28.00 Gy)"),
        (Grade.VARIATION_ACCEPTABLE, "high end (30.00 Gy)"),
    )


def test_an_unknown_fact_and_an_interval_together_name_both_causes():
    # interval 16-17 Gy: per protocol under A at both ends; under B (<= 15 / <= 18) variation at both ends
    f = grade_measured(by_child_pugh(), measured(None, interval=(16.0, 17.0)), {"child_pugh": None})
    assert f.grade is Grade.NOT_EVALUABLE
    assert f.possible_grades == (
        (Grade.PER_PROTOCOL, "child-pugh A5, A6 (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy)"),
        (Grade.VARIATION_ACCEPTABLE, "child-pugh B7, B8 (per protocol ≤ 15 Gy; variation acceptable ≤ 18 Gy)"),
    )
    assert (
        "the grade depends on child-pugh, unknown (--clinical CSV) and what the part outside the dose grid receives: "
        in (f.message)
    )
    # interval 27-29 Gy: A differs between the ends, B is a deviation at both (over 18 Gy)
    f = grade_measured(by_child_pugh(), measured(None, interval=(27.0, 29.0)), {"child_pugh": None})
    assert f.possible_grades == (
        (
            Grade.PER_PROTOCOL,
            "child-pugh A5, A6 with the low end (27.00 Gy) (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy)",
        ),
        (
            Grade.VARIATION_ACCEPTABLE,
            "child-pugh A5, A6 with the high end (29.00 Gy) (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy)",
        ),
        (Grade.DEVIATION_UNACCEPTABLE, "child-pugh B7, B8 (per protocol ≤ 15 Gy; variation acceptable ≤ 18 Gy)"),
    )


# -- findings without limits ----------------------------------------------------------------------


def test_not_evaluable_names_why_and_keeps_the_rules_limits():
    r = rule(unconfirmed=True)
    f = not_evaluable(r, "no dose", structure="Liver", roi="LIVER", how="alias", category="resubmit", value_text="x")
    assert f == Finding(
        "R",
        "Liver",
        "LIVER",
        "alias",
        "Mean[Gy]",
        None,
        "Gy",
        Grade.NOT_EVALUABLE,
        "not evaluable: no dose",
        "rule source",
        True,
        per_protocol=LE28,
        variation=LE30,
        category="resubmit",
        value_text="x",
    )
    possible = ((Grade.PER_PROTOCOL, "if A"),)
    assert not_evaluable(r, "w", possible=possible).possible_grades == possible


def test_not_evaluable_metric_is_the_given_one_else_the_rules_metric_check_or_id():
    assert not_evaluable(rule(), "w", metric="total dose").metric == "total dose"
    assert not_evaluable(rule(), "w").metric == "Mean[Gy]"
    assert not_evaluable(rule(metric=None, check="dose_algorithm"), "w").metric == "dose_algorithm"
    assert not_evaluable(rule(metric=None, id="GRID"), "w").metric == "GRID"
    f = not_evaluable(rule(), "w")
    assert (f.structure, f.matched_roi, f.match, f.category, f.value_text) == (None, None, None, "plan_quality", None)


def test_plain_findings_carry_their_own_grade_and_no_limits():
    r = rule(unconfirmed=True, source="protocol 5.1")
    f = plain(r, "dose algorithm", Grade.VARIATION_ACCEPTABLE, "AAA", value=2.0, unit="mm", value_text="AAA",
              category="resubmit", structure="Liver")  # fmt: skip
    assert f == Finding(
        "R",
        "Liver",
        None,
        None,
        "dose algorithm",
        2.0,
        "mm",
        Grade.VARIATION_ACCEPTABLE,
        "AAA",
        "protocol 5.1",
        True,
        category="resubmit",
        value_text="AAA",
    )
    f = plain(r, "m", Grade.PER_PROTOCOL, "ok")
    assert (f.value, f.unit, f.value_text, f.category, f.structure) == (None, "", None, "plan_quality", None)


def test_not_applicable_names_the_rules_structure_unless_given():
    r = rule(structure="Stomach")
    assert not_applicable(r, "why").structure == "Stomach"
    assert not_applicable(r, "why", "Duodenum").structure == "Duodenum"
    assert (not_applicable(r, "why").rule, not_applicable(r, "why").reason) == ("R", "why")


def test_worst_of_the_candidates_is_a_not_evaluable_one_else_the_most_severe():
    def f(g: Grade, roi: str) -> Finding:
        return Finding("R", "S", roi, None, "m", None, "Gy", g, "")

    pp, va, du = f(Grade.PER_PROTOCOL, "a"), f(Grade.VARIATION_ACCEPTABLE, "b"), f(Grade.DEVIATION_UNACCEPTABLE, "c")
    assert worst([pp, va]) is va
    assert worst([va, du, pp]) is du
    ne1, ne2 = f(Grade.NOT_EVALUABLE, "x"), f(Grade.NOT_EVALUABLE, "y")
    assert worst([du, ne1, ne2]) is ne1  # could not be graded on a candidate: never hidden by a graded one


def test_fact_values_with_spaces_are_named_whole():
    # a `when` rule has the same limits under every value: one grade, and the values it applies to listed
    r = rule(when={"motion_management": ("free breathing", "breath hold")})
    f = grade_measured(r, measured(10.0), {"motion_management": None})
    assert f.grade is Grade.PER_PROTOCOL
    assert f.message.endswith(
        "; motion-management unknown: the grade is the same under every value the rule applies to "
        "(free breathing, breath hold), so it did not matter"
    )


def test_interval_ends_are_rounded_in_the_measured_unit():
    # percent has 0.1 % precision: 93.46 % -> 93.5 %, 97.04 % -> 97.0 % (two decimals would keep 93.46, 97.04)
    r = rule(per_protocol=Limit.parse(">= 95"), variation=Limit.parse(">= 90"), unit="%")
    f = grade_measured(r, measured(None, interval=(93.46, 97.04)), {})
    assert f.interval == (93.5, 97.0)
    assert f.possible_grades == (
        (Grade.VARIATION_ACCEPTABLE, "low end (93.5 %)"),
        (Grade.PER_PROTOCOL, "high end (97.0 %)"),
    )


def test_two_unknown_facts_are_both_named():
    r = rule(when={"motion_management": ("gating",)}, limits_by={"child_pugh": {"A5": A, "B7": B}})
    f = grade_measured(r, measured(31.0), {})  # over 30 and 18 Gy: a deviation on every branch
    assert f.grade is Grade.DEVIATION_UNACCEPTABLE
    assert "; motion-management, child-pugh unknown: the grade is the same under every value" in f.message


def test_one_grade_under_branches_with_different_limits_lists_each_branch():
    # 16.1 Gy: per protocol under A (<= 28); variation under B (<= 15 / <= 18) and under C (<= 16 / <= 20)
    c = LimitSet(Limit.parse("<= 16"), Limit.parse("<= 20"), "source C", False)
    r = rule(per_protocol=None, variation=None, limits_by={"child_pugh": {"A5": A, "B7": B, "B8": c}})
    f = grade_measured(r, measured(16.1), {"child_pugh": None})
    assert f.possible_grades == (
        (Grade.PER_PROTOCOL, "child-pugh A5 (per protocol ≤ 28 Gy; variation acceptable ≤ 30 Gy)"),
        (
            Grade.VARIATION_ACCEPTABLE,
            "child-pugh B7 (per protocol ≤ 15 Gy; variation acceptable ≤ 18 Gy); "
            "child-pugh B8 (per protocol ≤ 16 Gy; variation acceptable ≤ 20 Gy)",
        ),
    )
