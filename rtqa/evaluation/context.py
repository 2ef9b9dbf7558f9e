"""What every check of one case shares: its structures resolved to ROIs, their slab stacks and
DVHs (built once, on demand), the prescriptions, and the clinical facts. Pure.

Structures are resolved by ROI *number*, never by name alone, so two ROIs with one name cannot
hide each other. A structure is in one of four states:

* usable: one ROI (or, for a many-ROI structure, one or more) with a usable slab stack;
* ambiguous: several usable ROIs match a one-ROI structure: its rules are graded on each
  candidate and the worst grade is taken (rtqa never guesses which one is meant);
* unusable: ROIs match but none is usable (no closed contours, nothing left after invalid
  contours were dropped, under 0.01 cc): present but unusable is never absent, its rules are
  not evaluable, optional structure or not;
* absent: no ROI matches: its rules are not evaluable when the structure is required, not
  applicable when it is optional.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from rtqa.case import LoadedCase, Prescription, TargetPrescription
from rtqa.dvh.engine import DVH, PreparedDose, compute_dvhs, hot_threshold_gy, prepare_dose, within_coverage
from rtqa.dvh.geometry import (
    EndCap,
    SlabMemo,
    SlabStack,
    combine,
    evaluate_expression,
    expression_names,
    plane_ring_defects,
    roi_stack,
    shoelace_area,
)
from rtqa.dvh.metrics import Metric
from rtqa.errors import RtqaError
from rtqa.evaluation.frames import FrameLink, link_frames, roi_frame_defect
from rtqa.evaluation.identity import Identity, identify_structures
from rtqa.evaluation.prescription import derive_prescription
from rtqa.model import DoseGrid, FloatArray, Roi
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.loader import Protocol
from rtqa.protocol.names import NameMap

COMPOSITE_TOLERANCE_PCT = 5.0  # a site's composite ROI and the computed structure may differ this much

FRAME_RULE = "FRAME_OF_REFERENCE"  # the finding that says why dose and contours are not graded together
FRAME_UNPROVEN = "the dose and the contours are not proven to share a frame of reference"

if TYPE_CHECKING:
    from rtqa.evaluation.radiobiology import Radiobiology


@dataclass(frozen=True)
class Unavailable:
    """Why a structure cannot be used: absent (nothing matches) or present but unusable."""

    reason: str
    required: bool
    present: bool  # an ROI matches but cannot be used: never treated as absent
    query: bool = False  # an ROI whose name cannot be read may be it: a question to the centre


class CaseContext:
    """Shared, lazily computed state of one case under one protocol."""

    def __init__(
        self, case: LoadedCase, protocol: Protocol, clinical: ClinicalFacts | None, *, names: NameMap | None = None
    ) -> None:
        self.case = case
        self.protocol = protocol
        self.clinical = clinical
        self.warnings: list[str] = list(case.warnings)
        self.dose: DoseGrid | None = case.dose
        self._prepared: PreparedDose | None = None
        self.rois: list[Roi] = list(case.structure_set.rois) if case.structure_set else []
        self.roi_stacks: dict[int, SlabStack] = {}
        self.roi_problems: dict[int, str] = {}
        self.structure_rois: dict[str, list[int]] = {}  # usable ROIs (indices into self.rois)
        self.ambiguous: dict[str, str] = {}  # one-ROI structure -> why several candidates
        self.unavailable: dict[str, Unavailable] = {}
        self._name_counts: Counter[str] = Counter(r.name for r in self.rois)
        self._stacks: dict[tuple[str, tuple[int, ...], EndCap], SlabStack] = {}
        self._memo = SlabMemo()  # plane operations shared by the conventions' derived structures
        self._dvhs: dict[tuple[str, tuple[int, ...]], DVH] = {}
        # the same DVHs under the other end-cap conventions (computed with them: only the slabs
        # that differ, the structure's ends, are sampled again)
        self._other_dvhs: dict[tuple[str, tuple[int, ...]], dict[EndCap, DVH]] = {}
        self._single: set[tuple[str, tuple[int, ...]]] = set()  # DVHs with the protocol's convention only
        self._roi_stacks_by_cap: dict[tuple[int, EndCap], SlabStack] = {}
        self.institution = case_institution(case, clinical)
        self.identity: Identity = identify_structures(
            self.rois, case.plans, protocol, names=names, institution=self.institution
        )
        self.warnings.extend((*self.identity.notes, *self.identity.warnings))
        self.site_composites: dict[str, str] = {}  # derived structure -> which was used, and why
        doses = tuple(info for info, _ in case.dose_choice.parts) if case.dose is not None and case.dose_choice else ()
        self.frames: FrameLink = link_frames(case.structure_set, doses, case.plans)
        if self.frames.proof is not None and not self.frames.proof.startswith("declared"):
            self.warnings.append(f"frame of reference: {self.frames.proof}")
        self.radiobiology: Radiobiology | None = None  # EQD2/BED doses and DVHs, made on first use
        self._build_roi_stacks()
        self._resolve()
        self._prescriptions()

    # -- structures ---------------------------------------------------------------------------

    def _build_roi_stacks(self) -> None:
        if self.case.structure_set is None:
            return
        planes = self.case.structure_set.plane_positions_mm
        # only ROIs a protocol structure names are ever graded: the others (markers, planning
        # helpers, thousands of them in some exports) need no geometry
        wanted = sorted({m.index for ms in self.identity.matches.values() for m in ms})
        for i in wanted:
            roi = self.rois[i]
            defects = roi_defects(roi, planes)
            if (other_frame := roi_frame_defect(roi, self.frames)) is not None:
                defects.append(other_frame)
            if defects:  # graded on what is left, a dropped hot contour would pass unseen
                self.roi_problems[i] = "; ".join(defects)
                continue
            try:
                self.roi_stacks[i] = roi_stack(roi, planes, end_cap=self.protocol.end_cap)
            except RtqaError as exc:
                self.roi_problems[i] = str(exc)

    def label(self, index: int) -> str:
        """The ROI's name, with its number when another ROI has the same name."""
        roi = self.rois[index]
        return f"{roi.name} (ROI {roi.number})" if self._name_counts.get(roi.name, 0) > 1 else roi.name

    def _resolve(self) -> None:
        placed = self._placed()
        for name, spec in self.protocol.structures.items():
            matched = [m.index for m in self.identity.matches.get(name, ())]
            usable = [i for i in matched if i in self.roi_stacks]
            unusable = [i for i in matched if i not in self.roi_stacks]
            if unusable:
                # a usable ROI never hides an unusable one beside it (a clean 'Bowel_Small' and a
                # hot 'bowel small' with open contours; PTVv broken beside PTVp): grading only the
                # usable ones could pass what the broken one holds
                problems = "; ".join(f"{self.label(i)}: {self.roi_problems.get(i, 'unusable')}" for i in unusable)
                besides = f" beside usable {', '.join(repr(self.label(i)) for i in usable)}" if usable else ""
                self.unavailable[name] = Unavailable(
                    f"present but unusable ({problems}){besides}", required=True, present=True
                )
                continue
            if usable:
                self.structure_rois[name] = usable
                if not spec.many and len(usable) > 1:
                    listed = ", ".join(repr(self.label(i)) for i in usable)
                    self.ambiguous[name] = (
                        f"{len(usable)} ROIs match the one-ROI structure {name} ({listed}): rtqa does not guess "
                        "which one is meant; each is graded and the worst grade is taken"
                    )
                    self.warnings.append(self.ambiguous[name])
                continue
            unreadable = [i for i in self.identity.unidentified if i not in placed and not self.rois[i].is_empty]
            if self.case.structure_set is None:
                self.unavailable[name] = Unavailable("no structure set", spec.required, present=False)
            elif unreadable:
                listed = ", ".join(f"ROI {self.rois[i].number} {self.rois[i].name!r}" for i in unreadable)
                self.unavailable[name] = Unavailable(
                    f"no ROI matches {name}, but the name of {listed} cannot be read under the declared "
                    f"SpecificCharacterSet: it may be {name} (ask the centre, or map the name with --names)",
                    spec.required,
                    present=True,
                    query=True,
                )
            else:
                names = ", ".join(spec.aliases[:6]) + (", ..." if len(spec.aliases) > 6 else "")
                self.unavailable[name] = Unavailable(
                    f"no ROI matches {name} (names and aliases: {names})", spec.required, present=False
                )
        for name, dspec in self.protocol.derived.items():
            if dspec.prefer_roi and name in self.structure_rois:
                self.unavailable.pop(name, None)
                continue
            operands = expression_names(dspec.expression)
            blocked = [o for o in operands if o in self.unavailable or o in self.ambiguous]
            site = self._site_composite(name, blocked)
            if not blocked or site is not None:
                self.unavailable.pop(name, None)
                if site is not None:
                    self.structure_rois[name] = [site]
                continue
            present = any(o in self.ambiguous or self.unavailable[o].present for o in blocked)
            required = any(o in self.ambiguous or self.unavailable[o].required for o in blocked)
            why = "; ".join(
                f"{o} {'is ambiguous' if o in self.ambiguous else self.unavailable[o].reason}" for o in blocked
            )
            query = any(o in self.unavailable and self.unavailable[o].query for o in blocked)
            self.unavailable[name] = Unavailable(f"needs {', '.join(blocked)}: {why}", required, present, query)

    def _placed(self) -> set[int]:
        return {m.index for ms in self.identity.matches.values() for m in ms}

    def _site_composite(self, name: str, blocked: list[str]) -> int | None:
        """The site's own ROI for a derived structure (``Liver-GTV``) when it must be used: the
        expression cannot be built and exactly one usable ROI carries one of its names. When
        the expression can be built it is used, and a site ROI beside it is compared."""
        matched = [m.index for m in self.identity.matches.get(name, ())]
        if not matched:
            return None
        usable = [i for i in matched if i in self.roi_stacks]
        listed = ", ".join(repr(self.label(i)) for i in matched)
        if not blocked:
            if len(usable) == 1:
                self._compare_composite(name, usable[0])
            else:
                self.site_composites[name] = f"computed from {self.protocol.derived[name].expression}"
            return None
        if len(usable) != 1 or len(matched) != 1:
            why = "; ".join(
                f"{self.label(i)}: {self.roi_problems.get(i, 'unusable')}" for i in matched if i not in usable
            )
            self.warnings.append(
                f"{name} cannot be built from {self.protocol.derived[name].expression}, and the site's ROI(s) "
                f"{listed} cannot stand in for it ({why or 'more than one'})"
            )
            return None
        (i,) = usable
        self.site_composites[name] = (
            f"the site's ROI {self.label(i)!r} (it cannot be built from {self.protocol.derived[name].expression}: "
            f"{', '.join(blocked)} not available)"
        )
        self.warnings.append(f"{name}: {self.site_composites[name]}")
        return i

    def _compare_composite(self, name: str, index: int) -> None:
        expression = self.protocol.derived[name].expression
        try:
            computed = self.stack(name).volume_cc
        except RtqaError as exc:
            self.warnings.append(f"{name} could not be computed to compare with the site's ROI: {exc}")
            return
        site = self.roi_stacks[index].volume_cc
        diff = abs(site - computed) / computed * 100 if computed > 0 else float("inf")
        self.site_composites[name] = (
            f"computed from {expression} ({computed:.2f} cc); the site's ROI {self.label(index)!r} "
            f"({site:.2f} cc) differs by {diff:.1f} %"
        )
        if diff > COMPOSITE_TOLERANCE_PCT:
            self.warnings.append(
                f"{name}: the computed structure ({expression}, {computed:.2f} cc) and the site's ROI "
                f"{self.label(index)!r} ({site:.2f} cc) differ by {diff:.1f} % (over {COMPOSITE_TOLERANCE_PCT:g} %): "
                "the computed one is used"
            )
        else:
            self.warnings.append(f"{name} is {self.site_composites[name]}: the computed one is used")

    def needed_only_for_site_composites(self, structure: str) -> str | None:
        """Why an absent structure is not needed, or None: no rule names it, and every derived
        structure built from it is taken from the site's own ROI (``Liver`` absent, the site's
        ``Liver-GTV`` used)."""
        for rule in self.protocol.all_rules():
            if structure in (rule.structure, rule.within, rule.reference):
                return None
        users = [d for d in self.protocol.derived.values() if structure in expression_names(d.expression)]
        if not users or any(d.name not in self.site_composites or d.name not in self.structure_rois for d in users):
            return None
        return "; ".join(f"{d.name} is {self.site_composites[d.name]}" for d in users)

    def candidates(self, structure: str) -> list[tuple[int, ...]]:
        """The ROI sets a rule on this structure is graded on: one set normally, one per
        candidate for an ambiguous one-ROI structure, ``()`` for a derived structure."""
        if structure in self.ambiguous:
            return [(i,) for i in self.structure_rois[structure]]
        if structure in self.structure_rois:
            return [tuple(self.structure_rois[structure])]
        return [()]

    def other_end_caps(self) -> tuple[EndCap, ...]:
        """The conventions the protocol did not choose, under which every graded value is also given."""
        return tuple(c for c in EndCap if c is not self.protocol.end_cap)

    def roi_stack_for(self, index: int, end_cap: EndCap | None = None) -> SlabStack:
        """The slab stack of a usable ROI under a convention (the protocol's by default)."""
        if end_cap is None or end_cap is self.protocol.end_cap:
            return self.roi_stacks[index]
        key = (index, end_cap)
        if key not in self._roi_stacks_by_cap:
            assert self.case.structure_set is not None
            planes = self.case.structure_set.plane_positions_mm
            self._roi_stacks_by_cap[key] = roi_stack(self.rois[index], planes, end_cap=end_cap)
        return self._roi_stacks_by_cap[key]

    def stack(self, structure: str, rois: tuple[int, ...] = (), end_cap: EndCap | None = None) -> SlabStack:
        """The slab stack of ROIs (their union), or of a derived structure when ``rois`` is empty,
        under a convention (the protocol's by default)."""
        cap = end_cap or self.protocol.end_cap
        key = (structure, rois, cap)
        if key not in self._stacks:
            if rois:
                out = self.roi_stack_for(rois[0], cap)
                for r in rois[1:]:
                    out = combine("|", out, self.roi_stack_for(r, cap), name=structure, memo=self._memo)
                self._stacks[key] = SlabStack(structure, out.slabs, out.end_cap)
            elif structure in self.structure_rois and structure not in self.ambiguous:
                self._stacks[key] = self.stack(structure, tuple(self.structure_rois[structure]), cap)
            else:
                spec = self.protocol.derived[structure]
                operands = {n: self.stack(n, (), cap) for n in expression_names(spec.expression)}
                self._stacks[key] = evaluate_expression(spec.expression, operands, name=structure, memo=self._memo)
        return self._stacks[key]

    def dvh(self, structure: str, rois: tuple[int, ...] = (), *, all_conventions: bool = True) -> DVH:
        """The DVH of :meth:`stack`, computed once per case (with its values under the other
        conventions: :meth:`dvh_by_end_cap`; only under the protocol's given
        ``all_conventions=False``, for a structure that no rule grades and the report lists)."""
        if rois and structure in self.structure_rois and tuple(self.structure_rois[structure]) == rois:
            rois = ()  # the whole structure: share the DVH with rules that name no ROI
        if structure in self.ambiguous and not rois:
            raise RtqaError(self.ambiguous[structure])
        key = (structure, rois)
        if key not in self._dvhs or (all_conventions and key in self._single):
            assert self.dose is not None
            self.require_frame()
            stacks = {} if key in self._dvhs else {self.protocol.end_cap: self.stack(structure, rois)}
            for cap in self.other_end_caps() if all_conventions else ():
                try:
                    stacks[cap] = self.stack(structure, rois, cap)
                except RtqaError:  # nothing left under that convention: no value to give under it
                    continue
            if key in self._single:  # the protocol's is there: the others now
                self._single.discard(key)
                self._other_dvhs[key] = self._computed(key, stacks) if stacks else {}
            else:
                self._compute(key, stacks)
                if not all_conventions:
                    self._single.add(key)
        return self._dvhs[key]

    def dvh_by_end_cap(self, structure: str, rois: tuple[int, ...] = ()) -> dict[EndCap, DVH]:
        """The DVH of :meth:`dvh` under every convention (the protocol's, and the others)."""
        primary = self.dvh(structure, rois)
        if rois and structure in self.structure_rois and tuple(self.structure_rois[structure]) == rois:
            rois = ()
        return {self.protocol.end_cap: primary, **self._other_dvhs.get((structure, rois), {})}

    def uncovered_by_end_cap(self, structure: str, rois: tuple[int, ...] = ()) -> dict[EndCap, float]:
        """The volume (cc) of :meth:`stack` outside the dose grid under every convention that
        leaves something of it, as :meth:`dvh_by_end_cap` gives it; 0 without computing a DVH
        when every such stack lies inside the grid's coverage (``within_coverage``)."""
        if rois and structure in self.structure_rois and tuple(self.structure_rois[structure]) == rois:
            rois = ()
        key = (structure, rois)
        if key not in self._dvhs or key in self._single:
            if structure in self.ambiguous and not rois:
                raise RtqaError(self.ambiguous[structure])
            assert self.dose is not None
            self.require_frame()
            stacks = {self.protocol.end_cap: self.stack(structure, rois)}
            for cap in self.other_end_caps():
                try:
                    stacks[cap] = self.stack(structure, rois, cap)
                except RtqaError:  # nothing left under that convention, as in dvh()
                    continue
            if all(within_coverage(st, self.dose) for st in stacks.values()):
                return {cap: 0.0 for cap in stacks}
        return {cap: d.uncovered_cc for cap, d in self.dvh_by_end_cap(structure, rois).items()}

    def dvh_of(self, key: str, stack: SlabStack, others: dict[EndCap, SlabStack] | None = None) -> DVH:
        """The DVH of a stack built by a check itself (a target minus higher-dose targets), and,
        given ``others`` (the stack built alike under other conventions), theirs."""
        if (key, ()) not in self._dvhs:
            assert self.dose is not None
            self.require_frame()
            self._compute((key, ()), {self.protocol.end_cap: stack, **(others or {})})
        return self._dvhs[(key, ())]

    def _compute(self, key: tuple[str, tuple[int, ...]], stacks: dict[EndCap, SlabStack]) -> None:
        """The DVHs of ``stacks`` (the first under the protocol's convention) kept under ``key``."""
        got = self._computed(key, stacks)
        caps = list(stacks)
        self._dvhs[key] = got[caps[0]]
        self._other_dvhs[key] = {cap: got[cap] for cap in caps[1:]}

    def _computed(self, key: tuple[str, tuple[int, ...]], stacks: dict[EndCap, SlabStack]) -> dict[EndCap, DVH]:
        assert self.dose is not None
        if self._prepared is None:
            self._prepared = prepare_dose(self.dose)
        caps = list(stacks)
        variants = [stacks[c] for c in caps]
        dvhs: list[DVH] | None = None
        metrics = self.hot_end_metrics(key[0]) if not key[1] else ()
        if metrics:
            # every rule on it asks only for its hot end: compute that end, and the whole DVH
            # after all if the end does not hold the volume a metric needs
            hot = hot_threshold_gy(variants, self.dose)
            if hot > 0:
                dvhs = compute_dvhs(variants, self.dose, prepared=self._prepared, hot_from_gy=hot)
                if not all(_hot_end_holds(d, m) for d in dvhs for m in metrics):
                    dvhs = None
        if dvhs is None:
            dvhs = compute_dvhs(variants, self.dose, prepared=self._prepared)
        return dict(zip(caps, dvhs, strict=True))

    def hot_end_metrics(self, structure: str) -> tuple[Metric, ...]:
        """The metrics of a derived structure when the protocol asks nothing else of it than its
        hot end, a dose to a volume (D1cc, D2 %, Max) of physical dose in constraints: its DVH is
        then computed from a high dose up (:func:`rtqa.dvh.engine.compute_dvhs`), with no
        minimum or mean. Empty (the whole DVH) for a structure of the protocol's structure list
        (an organ's or a target's mean and minimum are reported), for any other use of it, and
        for a structure that shares its name with an ROI."""
        if structure in self.protocol.structures or structure not in self.protocol.derived:
            return ()
        if structure in self.structure_rois:
            return ()
        out: list[Metric] = []
        for rule in self.protocol.all_rules():
            if structure not in (rule.structure, rule.reference, rule.within):
                continue
            m = rule.metric
            if (
                rule.kind != "constraint"
                or rule.structure != structure
                or m is None
                or m.kind not in ("D", "Max")
                or rule.dose is not None
                or rule.lower_dose_ring is not None
            ):
                return ()
            out.append(m)
        return tuple(out)

    def require_frame(self) -> None:
        """Raise when the dose and the contours are not proven to share a frame of reference."""
        if self.frames.problem is not None:
            raise RtqaError(f"{FRAME_UNPROVEN} ({FRAME_RULE})")

    @property
    def dvhs(self) -> dict[tuple[str, tuple[int, ...]], DVH]:
        return self._dvhs

    def roi_label(self, structure: str, rois: tuple[int, ...] = ()) -> str | None:
        chosen = rois or tuple(self.structure_rois.get(structure, ()))
        return " | ".join(self.label(i) for i in chosen) or None

    def how(self, structure: str, rois: tuple[int, ...] = ()) -> str | None:
        chosen = set(rois or self.structure_rois.get(structure, ()))
        hows = {m.how for m in self.identity.matches.get(structure, ()) if m.index in chosen}
        return hows.pop() if len(hows) == 1 else None

    def unmatched_rois(self) -> tuple[str, ...]:
        return tuple(self.identity.unmatched)

    def boundary_max_gy(self) -> float:
        """The highest dose on the six faces of the dose grid (what uncovered volume may receive
        at most, if dose falls off outward as it does beyond a calculation grid's edge)."""
        assert self.dose is not None
        d = self.dose.dose_gy
        faces = [d[0], d[-1], d[:, 0], d[:, -1], d[:, :, 0], d[:, :, -1]]
        return float(max(float(np.max(f)) for f in faces))

    # -- facts --------------------------------------------------------------------------------

    def fact(self, name: str) -> str | None:
        return self.clinical.fact(name) if self.clinical else None

    def possible(self, name: str) -> tuple[str, ...] | None:
        """The values an unknown fact may take when part of it is known (a Child-Pugh class
        without its score); None when the fact is known or nothing of it is."""
        return self.clinical.possible_values(name) if self.clinical else None

    # -- prescriptions ------------------------------------------------------------------------

    def _prescriptions(self) -> None:
        case = self.case
        clinical_rx = self.clinical.prescriptions_gy if self.clinical else {}
        if clinical_rx and case.plans:
            targets = tuple(TargetPrescription(k, v) for k, v in sorted(clinical_rx.items()))
            roi_names = {r.number: r.name for r in self.rois}
            self.plan_rx: list[Prescription] = [
                derive_prescription(p, clinical_targets=targets, roi_names=roi_names) for p in case.plans
            ]
            # the case-report form against the plan's own sources: their disagreement is news
            self.warnings.extend(w for rx in self.plan_rx for w in rx.warnings if "disagree" in w)
        else:
            self.plan_rx = list(case.prescriptions)
        totals = [rx.total_gy for rx in self.plan_rx]
        self.total_gy: float | None = (
            sum(t for t in totals if t is not None) if totals and all(t is not None for t in totals) else None
        )
        fractions = [rx.fractions for rx in self.plan_rx]
        self.fractions: int | None = sum(f for f in fractions if f) if fractions and all(fractions) else None
        # per target ROI: case-report form, dose reference to the ROI, dose in the name, GTV -> PTV.
        # The dose references come from the plans as exported, so a case-report form that names
        # only some targets never replaces the references of the others.
        by_roi: dict[str, float] = {}
        for rx in case.prescriptions:
            for t in rx.targets:
                by_roi[t.name] = by_roi.get(t.name, 0.0) + t.total_gy
        if clinical_rx:
            known = {r.name for r in self.rois} | set(self.protocol.structures)
            unknown = sorted(k for k in clinical_rx if k not in known)
            if unknown:
                self.warnings.append(
                    "clinical CSV prescriptions for targets that are neither an ROI nor a protocol structure: "
                    + ", ".join(f"rx_{k}" for k in unknown)
                )
        self.rx_by_roi: dict[int, tuple[float, str]] = {}
        targets_ = [s for s, spec in self.protocol.structures.items() if spec.role == "target"]
        for structure in targets_:
            for i in self.structure_rois.get(structure, []):
                roi = self.rois[i].name
                if roi in clinical_rx:
                    self.rx_by_roi[i] = (clinical_rx[roi], "case-report form")
                elif structure in clinical_rx and len(self.structure_rois[structure]) == 1:
                    self.rx_by_roi[i] = (clinical_rx[structure], "case-report form")
                elif roi in by_roi:
                    self.rx_by_roi[i] = (by_roi[roi], "dose reference")
                elif (named := dose_in_name(roi)) is not None:
                    self.rx_by_roi[i] = (named, "dose in the ROI name")
        by_name = {self.rois[i].name: v for i, v in self.rx_by_roi.items()}
        for structure in targets_:
            for i in self.structure_rois.get(structure, []):
                if i in self.rx_by_roi:
                    continue
                partner = ptv_partner(self.rois[i].name)
                if partner is not None and partner in by_name:
                    self.rx_by_roi[i] = (by_name[partner][0], f"prescription of {partner}")
                elif self.total_gy is not None:
                    self.rx_by_roi[i] = (self.total_gy, "plan prescription (no target-specific one found)")
        self.highest_gy: float | None = max(
            [v for v, _ in self.rx_by_roi.values()] + ([self.total_gy] if self.total_gy else []), default=None
        )


