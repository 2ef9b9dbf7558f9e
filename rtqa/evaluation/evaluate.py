"""Evaluate a loaded plan against a protocol: one finding per rule, with grades. Pure.

No file I/O, no printing: the same inputs give the same report. Missing structures make their
rules not evaluable (required structures) or not applicable (optional ones); a rule whose
clinical fact is missing is not evaluable and names the fact.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import numpy as np

from rtqa.case import LoadedCase, TargetPrescription
from rtqa.dvh.engine import DVH, PreparedDose, compute_dvh, prepare_dose
from rtqa.dvh.geometry import SlabStack, combine, evaluate_expression, expression_names, roi_stack
from rtqa.dvh.metrics import MetricError, evaluate_metric
from rtqa.errors import RtqaError
from rtqa.evaluation.prescription import derive_prescription
from rtqa.model import DoseGrid, Heterogeneity
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.limits import Grade, Limit, format_value, grade, round_value
from rtqa.protocol.loader import Protocol, Rule
from rtqa.protocol.matching import Matching, match_structures
from rtqa.report.model import Finding, InputFile, PlanReport, StructureSummary

OAR_BOUNDARY_FRACTION = 0.05  # DOMAIN.md 4.2: uncovered OAR volume may count as ~0 Gy below this
_SYMBOL = {"<=": "≤", ">=": "≥", "<": "<", ">": ">"}


def evaluate(case: LoadedCase, protocol: Protocol, *, clinical: ClinicalFacts | None = None) -> PlanReport:
    """Grade one loaded plan (or composite, or structure-set-only case) against a protocol."""
    return _Evaluation(case, protocol, clinical).run()


def _limit_text(limit: Limit | None, unit: str) -> str:
    if limit is None:
        return ""
    if limit.op == "between":
        return f"{limit.low:g}–{limit.high:g} {unit}".strip()
    return f"{_SYMBOL[limit.op]} {limit.value:g} {unit}".strip()


class _Evaluation:
    def __init__(self, case: LoadedCase, protocol: Protocol, clinical: ClinicalFacts | None) -> None:
        self.case = case
        self.protocol = protocol
        self.clinical = clinical
        self.warnings: list[str] = list(case.warnings)
        self.findings: list[Finding] = []
        self.dose: DoseGrid | None = case.dose
        self.prepared: PreparedDose | None = prepare_dose(case.dose) if case.dose is not None else None
        self.roi_stacks: dict[str, SlabStack] = {}
        self.roi_problems: dict[str, str] = {}
        self.dvhs: dict[str, DVH] = {}
        self.matching: Matching = match_structures([], protocol)
        self.structure_rois: dict[str, list[str]] = {}
        self.missing: dict[str, tuple[str, bool]] = {}  # structure -> (reason, required)
        self.rx_by_roi: dict[str, tuple[float, str]] = {}

    # -- set-up ---------------------------------------------------------------------------------

    def run(self) -> PlanReport:
        ss = self.case.structure_set
        if ss is not None:
            planes = ss.plane_positions_mm
            names = [r.name for r in ss.rois]
            for roi in ss.rois:
                if names.count(roi.name) > 1:
                    self.roi_problems[roi.name] = f"ROI name {roi.name!r} is used by {names.count(roi.name)} ROIs"
                    continue
                try:
                    self.roi_stacks[roi.name] = roi_stack(roi, planes, end_cap=self.protocol.end_cap)
                except RtqaError as exc:
                    self.roi_problems[roi.name] = str(exc)
            self.matching = match_structures(names, self.protocol)
            self.warnings.extend(self.matching.notes)
        self._resolve_structures()
        self._prescriptions()
        self._fractionation()
        self._technical()
        for rule in self.protocol.constraints:
            self._constraint(rule)
        eligibility = [f for rule in self.protocol.eligibility for f in self._eligibility(rule)]
        return self._report(eligibility)

    def _resolve_structures(self) -> None:
        for name, spec in self.protocol.structures.items():
            if name in self.matching.ambiguous:
                self.missing[name] = (self.matching.ambiguous[name], spec.required)
                continue
            matched = list(self.matching.rois(name))
            usable = [r for r in matched if r in self.roi_stacks]
            if usable:
                self.structure_rois[name] = usable
                for r in matched:
                    if r not in usable:
                        self.warnings.append(f"{name}: ROI {r!r} not used ({self.roi_problems.get(r)})")
                continue
            if matched:
                reason = "; ".join(self.roi_problems.get(r, "unusable") for r in matched)
            elif self.case.structure_set is None:
                reason = "no structure set"
            else:
                reason = (
                    f"no ROI matches {name} (names and aliases: {', '.join(spec.aliases[:6])}"
                    + (", ..." if len(spec.aliases) > 6 else "")
                    + ")"
                )
            self.missing[name] = (reason, spec.required)
        for name, dspec in self.protocol.derived.items():
            if dspec.prefer_roi and name in self.structure_rois:
                self.missing.pop(name, None)
                continue
            operands = expression_names(dspec.expression)
            absent = [o for o in operands if o in self.missing]
            if absent:
                required = any(self.missing[o][1] for o in absent)
                self.missing[name] = (
                    f"needs {', '.join(absent)}, which {'is' if len(absent) == 1 else 'are'} missing",
                    required,
                )
                continue
            self.missing.pop(name, None)
        for name, (reason, required) in self.missing.items():
            if required and name in self.protocol.structures:
                self.findings.append(
                    Finding(
                        f"STRUCTURE:{name}",
                        name,
                        None,
                        None,
                        "presence",
                        None,
                        "",
                        Grade.NOT_EVALUABLE,
                        f"required structure {name} missing: {reason}",
                    )
                )

    def stack(self, structure: str, roi: str | None = None) -> SlabStack:
        """The slab stack of one ROI, of the union of a structure's ROIs, or of a derived one."""
        if roi is not None:
            return self.roi_stacks[roi]
        if structure in self.structure_rois:
            rois = self.structure_rois[structure]
            out = self.roi_stacks[rois[0]]
            for r in rois[1:]:
                out = combine("|", out, self.roi_stacks[r], name=structure)
            return out if len(rois) > 1 else SlabStack(structure, out.slabs, out.end_cap)
        spec = self.protocol.derived[structure]
        operands = {n: self.stack(n) for n in expression_names(spec.expression)}
        return evaluate_expression(spec.expression, operands, name=structure)

    def dvh(self, structure: str, roi: str | None = None) -> DVH:
        if roi is not None and self.structure_rois.get(structure) == [roi]:
            roi = None  # a structure of one ROI: the same DVH either way
        key = f"{structure}\x00{roi or ''}"
        if key not in self.dvhs:
            assert self.dose is not None
            self.dvhs[key] = compute_dvh(self.stack(structure, roi), self.dose, prepared=self.prepared)
        return self.dvhs[key]

    # -- prescriptions --------------------------------------------------------------------------

    def _prescriptions(self) -> None:
        case = self.case
        clinical_rx = self.clinical.prescriptions_gy if self.clinical else {}
        if clinical_rx and case.plans:
            targets = tuple(TargetPrescription(k, v) for k, v in sorted(clinical_rx.items()))
            roi_names = {r.number: r.name for r in case.structure_set.rois} if case.structure_set else {}
            self.plan_rx = [derive_prescription(p, clinical_targets=targets, roi_names=roi_names) for p in case.plans]
        else:
            self.plan_rx = list(case.prescriptions)
        totals = [rx.total_gy for rx in self.plan_rx]
        self.total_gy = (
            sum(t for t in totals if t is not None) if totals and all(t is not None for t in totals) else None
        )
        fractions = [rx.fractions for rx in self.plan_rx]
        self.fractions = sum(f for f in fractions if f) if fractions and all(fractions) else None
        # per target ROI: case-report form, dose reference to the ROI, dose in the name, GTV -> PTV
        by_roi: dict[str, float] = {}
        for rx in self.plan_rx:
            for t in rx.targets:
                by_roi[t.name] = by_roi.get(t.name, 0.0) + t.total_gy
        target_names = [s for s, spec in self.protocol.structures.items() if spec.role == "target"]
        for structure in target_names:
            for roi in self.structure_rois.get(structure, []):
                if roi in clinical_rx:
                    self.rx_by_roi[roi] = (clinical_rx[roi], "case-report form")
                elif structure in clinical_rx and len(self.structure_rois[structure]) == 1:
                    self.rx_by_roi[roi] = (clinical_rx[structure], "case-report form")
                elif roi in by_roi:
                    self.rx_by_roi[roi] = (by_roi[roi], "dose reference")
                elif (named := _dose_in_name(roi)) is not None:
                    self.rx_by_roi[roi] = (named, "dose in the ROI name")
        for structure in target_names:
            for roi in self.structure_rois.get(structure, []):
                if roi in self.rx_by_roi:
                    continue
                partner = _ptv_partner(roi)
                if partner in self.rx_by_roi:
                    self.rx_by_roi[roi] = (self.rx_by_roi[partner][0], f"prescription of {partner}")
                elif self.total_gy is not None:
                    self.rx_by_roi[roi] = (self.total_gy, "plan prescription (no target-specific one found)")
        self.highest_gy = max(
            [v for v, _ in self.rx_by_roi.values()] + ([self.total_gy] if self.total_gy else []), default=None
        )

    # -- fractionation --------------------------------------------------------------------------

    def _fractionation(self) -> None:
        for rule in self.protocol.fractionation:
            if not self.case.plans:
                self._not_evaluable(rule, None, None, "no plan (structure set only)")
                continue
            if rule.id == "FX_DOSE_PER_FRACTION":
                for plan, rx in zip(self.case.plans, self.plan_rx, strict=True):
                    if rx.total_gy is None or not rx.fractions:
                        self._not_evaluable(
                            rule, None, None, f"plan {plan.label}: prescription or number of fractions unknown"
                        )
                        continue
                    levels = sorted({t.total_gy for t in rx.targets} or {rx.total_gy}, reverse=True)
                    for level in levels:
                        names = [t.name for t in rx.targets if t.total_gy == level]
                        label = f" ({', '.join(names)})" if names and len(levels) > 1 else ""
                        value = level / rx.fractions
                        self._graded(
                            rule,
                            names[0] if len(names) == 1 and len(levels) > 1 else None,
                            None,
                            None,
                            "dose per fraction",
                            value,
                            f"plan {plan.label}{label}: {level:.2f} Gy in {rx.fractions} fractions = "
                            + "{value} per fraction",
                        )
            else:
                if self.total_gy is None:
                    self._not_evaluable(rule, None, None, "total prescribed dose unknown")
                    continue
                plans = " + ".join(f"{rx.total_gy:.2f} Gy" for rx in self.plan_rx)
                sources = ", ".join(sorted({rx.source.value for rx in self.plan_rx if rx.source}))
                detail = f"{plans} = " if len(self.plan_rx) > 1 else ""
                self._graded(
                    rule,
                    None,
                    None,
                    None,
                    "total dose",
                    self.total_gy,
                    f"total dose {detail}" + "{value}" + f" (from {sources})",
                )

    # -- technical checks -----------------------------------------------------------------------

    def _technical(self) -> None:
        for rule in self.protocol.technical:
            check = rule.check
            needs_dose = check not in (
                "beam_radiation",
                "beam_energy",
                "prescription_agreement",
                "dose_algorithm",
                "gtv_outside_ptv",
            )
            if needs_dose and self.dose is None:
                self._not_evaluable(rule, None, None, "no dose")
                continue
            getattr(self, f"_check_{check}")(rule)

    def _check_dose_grid_spacing(self, rule: Rule) -> None:
        assert self.dose is not None
        dx = float(self.dose.x_mm[1] - self.dose.x_mm[0]) if self.dose.x_mm.size > 1 else 0.0
        dy = float(self.dose.y_mm[1] - self.dose.y_mm[0]) if self.dose.y_mm.size > 1 else 0.0
        dz = float(np.max(np.diff(self.dose.z_mm))) if self.dose.z_mm.size > 1 else 0.0
        largest = max(dx, dy, dz)
        self._graded(
            rule,
            None,
            None,
            None,
            "largest voxel dimension",
            largest,
            f"dose grid {dx:.2f} x {dy:.2f} x {dz:.2f} mm: largest " + "{value}",
        )

    def _coverage_findings(self, rule: Rule, role: str) -> None:
        assert self.dose is not None
        structures = [
            s
            for s, spec in self.protocol.structures.items()
            if (spec.role == "target") == (role == "target") and spec.role != "other" and s in self.structure_rois
        ]
        boundary = self._boundary_max()
        worst = 0.0
        details = []
        for s in structures:
            for roi in self.structure_rois[s]:
                dvh = self.dvh(s, roi)
                if dvh.uncovered_cc > 0.005:
                    worst = max(worst, dvh.uncovered_cc)
                    details.append(f"{roi} {dvh.uncovered_cc:.2f} cc")
        if role == "target":
            grade_ = Grade.PER_PROTOCOL if not details else Grade.DEVIATION_UNACCEPTABLE
            msg = (
                "every target inside the dose grid"
                if not details
                else "targets outside the dose grid: " + ", ".join(details)
            )
        else:
            rx = self.highest_gy or 0.0
            low = rx > 0 and boundary < OAR_BOUNDARY_FRACTION * rx
            grade_ = Grade.PER_PROTOCOL if not details or low else Grade.DEVIATION_UNACCEPTABLE
            msg = (
                "every organ at risk inside the dose grid"
                if not details
                else (
                    f"outside the dose grid: {', '.join(details)}; grid boundary dose {boundary:.2f} Gy "
                    f"{'<' if low else '>='} {OAR_BOUNDARY_FRACTION:.0%} of {rx:.2f} Gy"
                    + (" (the uncovered part counts as 0 Gy)" if low else " (their metrics are not evaluable)")
                )
            )
        self._plain(rule, "uncovered volume", round(worst, 2), "cc", grade_, msg)

    def _check_target_coverage(self, rule: Rule) -> None:
        self._coverage_findings(rule, "target")

    def _check_oar_coverage(self, rule: Rule) -> None:
        self._coverage_findings(rule, "oar")

    def _boundary_max(self) -> float:
        assert self.dose is not None
        d = self.dose.dose_gy
        faces = [d[0], d[-1], d[:, 0], d[:, -1], d[:, :, 0], d[:, :, -1]]
        return float(max(f.max() for f in faces))

    def _check_heterogeneity(self, rule: Rule) -> None:
        info = self.dose.info if self.dose is not None else None
        state = info.heterogeneity if info else Heterogeneity.UNKNOWN
        values = "/".join(info.heterogeneity_values) if info and info.heterogeneity_values else "absent"
        if state is Heterogeneity.UNKNOWN:
            self.warnings.append(
                "TissueHeterogeneityCorrection is absent from the RT Dose: the site must attest "
                "that heterogeneity correction was on"
            )
            grade_, msg = Grade.PER_PROTOCOL, "not stated in the RT Dose (the site attests); not a deviation"
        elif state is Heterogeneity.OFF:
            grade_, msg = Grade.DEVIATION_UNACCEPTABLE, f"heterogeneity correction off ({values})"
        else:
            grade_, msg = Grade.PER_PROTOCOL, f"heterogeneity correction on ({values})"
        self._plain(rule, "TissueHeterogeneityCorrection", None, "", grade_, msg)

    def _check_dose_type(self, rule: Rule) -> None:
        info = self.dose.info if self.dose is not None else None
        value = info.dose_type.value if info else "unknown"
        ok = value in rule.allowed
        self._plain(
            rule,
            "DoseType",
            None,
            "",
            Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE,
            f"DoseType {value} (allowed: {', '.join(rule.allowed)})",
        )

    def _check_prescription_agreement(self, rule: Rule) -> None:
        if not self.case.plans:
            self._not_evaluable(rule, None, None, "no plan")
            return
        for plan, rx in zip(self.case.plans, self.plan_rx, strict=True):
            if len(rx.candidates) < 2 or rx.total_gy is None:
                self._plain(
                    rule,
                    "prescription sources",
                    None,
                    "%",
                    Grade.PER_PROTOCOL,
                    f"plan {plan.label}: one prescription source "
                    f"({rx.source.value if rx.source else 'none'}), nothing to compare",
                )
                continue
            spread = max(abs(v - rx.total_gy) for _, v in rx.candidates) / rx.total_gy * 100
            listed = ", ".join(f"{s.value} {v:.2f} Gy" for s, v in rx.candidates)
            self._graded(
                rule,
                None,
                None,
                None,
                "prescription sources",
                spread,
                f"plan {plan.label}: {listed}; largest difference " + "{value}",
            )

    def _treatment_beams(self) -> list[tuple[str, Any]]:
        return [(p.label, b) for p in self.case.plans for b in p.treatment_beams]

    def _check_beam_radiation(self, rule: Rule) -> None:
        beams = self._treatment_beams()
        if not beams:
            self._not_evaluable(rule, None, None, "no treatment beams")
            return
        bad = [f"{b.name} ({b.radiation_type})" for _, b in beams if b.radiation_type not in rule.allowed]
        self._plain(
            rule,
            "RadiationType",
            None,
            "",
            Grade.DEVIATION_UNACCEPTABLE if bad else Grade.PER_PROTOCOL,
            (
                f"beams not {'/'.join(rule.allowed)}: {', '.join(bad)}"
                if bad
                else f"{len(beams)} treatment beams, all {'/'.join(rule.allowed)}; setup beams ignored"
            ),
        )

    def _check_beam_energy(self, rule: Rule) -> None:
        energies = [b.nominal_energy_mev for _, b in self._treatment_beams()]
        if not energies or any(e is None for e in energies):
            self._not_evaluable(rule, None, None, "nominal beam energy missing")
            return
        top = max(e for e in energies if e is not None)
        self._graded(
            rule,
            None,
            None,
            None,
            "highest nominal energy",
            top,
            f"treatment beam energies: {', '.join(sorted({f'{e:g}' for e in energies if e is not None}))} MV; "
            + "highest {value}",
        )

    def _check_gtv_outside_ptv(self, rule: Rule) -> None:
        assert rule.structure is not None and rule.within is not None
        for s in (rule.structure, rule.within):
            if s in self.missing:
                self._not_evaluable(rule, s, None, f"{s} missing: {self.missing[s][0]}")
                return
        try:
            outside = combine("-", self.stack(rule.structure), self.stack(rule.within)).volume_cc
        except RtqaError:
            outside = 0.0  # the difference is empty: nothing outside
        self._graded(
            rule,
            rule.structure,
            None,
            None,
            f"{rule.structure} outside {rule.within}",
            outside,
            "{value}" + f" of {rule.structure} lies outside {rule.within}",
        )

    def _check_dose_algorithm(self, rule: Rule) -> None:
        value = self.clinical.dose_algorithm if self.clinical else None
        if value is None:
            self._not_evaluable(rule, None, None, "needs the clinical fact dose_algorithm (--clinical CSV)")
            return
        ok = any(value.casefold() == a.casefold() for a in rule.allowed)
        self._plain(
            rule,
            "dose algorithm",
            None,
            "",
            Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE,
            f"dose algorithm {value!r} (allowed: {', '.join(rule.allowed)})",
        )

    # -- DVH constraints ------------------------------------------------------------------------

    def _facts_gate(self, rule: Rule) -> tuple[bool, str | None, bool]:
        """(applies, missing fact, unconfirmed by a clinical condition)."""
        for fact, values in rule.when.items():
            value = self.clinical.fact(fact) if self.clinical else None
            if value is None:
                return True, fact, False
            if value not in values:
                return False, None, False
        extra = False
        for fact, values in rule.unconfirmed_when.items():
            value = self.clinical.fact(fact) if self.clinical else None
            if value is not None and value in values:
                extra = True
                self.warnings.append(
                    f"{rule.id}: unconfirmed for {fact.replace('_', '-')} {value} ({rule.note or 'no published limit'})"
                )
        return True, None, extra

    def _constraint(self, rule: Rule) -> None:
        assert rule.structure is not None and rule.metric is not None
        applies, missing_fact, extra_unconfirmed = self._facts_gate(rule)
        if not applies:
            return
        structure = rule.structure
        if structure in self.missing:
            reason, required = self.missing[structure]
            if required:
                self._not_evaluable(rule, structure, None, f"{structure} missing: {reason}")
            return
        if missing_fact is not None:
            self._not_evaluable(rule, structure, None, f"needs the clinical fact {missing_fact} (--clinical CSV)")
            return
        if self.dose is None:
            self._not_evaluable(rule, structure, None, "no dose")
            return
        spec = self.protocol.structures.get(structure)
        many = spec is not None and spec.many
        rois: list[str | None] = list(self.structure_rois[structure]) if many and rule.scope == "each" else [None]
        for roi in rois:
            self._one_constraint(rule, structure, roi, extra_unconfirmed)

    def _one_constraint(self, rule: Rule, structure: str, roi: str | None, extra_unconfirmed: bool) -> None:
        assert rule.metric is not None
        matched = roi if roi is not None else self._roi_label(structure)
        how = self._how(structure, roi)
        role = self.protocol.structures[structure].role if structure in self.protocol.structures else "oar"
        dvh = self.dvh(structure, roi)
        label = f"{structure} ({roi})" if roi and roi != structure else structure
        if dvh.uncovered_cc > 0.005:
            rx = self.highest_gy or 0.0
            if role == "target" or not (rx > 0 and self._boundary_max() < OAR_BOUNDARY_FRACTION * rx):
                self._not_evaluable(
                    rule, structure, matched, f"{label}: {dvh.uncovered_cc:.2f} cc outside the dose grid", how
                )
                return
            dvh = _uncovered_as_zero(dvh)
        reference, ref_target = self._reference(rule, structure, roi)
        if rule.metric.is_relative and reference is None:
            self._not_evaluable(
                rule, structure, matched, f"{label}: no prescription to relate {rule.metric.text} to", how
            )
            return
        try:
            value = evaluate_metric(dvh, rule.metric, reference_dose_gy=reference)
        except MetricError as exc:
            self._not_evaluable(rule, structure, matched, str(exc), how)
            return
        if value is None:
            self._not_evaluable(
                rule,
                structure,
                matched,
                f"{label}: {rule.metric.text} does not exist (structure {dvh.volume_cc:.3f} cc)",
                how,
            )
            return
        name = rule.metric.text.split("[")[0]
        of = f" of {reference:.2f} Gy ({ref_target})" if reference is not None and rule.metric.is_relative else ""
        self._graded(
            rule,
            structure,
            matched,
            how,
            rule.metric.text,
            value,
            f"{label}: {name} = {{value}}{of}",
            reference=reference if rule.metric.is_relative else None,
            ref_target=ref_target,
            extra_unconfirmed=extra_unconfirmed,
        )

    def _reference(self, rule: Rule, structure: str, roi: str | None) -> tuple[float | None, str | None]:
        if rule.reference is None:
            return None, None
        if rule.reference == "highest":
            return self.highest_gy, "highest prescription"
        if rule.reference == "own":
            rois = [roi] if roi else self.structure_rois.get(structure, [])
            own = [self.rx_by_roi[r] for r in rois if r in self.rx_by_roi]
            if not own:
                return None, None
            best = max(own)
            return best[0], f"{rois[0] if len(rois) == 1 else structure}, {best[1]}"
        rois = self.structure_rois.get(rule.reference, [])
        values = [self.rx_by_roi[r][0] for r in rois if r in self.rx_by_roi]
        return (max(values), rule.reference) if values else (None, None)

    def _roi_label(self, structure: str) -> str | None:
        rois = self.structure_rois.get(structure)
        if rois:
            return " | ".join(rois)
        if structure in self.protocol.derived:
            return None
        return None

    def _how(self, structure: str, roi: str | None) -> str | None:
        matches = self.matching.matches.get(structure, ())
        if roi is not None:
            return next((m.how for m in matches if m.roi == roi), None)
        hows = {m.how for m in matches if m.roi in self.structure_rois.get(structure, [])}
        return hows.pop() if len(hows) == 1 else None

    # -- eligibility ----------------------------------------------------------------------------

    def _eligibility(self, rule: Rule) -> list[Finding]:
        def item(grade_: Grade, message: str, value: float | None = None) -> list[Finding]:
            structure = rule.structure
            roi = self._roi_label(structure) if structure and value is not None else None
            how = self._how(structure, None) if structure and value is not None else None
            metric = rule.metric.text if rule.metric else (rule.check or rule.id)
            return [
                Finding(
                    rule.id,
                    structure,
                    roi,
                    how,
                    metric,
                    value,
                    rule.unit,
                    grade_,
                    message,
                    rule.source,
                    rule.unconfirmed,
                    per_protocol=rule.per_protocol,
                )
            ]

        if rule.check is not None:  # a clinical fact
            fact = self.clinical.fact(rule.check) if self.clinical else None
            if fact is None:
                return item(Grade.NOT_EVALUABLE, f"needs the clinical fact {rule.check} (--clinical CSV)")
            ok = fact in rule.allowed
            return item(
                Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE,
                f"{rule.check.replace('_', '-')} {fact} ({'eligible' if ok else 'not eligible'}: "
                f"{', '.join(rule.allowed)})",
            )
        assert rule.structure is not None and rule.metric is not None and rule.per_protocol is not None
        if rule.structure in self.missing:
            return item(Grade.NOT_EVALUABLE, f"{rule.structure} missing: {self.missing[rule.structure][0]}")
        value: float | None
        if rule.metric.kind == "Volume":
            value = self.stack(rule.structure).volume_cc  # no dose needed: eligibility before planning
        elif self.dose is None:
            return item(Grade.NOT_EVALUABLE, "no dose")
        else:
            value = evaluate_metric(self.dvh(rule.structure), rule.metric)
        if value is None:
            return item(Grade.NOT_EVALUABLE, f"{rule.structure}: {rule.metric.text} does not exist")
        rounded = round_value(value, rule.unit)
        ok = rule.per_protocol.met(rounded)
        return item(
            Grade.PER_PROTOCOL if ok else Grade.DEVIATION_UNACCEPTABLE,
            f"{rule.structure}: {rule.metric.text.split('[')[0]} = {format_value(rounded, rule.unit)} "
            f"({'meets' if ok else 'fails'} {_limit_text(rule.per_protocol, rule.unit)})",
            rounded,
        )

    # -- findings -------------------------------------------------------------------------------

    def _plain(self, rule: Rule, metric: str, value: float | None, unit: str, grade_: Grade, message: str) -> None:
        """A finding graded by a check of its own (not by the rule's limits)."""
        self.findings.append(
            Finding(rule.id, None, None, None, metric, value, unit, grade_, message, rule.source, rule.unconfirmed)
        )

    def _not_evaluable(
        self, rule: Rule, structure: str | None, roi: str | None, why: str, how: str | None = None
    ) -> None:
        metric = rule.metric.text if rule.metric else (rule.check or rule.id)
        self.findings.append(
            Finding(
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
            )
        )

    def _graded(
        self,
        rule: Rule,
        structure: str | None,
        roi: str | None,
        how: str | None,
        metric: str,
        value: float,
        message: str,
        *,
        reference: float | None = None,
        ref_target: str | None = None,
        extra_unconfirmed: bool = False,
    ) -> None:
        assert rule.per_protocol is not None
        unit = rule.unit
        rounded = round_value(value, unit)
        g = grade(rounded, rule.per_protocol, rule.variation)
        shown = format_value(rounded, unit)
        limits = f"per protocol {_limit_text(rule.per_protocol, unit)}"
        if rule.variation is not None:
            limits += f"; variation acceptable {_limit_text(rule.variation, unit)}"
        text = message.replace("{value}", shown)
        label = g.value.replace("_", " ")
        self.findings.append(
            Finding(
                rule.id,
                structure,
                roi,
                how,
                metric,
                rounded,
                unit,
                g,
                f"{text} — {label} ({limits})",
                rule.source,
                rule.unconfirmed or extra_unconfirmed,
                reference,
                ref_target,
                rule.per_protocol,
                rule.variation,
            )
        )

    # -- the report -----------------------------------------------------------------------------

    def _report(self, eligibility: list[Finding]) -> PlanReport:
        case = self.case
        plans = case.plans
        first = plans[0] if plans else None
        ss = case.structure_set
        inputs = []
        modality = {
            h.path: str(getattr(h.modality, "value", h.modality))
            for h in (
                *case.plan_set.plans,
                *case.plan_set.doses,
                *((case.plan_set.structure_set,) if case.plan_set.structure_set else ()),
            )
        }
        uids = {
            h.path: h.sop_instance_uid
            for h in (
                *case.plan_set.plans,
                *case.plan_set.doses,
                *((case.plan_set.structure_set,) if case.plan_set.structure_set else ()),
            )
        }
        for path in case.plan_set.files:
            inputs.append(InputFile(path, modality.get(path, ""), uids.get(path, ""), case.sha256.get(path, "")))
        prescription = None
        if plans:
            targets = [
                {"name": roi, "total_gy": round(v, 2), "source": src}
                for roi, (v, src) in sorted(self.rx_by_roi.items())
            ]
            sources = sorted({rx.source.value for rx in self.plan_rx if rx.source})
            prescription = {
                "total_gy": None if self.total_gy is None else round(self.total_gy, 2),
                "fractions": self.fractions,
                "per_fraction_gy": None
                if not (self.total_gy and self.fractions)
                else round(self.total_gy / self.fractions, 2),
                "source": " + ".join(sources) if sources else None,
                "targets": targets,
            }
        structures: dict[str, StructureSummary] = {}
        curves: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {}
        names = list(self.protocol.structures) + list(self.protocol.derived)
        for name in names:
            if name in self.missing or (name not in self.structure_rois and name not in self.protocol.derived):
                continue
            roi = self._roi_label(name)
            spec = self.protocol.structures.get(name)
            # the external contour's own DVH serves no rule: its volume is enough (saves a quarter of the time)
            skip_dose = spec is not None and spec.role == "other" and f"{name}\x00" not in self.dvhs
            if self.dose is None or skip_dose:
                try:
                    volume = self.stack(name).volume_cc
                except RtqaError:
                    continue
                structures[name] = StructureSummary(roi, volume, None, None, None, None)
                continue
            try:
                dvh = self.dvh(name)
            except RtqaError as exc:
                self.warnings.append(f"{name}: {exc}")
                continue
            structures[name] = StructureSummary(
                roi, dvh.volume_cc, dvh.min_gy, dvh.mean_gy, dvh.max_gy, dvh.uncovered_cc
            )
            grid = np.linspace(0.0, dvh.max_gy or 0.0, 101)
            curve = np.interp(grid, dvh.dose_edges_gy, dvh.volume_ge_cc, left=dvh.covered_cc, right=0.0)
            pct = curve / dvh.covered_cc * 100 if dvh.covered_cc > 0 else curve
            curves[name] = (tuple(float(round(v, 3)) for v in grid), tuple(float(round(v, 2)) for v in pct))
        for dvh in self.dvhs.values():
            self.warnings.extend(w for w in dvh.warnings if w not in self.warnings)
        institution = (first.institution_name if first else "") or ""
        if plans and plans[0].is_verification:
            self.warnings.insert(0, "this is a VERIFICATION plan: it is not graded against the protocol")
        return PlanReport(
            patient_id=case.plan_set.patient_id,
            patient_name=first.patient_name if first else (ss.patient_name if ss else ""),
            plan_uid=first.sop_instance_uid if first else None,
            plan_uids=tuple(p.sop_instance_uid for p in plans),
            plan_label=" + ".join(p.label for p in plans) if plans else f"structure set {ss.label if ss else ''}",
            plan_date=first.date.isoformat() if first and first.date else None,
            approval_status=first.approval_status if first else None,
            institution=institution,
            inputs=tuple(inputs),
            dose_source=case.dose_choice.source if case.dose_choice else None,
            prescription=prescription,
            findings=tuple(self.findings),
            eligibility=tuple(eligibility),
            structures=structures,
            warnings=tuple(dict.fromkeys(self.warnings)),
            curves=curves,
        )


