"""Every limit operator at its boundary, at the report precision (rtqa/protocol/limits.py).

Values are rounded before grading (0.01 Gy, 0.1 %, 0.01 cc; README "Report formats"), so a
boundary is probed one precision step on each side, and with raw values that round onto it.
Raw probes stay clear of the exact half-step (e.g. 28.005), whose binary representation
decides the rounding direction.
"""

from __future__ import annotations

import pytest

from rtqa.protocol.limits import Grade, Limit, format_value, grade, round_value

PP, VA, DU = Grade.PER_PROTOCOL, Grade.VARIATION_ACCEPTABLE, Grade.DEVIATION_UNACCEPTABLE


def graded(raw: float, unit: str, per_protocol: str, variation: str | None = None) -> Grade:
    """What the evaluation does with a value: round to the report precision, then grade."""
    return grade(
        round_value(raw, unit), Limit.parse(per_protocol), Limit.parse(variation) if variation is not None else None
    )


@pytest.mark.parametrize(
    ("limit", "unit", "met", "missed"),
    [
        # <= 28 Gy (NORMAL_LIVER_MEAN): the limit itself is met, one step above is not
        ("<= 28", "Gy", [28.0, 27.99, 28.0049, 0.0], [28.01, 28.0051, 29.0]),
        # < 120 cc (SMALL_BOWEL_V15): the limit itself is missed, even from a raw 119.996 that rounds onto it
        ("< 120", "cc", [119.99, 119.9949, 0.0], [120.0, 119.996, 120.01]),
        # >= 100 % (PTV_D95): met at 100.0, and from a raw 99.96 that rounds onto it; 99.9 is missed
        (">= 100", "%", [100.0, 99.96, 100.1], [99.9, 99.94, 0.0]),
        # > 700 cc (NORMAL_LIVER_VOLUME): 700.00 is missed, 700.01 met
        ("> 700", "cc", [700.01, 700.0051, 800.0], [700.0, 700.0049, 699.99]),
    ],
)
def test_each_operator_at_its_boundary(limit, unit, met, missed):
    parsed = Limit.parse(limit)
    assert parsed.op == limit.split()[0] and parsed.value == float(limit.split()[1])
    for raw in met:
        assert graded(raw, unit, limit) is PP, (limit, raw)
    for raw in missed:
        assert graded(raw, unit, limit) is DU, (limit, raw)


def test_between_is_inclusive_at_both_ends():
    # FX_TOTAL_DOSE: between 40 and 60 Gy
    limit = "between 40 and 60"
    for raw in (40.0, 60.0, 39.996, 60.004, 50.0):
        assert graded(raw, "Gy", limit) is PP, raw
    for raw in (39.99, 60.01, 39.994, 60.006):
        assert graded(raw, "Gy", limit) is DU, raw


@pytest.mark.parametrize(
    ("per_protocol", "variation", "unit", "expected"),
    [
        # CORD_MAX: <= 45 per protocol, <= 50 variation
        ("<= 45", "<= 50", "Gy", [(45.0, PP), (45.01, VA), (50.0, VA), (50.01, DU), (50.004, VA)]),
        # a strict pair: < 45 / < 50
        ("< 45", "< 50", "Gy", [(44.99, PP), (45.0, VA), (49.99, VA), (50.0, DU), (49.996, DU)]),
        # PTV_D95: >= 100 / >= 95 (in %, precision 0.1)
        (">= 100", ">= 95", "%", [(100.0, PP), (99.9, VA), (95.0, VA), (94.9, DU), (94.96, VA)]),
        # a strict pair: > 100 / > 95
        ("> 100", "> 95", "%", [(100.1, PP), (100.0, VA), (95.1, VA), (95.0, DU), (95.04, DU)]),
        # total dose: 40-60 per protocol, 5 % band as variation (38-63)
        (
            "between 40 and 60",
            "between 38 and 63",
            "Gy",
            [(40.0, PP), (60.0, PP), (39.99, VA), (60.01, VA), (38.0, VA), (63.0, VA), (37.99, DU), (63.01, DU)],
        ),
    ],
)
def test_grade_steps_through_both_limits(per_protocol, variation, unit, expected):
    for raw, want in expected:
        assert graded(raw, unit, per_protocol, variation) is want, (per_protocol, variation, raw)


def test_without_a_variation_limit_a_miss_is_a_deviation():
    assert graded(28.01, "Gy", "<= 28") is DU
    assert grade(28.0, Limit.parse("<= 28"), None) is PP