def case_institution(case: LoadedCase, clinical: ClinicalFacts | None) -> str:
    """The institution a case comes from: the clinical CSV's, else the DICOM InstitutionName of
    its plan or structure set."""
    if clinical is not None and clinical.institution:
        return clinical.institution
    if case.plans and case.plans[0].institution_name:
        return case.plans[0].institution_name
    header = case.plan_set.structure_set
    return (header.institution_name if header is not None else None) or ""


def _hot_end_holds(dvh: DVH, metric: Metric) -> bool:
    """Whether the hot end of a DVH (``exact_from_gy`` up) gives ``metric`` (D or Max) exactly:
    a maximum was found there, and the end holds the volume the metric asks for (or the
    structure is smaller than that volume, and the metric does not exist either way). Never
    when part of the structure lies outside the dose grid (the checks then count that part at
    0 Gy or at the boundary's dose, which changes the volume a metric asks for), nor when all of
    it lies in the hot end (the whole DVH then has a minimum that holds its curve)."""
    if dvh.max_gy is None or dvh.uncovered_cc > 0:
        return False
    if dvh.volume_at_dose(dvh.exact_from_gy) >= dvh.covered_cc * (1 - 1e-9):
        return False
    if metric.kind == "Max":
        return True
    assert metric.value is not None
    covered = dvh.covered_cc
    wanted = metric.value / 100 * covered if metric.value_unit == "%" else metric.value
    return wanted > covered * (1 + 1e-12) or dvh.volume_at_dose(dvh.exact_from_gy) >= wanted


