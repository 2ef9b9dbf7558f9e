"""What changed between two submissions: findings fixed, new, worse and better, and the inputs.

Findings are matched by rule, structure, ROI and metric. The grades compared are the automatic
ones (what the plans themselves show); reviewer decisions are listed by ``rtqa history``.

- fixed: off protocol (variation or deviation) in A, per protocol in B
- new: per protocol or absent in A, off protocol in B
- worse / better: off protocol in both, with a worse / better grade, or the same grade and the
  value further from / nearer to the per-protocol limit
- evaluability: evaluable in one and not evaluable in the other
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rtqa.ledger.review import SubmissionView
from rtqa.protocol.limits import Grade

OFF = {Grade.VARIATION_ACCEPTABLE.value, Grade.DEVIATION_UNACCEPTABLE.value}
NE = Grade.NOT_EVALUABLE.value


@dataclass(frozen=True)
class Change:
    rule: str
    roi: str | None
    metric: str
    unit: str
    grade_a: str | None
    grade_b: str | None
    value_a: float | None
    value_b: float | None

    @property
    def delta(self) -> float | None:
        if self.value_a is None or self.value_b is None:
            return None
        return self.value_b - self.value_a

    def as_json(self) -> dict[str, Any]:
        d = self.delta
        return {
            "rule": self.rule,
            "roi": self.roi,
            "metric": self.metric,
            "unit": self.unit,
            "grade_a": self.grade_a,
            "grade_b": self.grade_b,
            "value_a": self.value_a,
            "value_b": self.value_b,
            "delta": None if d is None else round(d, 4),
        }


@dataclass
class Diff:
    a: SubmissionView
    b: SubmissionView
    fixed: list[Change] = field(default_factory=list)
    new: list[Change] = field(default_factory=list)
    worse: list[Change] = field(default_factory=list)
    better: list[Change] = field(default_factory=list)
    evaluability: list[Change] = field(default_factory=list)
    inputs_removed: list[dict[str, Any]] = field(default_factory=list)
    inputs_added: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sections(self) -> dict[str, list[Change]]:
        return {
            "fixed": self.fixed,
            "new": self.new,
            "worse": self.worse,
            "better": self.better,
            "evaluability": self.evaluability,
        }


def _key(f: dict[str, Any]) -> tuple[str, str | None, str | None, str]:
    return (f["rule"], f.get("structure"), f.get("matched_roi"), f.get("metric") or "")


def _excess(value: float | None, limits: dict[str, Any]) -> float | None:
    """How far ``value`` lies beyond the per-protocol limit (positive outside, negative inside)."""
    lim = limits.get("per_protocol")
    if value is None or not lim:
        return None
    if lim["op"] == "between":
        return float(max(lim["low"] - value, value - lim["high"]))
    return float(value - lim["value"] if lim["op"] in ("<=", "<") else lim["value"] - value)


def diff(a: SubmissionView, b: SubmissionView) -> Diff:
    """The differences from submission ``a`` to submission ``b``."""
    out = Diff(a, b)
    fa: dict[tuple[str, str | None, str | None, str], dict[str, Any]] = {}
    for f in a.plan["findings"]:
        fa.setdefault(_key(f), f)
    seen = set()
    for f in b.plan["findings"]:
        k = _key(f)
        if k in seen:
            continue
        seen.add(k)
        old = fa.get(k)
        ga, gb = (old["grade"] if old else None), f["grade"]
        change = Change(
            f["rule"],
            f.get("matched_roi") or f.get("structure"),
            f.get("metric") or "",
            f.get("unit") or "",
            ga,
            gb,
            old.get("value") if old else None,
            f.get("value"),
        )
        if (ga == NE) != (gb == NE) and ga is not None:
            out.evaluability.append(change)
        elif ga in OFF and gb == Grade.PER_PROTOCOL.value:
            out.fixed.append(change)
        elif gb in OFF and ga not in OFF:
            out.new.append(change)
        elif ga in OFF and gb in OFF:
            sa, sb = Grade(ga).severity, Grade(gb).severity
            ea, eb = _excess(change.value_a, old["limits"] if old else {}), _excess(change.value_b, f["limits"])
            if sb > sa or (sb == sa and ea is not None and eb is not None and eb > ea):
                out.worse.append(change)
            elif sb < sa or (sb == sa and ea is not None and eb is not None and eb < ea):
                out.better.append(change)
    sha_a = {i["sha256"] for i in a.plan["inputs"]}
    sha_b = {i["sha256"] for i in b.plan["inputs"]}
    out.inputs_removed = [i for i in a.plan["inputs"] if i["sha256"] not in sha_b]
    out.inputs_added = [i for i in b.plan["inputs"] if i["sha256"] not in sha_a]
    return out