def _uncovered_as_zero(dvh: DVH) -> DVH:
    """The DVH with its uncovered volume counted at 0 Gy (OARs far from the dose, DOMAIN.md 4.2)."""
    v = dvh.volume_ge_cc.copy()
    v[0] = dvh.volume_cc
    scale = dvh.covered_cc / dvh.volume_cc if dvh.volume_cc else 1.0
    return replace(
        dvh, volume_ge_cc=v, uncovered_cc=0.0, min_gy=0.0, mean_gy=None if dvh.mean_gy is None else dvh.mean_gy * scale
    )


def _dose_in_name(roi: str) -> float | None:
    """50 Gy from "PTV_5000" or "PTV50"; None when the name carries no plausible dose."""
    m = re.search(r"(\d{4})(?:cGy)?$", roi) or re.search(r"[_ ]?(\d{2}(?:\.\d)?)(?:Gy)?$", roi)
    if not m:
        return None
    value = float(m.group(1))
    gy = value / 100 if len(m.group(1)) == 4 else value
    return gy if 20 <= gy <= 90 else None


def _ptv_partner(roi: str) -> str | None:
    """The PTV of a GTV or CTV with the same suffix: GTVp -> PTVp."""
    m = re.match(r"^(GTV|CTV|ITV)(.*)$", roi, re.IGNORECASE)
    return f"PTV{m.group(2)}" if m else None