def roi_defects(roi: Roi, planes: FloatArray) -> list[str]:
    """What makes an ROI's contours untrustworthy for grading, even though some volume is left.

    Contours that were skipped (open, point, fewer than three points, not axial) may be exactly
    the hot ones; a ring that crosses or retraces itself, two rings that coincide or cross each
    other, cancel what they share by parity (:func:`~rtqa.dvh.geometry.plane_ring_defects`);
    conflicting ROIContourSequence items were found by the reader (``roi.defects``); a plane whose
    rings enclose nothing, and a run of two or more structure-set planes the ROI skips inside its
    extent, leave holes. Grading what is left could pass a plan whose dose in the missing part
    is not known, so the ROI is unusable (its rules are not evaluable) and the export must be
    corrected.
    """
    out = [f"{s} contour(s) skipped" for s in roi.skipped_contours]
    out += [w for w in roi.warnings if "non-axial" in w]
    if roi.defects:  # conflicting items: their rings, read together, would only repeat it plane by plane
        return out + list(roi.defects)
    on_planes: dict[str, list[tuple[float, str]]] = {}  # one line per kind of ring defect
    for plane in roi.planes:
        found = plane_ring_defects(plane.rings)
        for defect in found:
            head, _, tail = defect.partition(" (")
            on_planes.setdefault(head, []).append((plane.z_mm, tail.rstrip(")")))
        if not found and plane.rings and abs(_area(plane.rings)) < 1e-3:
            out.append(f"the contours on plane z = {plane.z_mm:.2f} mm enclose no area")
    out += [_on_planes(head, where) for head, where in on_planes.items()]
    if len(roi.planes) > 1 and planes.size > 1:
        zs = np.array([p.z_mm for p in roi.planes])
        k = np.abs(planes[None, :] - zs[:, None]).argmin(axis=1)
        gaps = np.diff(np.sort(k)) - 1
        for g, z in zip(gaps, np.sort(zs)[:-1], strict=True):
            if g >= 2:
                out.append(f"{int(g)} planes of the structure set missing inside the ROI, above z = {z:.2f} mm")
    return out


