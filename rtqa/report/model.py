"""The report of one plan: findings with grades, as DESIGN.md's JSON contract describes. Pure data."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from rtqa.case import UnassignedFile
from rtqa.protocol.limits import PRECISION, Grade, Limit, format_value
from rtqa.protocol.loader import Protocol
from rtqa.report.views_model import SliceView

SCHEMA_VERSION = 1
CATEGORIES = ("plan_quality", "resubmit", "query", "eligibility")


@dataclass(frozen=True)
class EquivalentValue:
    """A finding's value in a radiobiological dose (EQD2 or BED), per voxel before the DVH.

    ``graded`` is true when the rule is stated in that dose (the finding's value is then this
    value, and ``physical_value`` the physical one beside it); otherwise it is shown beside the
    physical value for information. ``value`` is None with ``interval`` when the dose per
    fraction of each voxel is only bounded, and None with ``note`` saying why when it cannot be
    computed (number of fractions unknown)."""

    measure: str  # eqd2 | bed
    graded: bool
    metric: str  # the metric evaluated on the equivalent dose (D95%[Gy] for a D95%[%] rule)
    value: float | None
    unit: str
    alpha_beta_gy: float | None
    source: str
    unconfirmed: bool
    physical_value: float | None = None
    physical_unit: str = ""
    interval: tuple[float, float] | None = None
    note: str = ""  # about this value: the volume outside the grid, or why there is no value
    basis: str = ""  # why it is shown, and how each dose was converted (fractions, sum)

    @property
    def label(self) -> str:
        return "EQD2" if self.measure == "eqd2" else "BED"

    @property
    def shown(self) -> str:
        if self.value is not None:
            return format_value(self.value, self.unit)
        if self.interval is not None:
            lo, hi = self.interval
            return f"{format_value(lo, self.unit).split()[0]}–{format_value(hi, self.unit)}"
        return "-"

    def as_json(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "graded": self.graded,
            "metric": self.metric,
            "value": _round(self.value, self.unit),
            "unit": self.unit,
            "interval": None
            if self.interval is None
            else {
                "low": _round(self.interval[0], self.unit),
                "high": _round(self.interval[1], self.unit),
                "unit": self.unit,
            },
            "alpha_beta_gy": self.alpha_beta_gy,
            "source": self.source,
            "unconfirmed": self.unconfirmed,
            "physical_value": _round(self.physical_value, self.physical_unit),
            "physical_unit": self.physical_unit,
            "note": self.note,
            "basis": self.basis,
        }


class EndCapValue(NamedTuple):
    """A graded DVH value under one end-cap convention: a number, or an interval when part of
    the structure under that convention lies outside the dose grid (or the dose per fraction of
    an equivalent dose is bounded), and the grade it gets there; when that grade is not
    evaluable, ``possible`` lists the grade under each branch (an unknown clinical fact, an end of
    the interval), as :attr:`Finding.possible_grades` does."""

    end_cap: str
    value: float | None
    grade: Grade
    interval: tuple[float, float] | None = None
    possible: tuple[tuple[Grade, str], ...] = ()

    @property
    def outcome(self) -> tuple[Grade, frozenset[Grade]]:
        """What a reviewer compares between conventions: the grade, and the grades it can still
        resolve to (a finding not evaluable under every convention may resolve differently)."""
        return self.grade, frozenset(g for g, _ in self.possible)

    def shown(self, unit: str) -> str:
        if self.value is not None:
            return format_value(self.value, unit)
        if self.interval is not None:
            return f"{format_value(self.interval[0], unit).split()[0]}–{format_value(self.interval[1], unit)}"
        return "-"


@dataclass(frozen=True)
class Finding:
    """The result of one rule on one structure (or on the plan).

    ``category`` says what kind of problem a finding reports: ``plan_quality`` (graded per
    protocol / variation acceptable / deviation unacceptable), ``resubmit`` (the export must be
    redone: dose grid too small, frames of reference, unreadable files; never counted as a dose
    deviation), ``query`` (a question to the centre: an attribute the check needs is absent, a
    target the protocol cannot place) or ``eligibility``. ``value_text`` holds a value that is not a number (a dose
    algorithm, a Child-Pugh class, an approval status). ``interval`` is the range a value can
    take when part of the input is uncertain but bounded; ``possible_grades`` lists the grade
    under each branch (an unknown clinical fact, or an end of the interval) when they differ.
    """

    rule: str
    structure: str | None
    matched_roi: str | None
    match: str | None
    metric: str
    value: float | None
    unit: str
    grade: Grade
    message: str
    source: str = ""
    unconfirmed: bool = False
    reference_gy: float | None = None
    reference_target: str | None = None
    per_protocol: Limit | None = None
    variation: Limit | None = None
    category: str = "plan_quality"
    value_text: str | None = None
    interval: tuple[float, float] | None = None
    possible_grades: tuple[tuple[Grade, str], ...] = ()  # (grade, the condition that gives it)
    # the value and grade under every end-cap convention, for a graded DVH value
    by_end_cap: tuple[EndCapValue, ...] = ()
    equivalent: EquivalentValue | None = None  # EQD2/BED: graded, or shown beside the physical value

    @property
    def convention_sensitive(self) -> bool:
        """Whether the grade depends on the end-cap convention (the reviewer must look): the grades
        differ, or, not evaluable, the grades it can resolve to do."""
        return len({e.outcome for e in self.by_end_cap}) > 1

    @property
    def best_case(self) -> Grade | None:
        """The best grade this finding can still have: its grade, or the best of its possible ones."""
        if self.grade is not Grade.NOT_EVALUABLE:
            return self.grade
        graded = [g for g, _ in self.possible_grades if g is not Grade.NOT_EVALUABLE]
        return min(graded, key=lambda g: g.severity) if graded else None

    @property
    def shown_value(self) -> str:
        """The value as every format prints it: a number with its unit, a text, or an interval."""
        if self.value is not None:
            return format_value(self.value, self.unit)
        if self.interval is not None:
            lo, hi = self.interval
            return f"{format_value(lo, self.unit).split()[0]}–{format_value(hi, self.unit)}"
        return self.value_text or "-"

    # patient coordinates (x, y, z) in mm of the organ's hottest 0.03 cc; set by the views pass
    location_mm: tuple[float, float, float] | None = None

    def as_json(self) -> dict[str, Any]:
        limits: dict[str, Any] = {}
        if self.per_protocol is not None:
            limits["per_protocol"] = self.per_protocol.as_json(self.unit)
        if self.variation is not None:
            limits["variation_acceptable"] = self.variation.as_json(self.unit)
        reference = None
        if self.reference_gy is not None:
            reference = {"dose_gy": _round(self.reference_gy, "Gy"), "target": self.reference_target}
        out: dict[str, Any] = {
            "rule": self.rule,
            "structure": self.structure,
            "matched_roi": self.matched_roi,
            "match": self.match,
            "metric": self.metric,
            "value": _round(self.value, self.unit),
            "unit": self.unit,
            "reference": reference,
            "grade": self.grade.value,
            "limits": limits,
            "unconfirmed": self.unconfirmed,
            "source": self.source,
            "message": self.message,
            "category": self.category,
            "value_text": self.value_text,
            "interval": None
            if self.interval is None
            else {
                "low": _round(self.interval[0], self.unit),
                "high": _round(self.interval[1], self.unit),
                "unit": self.unit,
            },
            "possible_grades": [{"grade": g.value, "condition": c} for g, c in self.possible_grades],
            "equivalent_dose": None if self.equivalent is None else self.equivalent.as_json(),
        }
        if self.by_end_cap:
            out["by_end_cap"] = {e.end_cap: self._end_cap_json(e) for e in self.by_end_cap}
        if self.location_mm is not None:
            out["location_mm"] = [round(float(v), 1) for v in self.location_mm]
        return out

    def _end_cap_json(self, e: EndCapValue) -> dict[str, Any]:
        interval = None
        if e.interval is not None:
            interval = {"low": _round(e.interval[0], self.unit), "high": _round(e.interval[1], self.unit),
                        "unit": self.unit}  # fmt: skip
        out: dict[str, Any] = {"value": _round(e.value, self.unit), "interval": interval, "grade": e.grade.value}
        if e.possible:
            out["possible_grades"] = [{"grade": g.value, "condition": c} for g, c in e.possible]
        return out


@dataclass(frozen=True)
class NotApplicable:
    """A rule that does not apply to this plan, and why (a rule never vanishes from a report)."""

    rule: str
    structure: str | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "structure": self.structure, "reason": self.reason}


@dataclass(frozen=True)
class StructureSummary:
    roi: str | None
    volume_cc: float | None
    min_gy: float | None
    mean_gy: float | None
    max_gy: float | None
    uncovered_cc: float | None
    # the DVH was computed from this dose up only (all the protocol asks of the structure is its
    # hot end): no minimum or mean; None for a whole DVH
    dvh_from_gy: float | None = None

    def as_json(self) -> dict[str, Any]:
        out = {
            "roi": self.roi,
            "volume_cc": _round(self.volume_cc, "cc"),
            "min_gy": _round(self.min_gy, "Gy"),
            "mean_gy": _round(self.mean_gy, "Gy"),
            "max_gy": _round(self.max_gy, "Gy"),
            "uncovered_cc": _round(self.uncovered_cc, "cc"),
        }
        if self.dvh_from_gy is not None:
            out["dvh_from_gy"] = _round(self.dvh_from_gy, "Gy")
        return out


@dataclass(frozen=True)
class InputFile:
    path: str
    modality: str
    sop_instance_uid: str
    sha256: str


@dataclass(frozen=True)
class PlanReport:
    patient_id: str
    patient_name: str
    plan_uid: str | None
    plan_uids: tuple[str, ...]
    plan_label: str
    plan_date: str | None
    approval_status: str | None
    institution: str
    inputs: tuple[InputFile, ...]
    dose_source: str | None
    prescription: dict[str, Any] | None
    findings: tuple[Finding, ...]
    eligibility: tuple[Finding, ...]
    structures: dict[str, StructureSummary]
    warnings: tuple[str, ...]
    errors: tuple[dict[str, str], ...] = ()
    curves: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)
    not_applicable: tuple[NotApplicable, ...] = ()
    unmatched_rois: tuple[str, ...] = ()  # ROIs that match no protocol structure
    stored_dvh: tuple[str, ...] = ()  # the planning system's stored DVHs against rtqa's: warnings only
    views: tuple[SliceView, ...] = ()  # image views for the HTML page (not in JSON)
    course: dict[str, Any] | None = None  # the treatment course: its plans, fraction groups, composite dose

    @property
    def not_evaluable(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.rule for f in self.findings if f.grade is Grade.NOT_EVALUABLE))

    @property
    def complete(self) -> bool:
        return not self.errors and not self.not_evaluable

    @property
    def resubmit(self) -> bool:
        """The export must be redone (a finding of category ``resubmit``, or an unreadable plan)."""
        return any(e.get("type") != "InternalError" for e in self.errors) or any(
            f.category == "resubmit" for f in self.findings
        )

    @property
    def grade(self) -> Grade:
        """The worst grade that is certain: of the graded findings, and the best case of each
        finding that is not evaluable but can only end in some grades (an unknown fact, an
        interval). ``NOT_EVALUABLE`` only when nothing could be graded."""
        certain = [g for f in self.findings if f.category != "resubmit" and (g := f.best_case) is not None]
        if not certain:
            return Grade.NOT_EVALUABLE
        return max(certain, key=lambda g: g.severity)

    @property
    def convention_sensitive(self) -> tuple[str, ...]:
        """Rules whose grade (or eligibility verdict) depends on the end-cap convention: flagged
        for the reviewer."""
        return tuple(dict.fromkeys(f.rule for f in (*self.findings, *self.eligibility) if f.convention_sensitive))

    @property
    def verdict(self) -> str:
        """What summaries count a plan as, each plan in one column: ``ineligible`` (the patient
        fails an eligibility rule: a protocol violation, whatever the plan's quality),
        ``not_evaluable`` (nothing graded), ``deviation_unacceptable`` (certain, complete or not),
        ``incomplete`` (something not evaluable and no certain deviation), or the grade of a
        complete plan. An incomplete plan is never counted as per protocol or variation
        acceptable, nor is an ineligible patient's. Eligibility unknown leaves the plan's verdict
        as it is (the report and exit code 8 say it apart)."""
        if self.eligibility_status == "ineligible":
            return "ineligible"
        g = self.grade
        if g is Grade.NOT_EVALUABLE or g is Grade.DEVIATION_UNACCEPTABLE:
            return str(g.value)
        return str(g.value) if self.complete else "incomplete"

    @property
    def eligibility_status(self) -> str:
        grades = [f.grade for f in self.eligibility]
        if any(g is Grade.DEVIATION_UNACCEPTABLE for g in grades):
            return "ineligible"
        if not grades or any(g is Grade.NOT_EVALUABLE for g in grades):
            return "unknown"
        return "eligible"

    def as_json(self, *, include_names: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"patient_id": self.patient_id}
        if include_names:
            out["patient_name"] = self.patient_name
        out.update(
            {
                "plan_uid": self.plan_uid,
                "plan_uids": list(self.plan_uids),
                "plan_label": self.plan_label,
                "plan_date": self.plan_date,
                "approval_status": self.approval_status,
                "institution": self.institution,
                "inputs": [
                    {"path": i.path, "modality": i.modality, "sop_instance_uid": i.sop_instance_uid, "sha256": i.sha256}
                    for i in self.inputs
                ],
                "dose_source": self.dose_source,
                "prescription": self.prescription,
                "verdict": self.verdict,
                "grade": self.grade.value,
                "complete": self.complete,
                "resubmit": self.resubmit,
                "not_evaluable": list(self.not_evaluable),
                "convention_sensitive": list(self.convention_sensitive),
                "not_applicable": [n.as_json() for n in self.not_applicable],
                "unmatched_rois": list(self.unmatched_rois),
                "stored_dvh": list(self.stored_dvh),
                "eligibility": {"status": self.eligibility_status, "items": [f.as_json() for f in self.eligibility]},
                "findings": [f.as_json() for f in self.findings],
                "structures": {k: v.as_json() for k, v in self.structures.items()},
                "warnings": list(self.warnings),
                "errors": list(self.errors),
                "course": self.course,
            }
        )
        return out


def _round(value: float | None, unit: str) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), PRECISION.get(unit, 2))


@dataclass(frozen=True)
class CheckResult:
    protocol: Protocol
    reports: tuple[PlanReport, ...]
    unassigned: tuple[UnassignedFile, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (file, reason): verification plans
    warnings: tuple[str, ...] = ()  # about the run as a whole (the clinical CSV, say)
    checked_at: str | None = None  # ISO 8601 UTC time of the check
    skipped_files: tuple[tuple[str, str], ...] = ()  # (path, reason): not regular files, never opened
