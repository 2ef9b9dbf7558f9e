"""Evaluate a loaded plan against a protocol: every rule gives findings or says why it does not
apply. Pure: no file I/O, no printing; the same inputs give the same report.

The work is split into small checks, one module per rule kind (:mod:`rtqa.evaluation.checks`),
sharing one context (structures, stacks, DVHs, prescriptions: :mod:`rtqa.evaluation.context`)
and one grading function (:mod:`rtqa.evaluation.grading`). This module runs them in protocol
order and assembles the report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rtqa.case import LoadedCase
from rtqa.errors import RtqaError
from rtqa.evaluation.casedvh import review_stored_dvhs
from rtqa.evaluation.checks import run_rule
from rtqa.evaluation.context import FRAME_RULE, FRAME_UNPROVEN, CaseContext
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import Protocol
from rtqa.protocol.names import NameMap
from rtqa.report.model import Finding, InputFile, NotApplicable, PlanReport, StructureSummary


def evaluate(
    case: LoadedCase, protocol: Protocol, *, clinical: ClinicalFacts | None = None, names: NameMap | None = None
) -> PlanReport:
    """Grade one loaded plan (or composite, or structure-set-only case) against a protocol;
    ``names`` is the QA office's name map (site ROI names per institution)."""
    ctx = CaseContext(case, protocol, clinical, names=names)
    findings: list[Finding] = [*_structure_findings(ctx), *_target_queries(ctx)]
    not_applicable: list[NotApplicable] = []
    eligibility: list[Finding] = []
    for rule in (*protocol.fractionation, *protocol.technical, *protocol.constraints, *protocol.eligibility):
        for item in run_rule(ctx, rule):
            if isinstance(item, NotApplicable):
                not_applicable.append(item)
            elif rule.kind == "eligibility":
                eligibility.append(item)
            else:
                findings.append(item)
    return _report(ctx, findings, eligibility, not_applicable)


def _structure_findings(ctx: CaseContext) -> list[Finding]:
    """A finding for each required structure that is absent, and for each structure present but
    unusable or ambiguous (required or not): the export must be corrected."""
    out = []
    for name in ctx.protocol.structures:
        missing = ctx.unavailable.get(name)
        if missing is not None and (missing.required or missing.present):
            stand_in = ctx.needed_only_for_site_composites(name)
            if stand_in and not missing.present:
                ctx.warnings.append(f"required structure {name} is not contoured ({missing.reason}); {stand_in}")
                continue
            what = "required structure" if not missing.present else "structure"
            category = "query" if missing.query else "resubmit"
            out.append(_presence(name, f"not evaluable: {what} {name}: {missing.reason}", category))
        elif name in ctx.ambiguous:
            out.append(_presence(name, f"not evaluable: {ctx.ambiguous[name]}"))
    if ctx.frames.problem is not None:
        message = f"not evaluable: resubmit: {FRAME_UNPROVEN}: {ctx.frames.problem}; no dose is graded on the contours"
        out.insert(
            0,
            Finding(FRAME_RULE, None, None, None, "frame of reference", None, "", Grade.NOT_EVALUABLE, message,
                    category="resubmit"),
        )  # fmt: skip
    return out


def _presence(name: str, message: str, category: str = "resubmit") -> Finding:
    return Finding(
        f"STRUCTURE:{name}", name, None, None, "presence", None, "", Grade.NOT_EVALUABLE, message, category=category
    )


def _target_queries(ctx: CaseContext) -> list[Finding]:
    """A query for each target-like ROI the protocol cannot place: the rules on targets would
    be graded without it (its coverage, its hot spot, the normal liver still holding it)."""
    out = []
    institution = ctx.institution or "(no institution name)"
    for t in ctx.identity.unplaced_targets:
        label = ctx.label(t.index)
        message = (
            f"not evaluable: ROI {label!r} looks like a target ({'; '.join(t.why)}), but the protocol cannot place it: "
            f"ask the centre which protocol structure it is, and record the answer in the name map (--names) "
            f"under institution {institution!r}"
        )
        finding = Finding(
            f"IDENTITY:{label}", None, label, None, "identity", None, "", Grade.NOT_EVALUABLE, message, category="query"
        )
        out.append(finding)
    return out


