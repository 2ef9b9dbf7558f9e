"""Limits and grades: the trial-QA scale and how a value is graded against a pair of limits."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum


class Grade(str, Enum):
    """Central-review grades, worst last; NOT_EVALUABLE is never a pass."""

    PER_PROTOCOL = "per_protocol"
    VARIATION_ACCEPTABLE = "variation_acceptable"
    DEVIATION_UNACCEPTABLE = "deviation_unacceptable"
    NOT_EVALUABLE = "not_evaluable"

    @property
    def severity(self) -> int:
        return {"per_protocol": 0, "variation_acceptable": 1, "deviation_unacceptable": 2, "not_evaluable": -1}[
            self.value
        ]


_OPS = ("<=", ">=", "<", ">")
_LIMIT = re.compile(r"^\s*(<=|>=|<|>)\s*(-?\d+(?:\.\d+)?)\s*$")
_BETWEEN = re.compile(r"^\s*between\s+(-?\d+(?:\.\d+)?)\s+and\s+(-?\d+(?:\.\d+)?)\s*$")


@dataclass(frozen=True)
class Limit:
    """``value op threshold`` (op one of <=, <, >=, >), or ``low <= value <= high``."""

    op: str
    value: float | None = None
    low: float | None = None
    high: float | None = None

    @staticmethod
    def parse(text: str) -> Limit:
        """Parse ``"<= 28"``, ``"> 700"`` or ``"between 40 and 60"``.

        Raises
        ------
        ValueError
            Text of another form.
        """
        m = _LIMIT.match(str(text))
        if m:
            return Limit(m.group(1), float(m.group(2)))
        m = _BETWEEN.match(str(text))
        if m:
            low, high = float(m.group(1)), float(m.group(2))
            if low > high:
                raise ValueError(f"{text!r}: the low end is above the high end")
            return Limit("between", low=low, high=high)
        raise ValueError(f"{text!r} is not a limit; expected e.g. '<= 28', '> 700' or 'between 40 and 60'")

    def met(self, value: float) -> bool:
        if self.op == "between":
            assert self.low is not None and self.high is not None
            return self.low <= value <= self.high
        assert self.value is not None
        return {"<=": value <= self.value, "<": value < self.value, ">=": value >= self.value, ">": value > self.value}[
            self.op
        ]

    @property
    def upper(self) -> bool:
        """True for an upper limit (<=, <)."""
        return self.op in ("<=", "<")

    def looser_or_equal(self, other: Limit) -> bool:
        """True when every value meeting ``other`` meets this limit too (same direction)."""
        if other.op == "between":
            assert other.low is not None and other.high is not None
            # a limit, band or one-sided, allows all of a band when it allows both its ends
            return self.met(other.high) and self.met(other.low)
        if self.op == "between":
            return False  # a band never allows all of a one-sided (unbounded) limit
        if self.upper != other.upper:
            return False
        assert self.value is not None and other.value is not None
        return self.value >= other.value if self.upper else self.value <= other.value

    def text(self, unit: str = "") -> str:
        u = f" {unit}" if unit else ""
        if self.op == "between":
            return f"{self.low:g}–{self.high:g}{u}"
        return f"{self.op} {self.value:g}{u}"

    def as_json(self, unit: str) -> dict[str, object]:
        if self.op == "between":
            return {"op": "between", "low": self.low, "high": self.high, "unit": unit}
        return {"op": self.op, "value": self.value, "unit": unit}


def grade(value: float, per_protocol: Limit, variation: Limit | None) -> Grade:
    """Per protocol if the first limit is met, variation acceptable if the second is, else deviation."""
    if per_protocol.met(value):
        return Grade.PER_PROTOCOL
    if variation is not None and variation.met(value):
        return Grade.VARIATION_ACCEPTABLE
    return Grade.DEVIATION_UNACCEPTABLE


PRECISION = {"Gy": 2, "cGy": 0, "%": 1, "cc": 2, "mm": 2, "MV": 1, "fractions": 0}


def round_value(value: float, unit: str) -> float:
    """Round to the report precision (0.01 Gy, 0.1 %, 0.01 cc) before grading."""
    return round(value, PRECISION.get(unit, 2))


def format_value(value: float | None, unit: str) -> str:
    """A value at its report precision with its unit: ``2.00 Gy``, ``102.5 %``, ``0.00 cc``."""
    if value is None:
        return "-"
    digits = PRECISION.get(unit, 2)
    return f"{value:.{digits}f} {unit}".strip()
