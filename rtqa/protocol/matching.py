"""Which ROI names are which protocol structure. Pure.

Names are compared by key (:mod:`rtqa.protocol.names`: NFKC, format characters removed,
Cyrillic and Greek look-alikes read as Latin, case-folded, no spaces, underscores or hyphens).
Each ROI name is looked up, the first that answers wins:

1. the QA office's name map for the institution (``name_map``; an entry of ``None`` says the
   ROI is no protocol structure);
2. a protocol structure's own name (``exact``), including a derived structure's name when the
   protocol accepts a site's composite ROI for it;
3. the protocol's aliases (``alias``), then the TG-263 alias table it names (``tg263``);
4. the protocol's patterns (``pattern``), matched on the folded name.

There is no fuzzy guessing: a name that matches nothing stays unmatched, and two ROIs matching
a one-ROI structure is reported, never resolved by a guess. A match that needed folding carries
what was folded (``Match.folded``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from rtqa.protocol.loader import Protocol
from rtqa.protocol.names import fold_name, name_key

MATCH_KINDS = ("name_map", "exact", "alias", "tg263", "pattern", "dose_reference", "interpreted_type")


@dataclass(frozen=True)
class Match:
    structure: str
    roi: str
    how: str  # one of MATCH_KINDS
    index: int = -1  # position of the ROI in the names given (ROI names may repeat)
    folded: tuple[str, ...] = ()  # what folding the match needed (Cyrillic a read as a, ...)
    detail: str = ""  # where a match by dose reference or interpreted type came from


@dataclass(frozen=True)
class Matching:
    matches: dict[str, tuple[Match, ...]]  # protocol structure (or derived with a site ROI) -> ROIs
    unmatched: tuple[str, ...]
    ambiguous: dict[str, str]  # protocol structure -> why it cannot be used
    notes: tuple[str, ...]
    declared_none: tuple[int, ...] = ()  # indices the name map says are no protocol structure

    def rois(self, structure: str) -> tuple[str, ...]:
        return tuple(m.roi for m in self.matches.get(structure, ()))


def match_structures(
    roi_names: Sequence[str], protocol: Protocol, *, name_map: Mapping[str, str | None] | None = None
) -> Matching:
    """Match ROI names to the protocol's structures (``name_map``: site ROI name key -> structure)."""
    exact: dict[str, str] = {}
    alias: dict[str, tuple[str, str]] = {}
    for spec in protocol.structures.values():
        exact[name_key(spec.name)] = spec.name
        tg263 = {name_key(a) for a in spec.tg263}
        for a in spec.aliases:
            key = name_key(a)
            alias.setdefault(key, (spec.name, "tg263" if key in tg263 else "alias"))
    for dspec in protocol.derived.values():
        if dspec.aliases and dspec.name not in protocol.structures:
            exact.setdefault(name_key(dspec.name), dspec.name)
            for a in dspec.aliases:
                alias.setdefault(name_key(a), (dspec.name, "alias"))
    patterns = [
        (spec.name, re.compile(p, re.IGNORECASE)) for spec in protocol.structures.values() for p in spec.patterns
    ]
    site = name_map or {}
    found: dict[str, list[Match]] = {}
    unmatched: list[str] = []
    declared_none: list[int] = []
    notes: list[str] = []
    for index, name in enumerate(roi_names):
        f = fold_name(name)
        key = f.key
        if key in site:
            mapped = site[key]
            if mapped is None:
                declared_none.append(index)
                continue
            m = Match(mapped, name, "name_map", index, f.folded)
        elif key in exact:
            m = Match(exact[key], name, "exact", index, f.folded)
        elif key in alias:
            m = Match(alias[key][0], name, alias[key][1], index, f.folded)
        else:
            hits = sorted({s for s, p in patterns if p.fullmatch(f.display)})
            if len(hits) > 1:
                notes.append(f"ROI {name!r} matches the patterns of {', '.join(hits)}: left unmatched")
                unmatched.append(name)
                continue
            if not hits:
                unmatched.append(name)
                continue
            m = Match(hits[0], name, "pattern", index, f.folded)
        found.setdefault(m.structure, []).append(m)
    ambiguous = {}
    for structure, ms in found.items():
        one = structure not in protocol.structures or not protocol.structures[structure].many
        if one and len(ms) > 1:
            names = " and ".join(repr(m.roi) for m in ms)
            same = len({m.roi for m in ms}) == 1
            what = f"{len(ms)} ROIs are named {ms[0].roi!r}" if same else f"ROIs {names} all match {structure}"
            ambiguous[structure] = f"{what}: rtqa does not guess which one is meant"
    return Matching(
        {k: tuple(v) for k, v in found.items()}, tuple(unmatched), ambiguous, tuple(notes), tuple(declared_none)
    )