def _report(
    ctx: CaseContext, findings: list[Finding], eligibility: list[Finding], not_applicable: list[NotApplicable]
) -> PlanReport:
    case = ctx.case
    plans = case.plans
    first = plans[0] if plans else None
    ss = case.structure_set
    headers = (
        *case.plan_set.plans,
        *case.plan_set.doses,
        *((case.plan_set.structure_set,) if case.plan_set.structure_set else ()),
    )
    modality = {h.path: str(getattr(h.modality, "value", h.modality)) for h in headers}
    uids = {h.path: h.sop_instance_uid for h in headers}
    inputs = tuple(
        InputFile(path, modality.get(path, ""), uids.get(path, ""), case.sha256.get(path, ""))
        for path in case.plan_set.files
    )
    prescription = None
    if plans:
        sources = sorted({rx.source.value for rx in ctx.plan_rx if rx.source})
        prescription = {
            "total_gy": None if ctx.total_gy is None else round(ctx.total_gy, 2),
            "fractions": ctx.fractions,
            "per_fraction_gy": None if not (ctx.total_gy and ctx.fractions) else round(ctx.total_gy / ctx.fractions, 2),
            "source": " + ".join(sources) if sources else None,
            "targets": [
                {"name": ctx.label(i), "total_gy": round(v, 2), "source": src}
                for i, (v, src) in sorted(ctx.rx_by_roi.items(), key=lambda kv: ctx.label(kv[0]))
            ],
        }
    structures, curves = _structures(ctx)
    warnings = ctx.warnings
    for dvh in ctx.dvhs.values():
        warnings.extend(w for w in dvh.warnings if w not in warnings)
    if ctx.identity.unmatched:
        warnings.append(
            f"{len(ctx.identity.unmatched)} ROI(s) match no structure of the protocol (not graded): "
            + ", ".join(repr(n) for n in ctx.identity.unmatched)
        )
    stored_dvh: list[str] = []
    if case.stored_dvhs and ss is not None and ctx.dose is not None and ctx.frames.problem is None:
        stored_dvh = review_stored_dvhs(
            ss,
            [],
            case.stored_dvhs,
            grid_max_gy=ctx.dose.max_gy,
            dose=ctx.dose,
            prescription_gy=ctx.highest_gy,
            roi_numbers={ctx.rois[i].number for i in ctx.roi_stacks},  # the ROIs this report grades
        )
    if plans and plans[0].is_verification:
        warnings.insert(0, "this is a VERIFICATION plan: it is not graded against the protocol")
    institution = ctx.institution
    return PlanReport(
        patient_id=case.plan_set.patient_id,
        patient_name=first.patient_name if first else (ss.patient_name if ss else ""),
        plan_uid=first.sop_instance_uid if first else None,
        plan_uids=tuple(p.sop_instance_uid for p in plans),
        plan_label=" + ".join(p.label for p in plans) if plans else f"structure set {ss.label if ss else ''}",
        plan_date=first.date.isoformat() if first and first.date else None,
        approval_status=(first.approval_status or None) if first else None,
        institution=institution or "",
        inputs=inputs,
        dose_source=case.dose_choice.source if case.dose_choice else None,
        prescription=prescription,
        findings=tuple(findings),
        eligibility=tuple(eligibility),
        structures=structures,
        warnings=tuple(dict.fromkeys(warnings)),
        curves=curves,
        not_applicable=tuple(not_applicable),
        unmatched_rois=ctx.unmatched_rois(),
        stored_dvh=tuple(stored_dvh),
        course=_course(ctx),
    )


def _course(ctx: CaseContext) -> dict[str, Any] | None:
    """The course in the report: each plan with its fractions, fraction groups and own dose, how
    the plans were joined, and how the composite dose was formed (resampling included)."""
    case = ctx.case
    if not case.plans:
        return None
    course = case.plan_set.course
    doses = {pd.plan_uid: pd for pd in case.plan_doses}
    plans = []
    for plan, rx in zip(case.plans, ctx.plan_rx, strict=True):
        pd = doses.get(plan.sop_instance_uid)
        plans.append(
            {
                "plan_uid": plan.sop_instance_uid,
                "plan_label": plan.label,
                "total_gy": None if rx.total_gy is None else round(rx.total_gy, 2),
                "fractions": rx.fractions,
                "fraction_groups": [
                    {
                        "number": g.number,
                        "fractions": g.fractions,
                        "per_fraction_gy": None if g.per_fraction_gy is None else round(g.per_fraction_gy, 2),
                    }
                    for g in rx.groups
                ],
                "dose_source": pd.dose_source if pd else None,
                "own_dose": pd is not None and pd.dose is not None,
            }
        )
    return {
        "institution": course.institution if course else case.plans[0].institution_name,
        "patient_id": case.plan_set.patient_id,
        "frame_of_reference_uid": course.frame_of_reference_uid if course else case.plans[0].frame_of_reference_uid,
        "plans": plans,
        "links": list(course.links) if course else [],
        "composite": case.composite,
    }


def _structures(
    ctx: CaseContext,
) -> tuple[dict[str, StructureSummary], dict[str, tuple[tuple[float, ...], tuple[float, ...]]]]:
    structures: dict[str, StructureSummary] = {}
    curves: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
    protocol = ctx.protocol
    for name in [*protocol.structures, *(d for d in protocol.derived if d not in protocol.structures)]:
        if name in ctx.unavailable or name in ctx.ambiguous:
            continue
        if name not in ctx.structure_rois and name not in protocol.derived:
            continue
        roi = ctx.roi_label(name)
        spec = protocol.structures.get(name)
        # the external contour's own DVH serves no rule: its volume is enough
        skip_dose = spec is not None and spec.role == "other" and (name, ()) not in ctx.dvhs
        try:
            if ctx.dose is None or skip_dose or ctx.frames.problem is not None:
                structures[name] = StructureSummary(roi, ctx.stack(name).volume_cc, None, None, None, None)
                continue
            dvh = ctx.dvh(name, all_conventions=False)  # the report lists the protocol's convention
        except RtqaError as exc:
            ctx.warnings.append(f"{name}: {exc}")
            continue
        structures[name] = StructureSummary(
            roi,
            dvh.volume_cc,
            dvh.min_gy,
            dvh.mean_gy,
            dvh.max_gy,
            dvh.uncovered_cc,
            dvh.exact_from_gy if dvh.is_partial else None,
        )
        if dvh.is_partial:
            continue  # the hot end only: no whole curve to draw
        grid = np.linspace(0.0, dvh.max_gy or 0.0, 101)
        curve = np.interp(grid, dvh.dose_edges_gy, dvh.volume_ge_cc, left=dvh.covered_cc, right=0.0)
        pct = curve / dvh.covered_cc * 100 if dvh.covered_cc > 0 else curve
        curves[name] = (tuple(float(round(v, 3)) for v in grid), tuple(float(round(v, 2)) for v in pct))
    return structures, curves
