"""DVH metrics in TG-263 / Mayo et al. (2016) syntax. Pure.

``<query><value><unit>[<output unit>]``: ``D95%[Gy]``, ``D95%[%]``, ``D0.03cc[Gy]``,
``V20Gy[%]``, ``V20Gy[cc]``, ``V95%[%]``, ``Mean[Gy]``, ``Max[Gy]``, ``Min[Gy]``,
``Volume[cc]``, ``CV15Gy[cc]`` (volume receiving less than 15 Gy) and ``DC700cc[Gy]`` (the
highest dose of the coldest 700 cc, i.e. D at volume V - 700 cc). Units are case-sensitive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtqa.errors import MetricSyntaxError, RtqaError

if TYPE_CHECKING:  # the engine (numpy) is not needed to parse a metric (rtqa rules starts fast)
    from rtqa.dvh.engine import DVH

_NUMBER = r"(\d+(?:\.\d+)?)"
_PATTERNS = [
    ("D", re.compile(rf"^D{_NUMBER}(%|cc)\[(Gy|cGy|%)\]$")),
    ("DC", re.compile(rf"^DC{_NUMBER}(cc)\[(Gy|cGy|%)\]$")),
    ("V", re.compile(rf"^V{_NUMBER}(Gy|cGy|%)\[(%|cc)\]$")),
    ("CV", re.compile(rf"^CV{_NUMBER}(Gy|cGy|%)\[(%|cc)\]$")),
    ("STAT", re.compile(r"^(Mean|Max|Min)\[(Gy|cGy|%)\]$")),
    ("VOLUME", re.compile(r"^Volume\[(cc)\]$")),
]


class MetricError(RtqaError):
    """A well-formed metric that cannot be evaluated as asked (no reference dose)."""


@dataclass(frozen=True)
class Metric:
    """A parsed metric: ``kind`` D, DC, V, CV, Mean, Max, Min or Volume."""

    text: str
    kind: str
    value: float | None
    value_unit: str | None
    output_unit: str

    @property
    def is_relative(self) -> bool:
        """True when the metric needs a reference (prescription) dose."""
        return (self.output_unit == "%" and self.kind in ("D", "DC", "Mean", "Max", "Min")) or (
            self.value_unit == "%" and self.kind in ("V", "CV")
        )


def parse_metric(text: str) -> Metric:
    """Parse a TG-263 metric.

    Raises
    ------
    MetricSyntaxError
        The text does not follow the syntax; the message names it and shows the forms.

    Examples
    --------
    >>> parse_metric("D95%[Gy]")
    Metric(text='D95%[Gy]', kind='D', value=95.0, value_unit='%', output_unit='Gy')
    """
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if not m:
            continue
        if kind == "STAT":
            return Metric(text, m.group(1), None, None, m.group(2))
        if kind == "VOLUME":
            return Metric(text, "Volume", None, None, "cc")
        value = float(m.group(1))
        if m.group(2) == "%" and kind == "D" and value > 100:
            raise MetricSyntaxError(f"metric {text!r}: a volume percentage above 100")
        return Metric(text, kind, value, m.group(2), m.group(3))
    raise MetricSyntaxError(
        f"metric {text!r} is not TG-263 syntax; expected e.g. D95%[Gy], D0.03cc[Gy], V20Gy[%], V95%[%], "
        "Mean[Gy], Max[Gy], Min[Gy], Volume[cc], DC700cc[Gy] or CV15Gy[cc] (no spaces, case-sensitive units)"
    )


def evaluate_metric(dvh: DVH, metric: Metric | str, *, reference_dose_gy: float | None = None) -> float | None:
    """The value of a metric on a DVH, in the metric's output unit.

    Returns ``None`` when the value does not exist (D0.03cc of a structure under 0.03 cc,
    a dose metric of a structure with no covered volume).

    Raises
    ------
    MetricSyntaxError
        A malformed metric.
    MetricError
        A relative metric without a reference dose.
    """
    m = parse_metric(metric) if isinstance(metric, str) else metric
    if m.is_relative and not reference_dose_gy:
        raise MetricError(f"metric {m.text!r} is relative to a reference dose, and none was given")
    ref = reference_dose_gy or 0.0
    covered = dvh.covered_cc

    def dose_out(d: float | None) -> float | None:
        if d is None:
            return None
        return {"Gy": d, "cGy": 100 * d, "%": 100 * d / ref if ref else None}[m.output_unit]

    def dose_in(value: float, unit: str | None) -> float:
        return {"Gy": value, "cGy": value / 100, "%": value / 100 * ref}[unit or "Gy"]

    def volume_out(v: float) -> float | None:
        if m.output_unit == "cc":
            return v
        return 100 * v / covered if covered > 0 else None

    if m.kind == "Volume":
        return dvh.volume_cc
    if m.kind in ("Mean", "Max", "Min"):
        return dose_out({"Mean": dvh.mean_gy, "Max": dvh.max_gy, "Min": dvh.min_gy}[m.kind])
    assert m.value is not None
    if m.kind == "D":
        v = m.value / 100 * covered if m.value_unit == "%" else m.value
        if covered <= 0:
            return None
        return dose_out(dvh.dose_at_volume(v))
    if m.kind == "DC":
        if m.value > covered:
            return None
        return dose_out(dvh.dose_at_volume(covered - m.value))
    d = dose_in(m.value, m.value_unit)
    above = dvh.volume_at_dose(d)
    return volume_out(above if m.kind == "V" else covered - above)
