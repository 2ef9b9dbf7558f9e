"""Structure identity: which ROI of a structure set is which protocol structure, and how each
was recognised. Pure. Every check reads this one result (through the case context).

Each ROI is placed by the first of these that answers (the kinds a finding's ``match`` reports):

1. ``name_map``: the QA office's name map for the institution (``rtqa check --names``);
2. ``exact``, ``alias``, ``tg263``, ``pattern``: the protocol's names, its aliases, the TG-263
   alias table and its patterns, compared after Unicode folding (:mod:`rtqa.protocol.names`);
3. ``dose_reference``: an RT Plan dose reference that points at the ROI (ReferencedROINumber)
   and whose description is a protocol name of the same role (a TARGET reference placing a
   target, an ORGAN_AT_RISK one an organ);
4. ``interpreted_type``: the one EXTERNAL ROI (RTROIInterpretedType), as the protocol's body
   outline when no ROI is named so. Other interpreted types never place an ROI: planners change
   them, and a GTV-typed ROI is not thereby *the* GTV of the protocol.

What cannot be placed is never ignored silently:

* a *target-like* ROI (RTROIInterpretedType PTV, CTV, GTV or ITV; pointed at by a TARGET dose
  reference; or a name beginning with PTV, CTV, GTV, IGTV or ITV) that nothing places is an
  :class:`UnplacedTarget`: the plan is not evaluable, category ``query`` (a question to the
  centre, answered once in the name map), because the rules on targets (coverage, hot spots,
  the normal liver without its GTVs) would be graded without it;
* an ROI whose name did not decode cleanly under the file's SpecificCharacterSet is
  *unidentified* (only the name map may place it, by the name as decoded): a protocol structure
  that nothing else matches may be that ROI, so it is a query, never "not contoured".

A match that needed folding (a Cyrillic ``а`` in ``Esophagus``, a zero-width space, a soft
hyphen) or came from a dose reference or interpreted type is kept, with a warning naming the
ROI and what was folded.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from rtqa.model import Plan, Roi
from rtqa.protocol.loader import Protocol
from rtqa.protocol.matching import Match, match_structures
from rtqa.protocol.names import NameMap, name_key, target_like_name

TARGET_TYPES = ("PTV", "CTV", "GTV", "ITV")
_BODY_KEYS = ("body", "external")


@dataclass(frozen=True)
class UnplacedTarget:
    """A target-like ROI that the protocol cannot place, and what makes it look like a target."""

    index: int
    roi: str
    why: tuple[str, ...]


@dataclass(frozen=True)
class Identity:
    """Protocol structure -> ROIs and how each matched, and what could not be placed."""

    institution: str
    matches: dict[str, tuple[Match, ...]]
    unmatched: tuple[str, ...]  # names of ROIs placed nowhere (not declared "none" by the name map)
    ambiguous: dict[str, str]
    notes: tuple[str, ...]
    unidentified: dict[int, str] = field(default_factory=dict)  # ROI index -> why its name cannot be read
    unplaced_targets: tuple[UnplacedTarget, ...] = ()
    warnings: tuple[str, ...] = ()

    def rois(self, structure: str) -> tuple[str, ...]:
        return tuple(m.roi for m in self.matches.get(structure, ()))


def identify_structures(
    rois: Sequence[Roi],
    plans: Sequence[Plan],
    protocol: Protocol,
    *,
    names: NameMap | None = None,
    institution: str = "",
) -> Identity:
    """Place every ROI of a structure set (see the module docstring for the order)."""
    site = names.for_institution(institution) if names is not None else {}
    warnings: list[str] = []
    if names is not None and "*" not in names.entries and name_key(institution) not in names.entries:
        warnings.append(
            f"the name map {names.path} has no entry for institution {institution!r}: "
            "only the protocol's names are used"
        )
    by_name = match_structures([r.name for r in rois], protocol, name_map=site)
    unidentified = {i: r.name_problem for i, r in enumerate(rois) if r.name_problem}
    found: dict[str, list[Match]] = {}
    for structure, ms in by_name.matches.items():
        kept = [m for m in ms if m.index not in unidentified or m.how == "name_map"]
        if kept:
            found[structure] = kept
    placed = {m.index for ms in found.values() for m in ms} | set(by_name.declared_none)
    numbers = Counter(r.number for r in rois)
    index_of = {r.number: i for i, r in enumerate(rois) if numbers[r.number] == 1}

    # dose references pointing at an ROI: evidence of a target, and a name in the description
    target_refs: dict[int, list[str]] = {}
    for plan in plans:
        for d in plan.dose_references:
            i = index_of.get(d.referenced_roi_number) if d.referenced_roi_number is not None else None
            if i is None:
                continue
            kind = d.reference_type.upper()
            what = f"{kind or 'untyped'} dose reference {d.number}" + (f" {d.description!r}" if d.description else "")
            if kind == "TARGET":
                target_refs.setdefault(i, []).append(what)
            if i in placed or not d.description:
                continue
            hit = match_structures([d.description], protocol)
            for structure, (m, *_) in hit.matches.items():
                spec = protocol.structures.get(structure)
                role = spec.role if spec is not None else ""
                if (kind == "TARGET") != (role == "target") or structure in hit.ambiguous:
                    continue
                found.setdefault(structure, []).append(
                    Match(structure, rois[i].name, "dose_reference", i, m.folded, f"{what} names {structure}")
                )
                placed.add(i)

    # the one EXTERNAL ROI as the body outline, when no ROI is named so
    externals = [i for i, r in enumerate(rois) if r.interpreted_type.upper() == "EXTERNAL" and i not in placed]
    body = next((s for s in protocol.structures.values() if {name_key(a) for a in s.aliases} & set(_BODY_KEYS)), None)
    if body is not None and body.name not in found and len(externals) == 1:
        (i,) = externals
        found[body.name] = [Match(body.name, rois[i].name, "interpreted_type", i, (), "RTROIInterpretedType EXTERNAL")]
        placed.add(i)

    for placed_rois in found.values():
        for m in placed_rois:
            if m.folded:
                warnings.append(
                    f"ROI {rois[m.index].name!r} taken as {m.structure} only after folding its name: "
                    + "; ".join(m.folded)
                )
            if m.how in ("dose_reference", "interpreted_type"):
                warnings.append(f"ROI {rois[m.index].name!r} taken as {m.structure} by its {m.detail}")
    mapped = [m for ms in found.values() for m in ms if m.how == "name_map"]
    if mapped and names is not None:
        warnings.append(
            f"names from the name map {names.path} (institution {institution!r}): "
            + ", ".join(f"{m.roi!r} as {m.structure}" for m in sorted(mapped, key=lambda m: m.index))
        )
    for i, problem in sorted(unidentified.items()):
        taken = " (placed by the name map)" if i in placed else ": it is treated as unidentified"
        warnings.append(f"ROI {rois[i].number} name {rois[i].name!r} {problem}{taken}")

    unplaced: list[UnplacedTarget] = []
    for i, roi in enumerate(rois):
        if i in placed or roi.is_empty:
            continue
        why = []
        prefix = target_like_name(roi.name) if i not in unidentified else None
        if prefix:
            why.append(f"its name begins with {prefix}")
        if roi.interpreted_type.upper() in TARGET_TYPES:
            why.append(f"RTROIInterpretedType {roi.interpreted_type.upper()}")
        why.extend(f"the plan's {w} points at it" for w in target_refs.get(i, ()))
        if why:
            unplaced.append(UnplacedTarget(i, roi.name, tuple(why)))

    matches = {k: tuple(sorted(v, key=lambda m: m.index)) for k, v in found.items()}
    ambiguous = dict(by_name.ambiguous)
    for structure, ms in matches.items():
        spec = protocol.structures.get(structure)
        if structure not in ambiguous and not (spec is not None and spec.many) and len(ms) > 1:
            listed = " and ".join(repr(m.roi) for m in ms)
            ambiguous[structure] = f"ROIs {listed} all match {structure}: rtqa does not guess which one is meant"
    for structure in list(ambiguous):
        if len(matches.get(structure, ())) < 2:
            del ambiguous[structure]
    unmatched = tuple(r.name for i, r in enumerate(rois) if i not in placed)
    return Identity(
        institution,
        matches,
        unmatched,
        ambiguous,
        by_name.notes,
        unidentified,
        tuple(unplaced),
        tuple(dict.fromkeys(warnings)),
    )