def _on_planes(head: str, where: list[tuple[float, str]]) -> str:
    """One ring defect with the planes it is on: 'two coinciding contours on plane z = 3.00 mm
    (...)', or on several planes, their positions and the details of the first."""
    (z0, first), rest = where[0], where[1:]
    if not rest:
        return f"{head} on plane z = {z0:.2f} mm ({first})"
    if len(where) <= 4:
        zs = "z = " + ", ".join(f"{z:.2f}" for z, _ in where)
    else:
        zs = f"z = {z0:.2f} to {where[-1][0]:.2f}"
    detail = first if all(t == first for _, t in rest) else f"on z = {z0:.2f} mm: {first}"
    return f"{head} on {len(where)} planes, {zs} mm ({detail})"


def _area(rings: tuple[FloatArray, ...]) -> float:
    """Parity area of rings (shoelace per ring, holes by nesting are ignored: only 0 matters here)."""
    return sum((shoelace_area(r) for r in rings), 0.0)


def dose_in_name(roi: str) -> float | None:
    """50 Gy from "PTV_5000" or "PTV50", 50.4 Gy from "PTV_50.4"; None when the name carries no
    plausible dose."""
    m = re.search(r"(\d{4})(?:cGy)?$", roi) or re.search(r"[_ ]?(\d{2}(?:\.\d)?)(?:Gy)?$", roi)
    if not m:
        return None
    value = float(m.group(1))
    gy = value / 100 if m.group(1).isdigit() and len(m.group(1)) == 4 else value  # "50.4" is Gy, not cGy
    return gy if 20 <= gy <= 90 else None


def ptv_partner(roi: str) -> str | None:
    """The PTV of a GTV or CTV with the same suffix: GTVp -> PTVp."""
    m = re.match(r"^(GTV|CTV|ITV)(.*)$", roi, re.IGNORECASE)
    return f"PTV{m.group(2)}" if m else None
