"""Which ROI of a plan is which protocol structure. Pure.

Names are compared after normalisation (NFKC, case-fold, no spaces/underscores/hyphens)
against the protocol's canonical names and explicit aliases, then its patterns. There is no
fuzzy guessing: a name that matches nothing stays unmatched, and two ROIs matching a one-ROI
structure is reported, never resolved by a guess.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from rtqa.protocol.loader import Protocol, normalise_name


@dataclass(frozen=True)
class Match:
    structure: str
    roi: str
    how: str  # exact, alias, pattern
    index: int = -1  # position of the ROI in the names given (ROI names may repeat)


@dataclass(frozen=True)
class Matching:
    matches: dict[str, tuple[Match, ...]]  # protocol structure -> ROIs
    unmatched: tuple[str, ...]
    ambiguous: dict[str, str]  # protocol structure -> why it cannot be used
    notes: tuple[str, ...]

    def rois(self, structure: str) -> tuple[str, ...]:
        return tuple(m.roi for m in self.matches.get(structure, ()))


def match_structures(roi_names: Sequence[str], protocol: Protocol) -> Matching:
    """Match ROI names to the protocol's structures."""
    exact: dict[str, str] = {}
    alias: dict[str, str] = {}
    for spec in protocol.structures.values():
        exact[normalise_name(spec.name)] = spec.name
        for a in spec.aliases:
            alias.setdefault(normalise_name(a), spec.name)
    patterns = [
        (spec.name, re.compile(p, re.IGNORECASE)) for spec in protocol.structures.values() for p in spec.patterns
    ]
    found: dict[str, list[Match]] = {}
    unmatched: list[str] = []
    notes: list[str] = []
    for index, name in enumerate(roi_names):
        key = normalise_name(name)
        if key in exact:
            m = Match(exact[key], name, "exact", index)
        elif key in alias:
            m = Match(alias[key], name, "alias", index)
        else:
            hits = sorted({s for s, p in patterns if p.fullmatch(name.strip())})
            if len(hits) > 1:
                notes.append(f"ROI {name!r} matches the patterns of {', '.join(hits)}: left unmatched")
                unmatched.append(name)
                continue
            if not hits:
                unmatched.append(name)
                continue
            m = Match(hits[0], name, "pattern", index)
        found.setdefault(m.structure, []).append(m)
    ambiguous = {}
    for structure, ms in found.items():
        if not protocol.structures[structure].many and len(ms) > 1:
            names = " and ".join(repr(m.roi) for m in ms)
            same = len({m.roi for m in ms}) == 1
            what = f"{len(ms)} ROIs are named {ms[0].roi!r}" if same else f"ROIs {names} all match {structure}"
            ambiguous[structure] = f"{what}: rtqa does not guess which one is meant"
    return Matching({k: tuple(v) for k, v in found.items()}, tuple(unmatched), ambiguous, tuple(notes))