def test_round_value_uses_the_precision_of_each_unit():
    assert round_value(45.004, "Gy") == 45.0 and round_value(45.006, "Gy") == 45.01
    assert round_value(99.96, "%") == 100.0 and round_value(99.94, "%") == 99.9
    assert round_value(0.034, "cc") == 0.03
    assert round_value(4499.6, "cGy") == 4500.0  # whole cGy
    assert round_value(24.6, "fractions") == 25.0
    assert round_value(6.04, "MV") == 6.0
    assert round_value(1.234, "furlongs") == 1.23  # unknown units: two decimals


def test_format_value_prints_the_report_precision():
    assert format_value(2.0, "Gy") == "2.00 Gy"
    assert format_value(102.54, "%") == "102.5 %"
    assert format_value(0.0, "cc") == "0.00 cc"
    assert format_value(4500.0, "cGy") == "4500 cGy"
    assert format_value(None, "Gy") == "-"
    assert format_value(3.0, "") == "3.00"


@pytest.mark.parametrize(
    "text",
    ["<=28", "  >=  100 ", "< -1.5", "> 700.25", "between 40 and 60", " between -1 and 2.5 "],
)
def test_parse_accepts_the_documented_forms(text):
    parsed = Limit.parse(text)
    assert parsed.text() in {"<= 28", ">= 100", "< -1.5", "> 700.25", "40–60", "-1–2.5"}


@pytest.mark.parametrize("text", ["=< 28", "28", "<= 28 Gy", "between 60 and 40", "between 40 60", "≤ 28", ""])
def test_parse_refuses_other_forms(text):
    with pytest.raises(ValueError, match=r"not a limit|low end is above"):
        Limit.parse(text)


def test_direction_and_looseness():
    le28, le30, lt30 = Limit.parse("<= 28"), Limit.parse("<= 30"), Limit.parse("< 30")
    ge95, ge100, gt95 = Limit.parse(">= 95"), Limit.parse(">= 100"), Limit.parse("> 95")
    assert le28.upper and lt30.upper and not ge95.upper and not gt95.upper
    assert le30.looser_or_equal(le28) and not le28.looser_or_equal(le30) and le28.looser_or_equal(le28)
    assert ge95.looser_or_equal(ge100) and not ge100.looser_or_equal(ge95) and ge95.looser_or_equal(ge95)
    assert not le30.looser_or_equal(ge95) and not ge95.looser_or_equal(le30)
    band, wide = Limit.parse("between 40 and 60"), Limit.parse("between 38 and 63")
    assert wide.looser_or_equal(band) and not band.looser_or_equal(wide) and band.looser_or_equal(band)
    assert not Limit.parse("between 40 and 63").looser_or_equal(wide)
    assert not Limit.parse("between 38 and 60").looser_or_equal(wide)


def test_a_band_of_one_value_is_a_limit():
    # "the low end is above the high end" is the only refusal: a band of one value is allowed
    point = Limit.parse("between 50 and 50")
    assert point.met(50.0) and not point.met(50.01) and not point.met(49.99)


def test_looseness_of_a_band_against_a_one_sided_limit():
    # every value in 0-45 also meets <= 50, so <= 50 is the looser one (this asserted before:
    # a protocol with per_protocol "between 0 and 45" and variation "<= 50" failed to load)
    assert Limit.parse("<= 50").looser_or_equal(Limit.parse("between 0 and 45"))
    assert not Limit.parse("<= 40").looser_or_equal(Limit.parse("between 0 and 45"))
    assert Limit.parse(">= 30").looser_or_equal(Limit.parse("between 40 and 60"))
    # and a band never allows all of a one-sided limit, which is unbounded on one side
    assert not Limit.parse("between 40 and 60").looser_or_equal(Limit.parse(">= 30"))
    assert not Limit.parse("between 0 and 60").looser_or_equal(Limit.parse("<= 28"))
    assert not Limit.parse("between 0 and 45").looser_or_equal(Limit.parse("<= 50"))


def test_text_and_json_forms():
    assert Limit.parse(">= 95").text("%") == ">= 95 %"
    assert Limit.parse("between 40 and 60").text("Gy") == "40–60 Gy"
    assert Limit.parse("<= 28").as_json("Gy") == {"op": "<=", "value": 28.0, "unit": "Gy"}
    assert Limit.parse("between 40 and 60").as_json("Gy") == {"op": "between", "low": 40.0, "high": 60.0, "unit": "Gy"}


def test_grade_severity_orders_the_scale():
    assert [g.severity for g in (PP, VA, DU)] == [0, 1, 2]
    assert Grade.NOT_EVALUABLE.severity < 0  # never counted as a pass or as the worst graded value
