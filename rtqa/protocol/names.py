"""Structure names as rtqa compares them, and the QA office's name map. Pure data and text.

Two names are the same structure name when their *keys* are equal: NFKC, format characters
(zero-width space, soft hyphen, word joiner, byte-order mark: Unicode category Cf) and other
invisible controls removed, Cyrillic and Greek letters that look like Latin ones read as those
Latin letters, case-folded, and spaces, underscores and hyphens removed. Case, spaces,
underscores and hyphens are spelling; everything else the key changes is *folding*, and a match
that needed folding is reported (:func:`fold_name` says what was folded), because a name that
differs from a protocol name only by a Cyrillic ``а`` or a zero-width space is either an
export accident or an attempt to hide a structure, and the physicist should know which ROI it
was.

The name map (``rtqa check --names FILE``) is kept by the QA office: per institution, the
site's ROI names and the protocol structure each one is (or ``null``: the ROI is no protocol
structure, for a target-like name that was asked about and answered)::

    "Hospital A":
      PTV_PVTT: PTV
      PVTT: GTV
      PTV_opt: null        # an optimisation helper, not a target
    "*":                   # every institution
      Leber: Liver

Institution names are compared by key as well. A map entry of an institution wins over the
``"*"`` entry for the same ROI name.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import yaml

from rtqa.errors import ProtocolError

# Cyrillic and Greek letters drawn like Latin ones (Unicode's confusables, the letters that occur
# in names typed on a Russian, Ukrainian, Serbian or Greek keyboard layout). Upper and lower case
# are listed apart: the look-alike of an upper-case letter is not always that of its lower case
# (Greek Ν is N, ν is v).
CONFUSABLES: Mapping[str, str] = {
    # Cyrillic capitals
    "А": "A", "В": "B", "Е": "E", "Ё": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P",
    "С": "C", "Т": "T", "У": "Y", "Х": "X", "Ѕ": "S", "І": "I", "Ї": "I", "Ј": "J", "Ԛ": "Q",
    "Ԝ": "W", "Ү": "Y", "Һ": "H", "Ӏ": "I",
    # Cyrillic small letters
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
    "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ү": "y",
    # Greek capitals
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N",
    "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Greek small letters
    "ο": "o", "α": "a", "ε": "e", "ι": "i", "ρ": "p", "κ": "k", "ν": "v", "τ": "t", "χ": "x",
    "υ": "u",
    # Latin letters that are other letters' look-alikes
    "ı": "i", "ɡ": "g", "ℓ": "l",
}  # fmt: skip
_SPELLING = re.compile(r"[\s_\-]+")
REPLACEMENT_CHARACTER = "\ufffd"


@dataclass(frozen=True)
class FoldedName:
    """A name as compared: its ``key``, its ``display`` form (folded, original case and single
    spaces, for patterns) and what folding changed (empty when only spelling differs)."""

    key: str
    display: str
    folded: tuple[str, ...]


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"{name.lower() or 'character'} (U+{ord(ch):04X})"


def fold_name(name: str) -> FoldedName:
    """The key, display form and folding of a structure name.

    Examples
    --------
    >>> fold_name("Spinal_Cord ").key, fold_name("Spinal_Cord ").folded
    ('spinalcord', ())
    >>> f = fold_name("Eso\\u200bphаgus")  # a zero-width space and a Cyrillic a
    >>> f.key
    'esophagus'
    >>> f.folded
    ('zero width space (U+200B) removed', "cyrillic small letter a (U+0430) read as 'a'")
    """
    folded: dict[str, None] = {}
    out = []
    for ch in name:
        nfkc = unicodedata.normalize("NFKC", ch)
        if nfkc != ch and not nfkc.isspace():
            folded[f"{_describe(ch)} read as {nfkc!r}"] = None
        for c in nfkc:
            category = unicodedata.category(c)
            if category == "Cf" or (category == "Cc" and not c.isspace()):
                folded[f"{_describe(c)} removed"] = None
            elif c in CONFUSABLES:
                folded[f"{_describe(c)} read as {CONFUSABLES[c]!r}"] = None
                out.append(CONFUSABLES[c])
            else:
                out.append(c)
    text = unicodedata.normalize("NFKC", "".join(out))
    display = " ".join(text.split())
    return FoldedName(_SPELLING.sub("", text.casefold()), display, tuple(folded))


def name_key(name: str) -> str:
    """The key two names are compared by: ``"Spinal Cord"`` -> ``"spinalcord"``."""
    return fold_name(name).key


def target_like_name(name: str) -> str | None:
    """The target prefix a name begins with (PTV, CTV, GTV, IGTV, ITV), after folding; else None.

    >>> target_like_name("PTV_PVTT"), target_like_name("zPTV_opt"), target_like_name("Igtv 1")
    ('PTV', None, 'IGTV')
    """
    key = name_key(name)
    for prefix in ("igtv", "ptv", "ctv", "gtv", "itv"):
        if key.startswith(prefix):
            return prefix.upper()
    return None


# ------------------------------------------------------------------------------------------------
# The name map


@dataclass(frozen=True)
class NameMap:
    """Per institution (by key; ``"*"`` for all), site ROI name (by key) -> protocol structure
    name, or None for an ROI that is no protocol structure."""

    path: str
    entries: Mapping[str, Mapping[str, str | None]] = field(default_factory=dict)
    sites: Mapping[str, str] = field(default_factory=dict)  # institution key -> name as written

    def for_institution(self, institution: str | None) -> dict[str, str | None]:
        """The map that applies to one institution: its own entries over the ``"*"`` ones."""
        out = dict(self.entries.get("*", {}))
        if institution:
            out.update(self.entries.get(name_key(institution), {}))
        return out


def read_name_map(path: str | os.PathLike[str], structures: Iterable[str]) -> NameMap:
    """Read and validate a name map; every problem is listed at once with its line.

    ``structures`` are the names a map entry may point at (the protocol's structures and
    derived structures).

    Raises
    ------
    ProtocolError
        The file cannot be read, is not YAML, or an entry is invalid: each problem as
        ``file:line: what is wrong and what was expected``.
    """
    spath = os.fspath(path)
    try:
        with open(spath, encoding="utf-8") as fh:
            root = yaml.compose(fh, Loader=yaml.SafeLoader)
    except OSError as exc:
        raise ProtocolError(f"{spath}: name map cannot be read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{spath}: name map is not valid YAML ({exc})") from None
    base = os.path.basename(spath)
    errors: list[str] = []
    structures = list(dict.fromkeys(structures))
    known = {name_key(s): s for s in structures}

    def err(node: yaml.Node, message: str) -> None:
        errors.append(f"{base}:{node.start_mark.line + 1}: {message}")

    entries: dict[str, dict[str, str | None]] = {}
    sites: dict[str, str] = {}
    if root is None:
        raise ProtocolError(f"{spath}: name map is empty; expected institution: {{site ROI name: protocol name}}")
    if not isinstance(root, yaml.MappingNode):
        raise ProtocolError(
            f"{base}:{root.start_mark.line + 1}: a name map must map institutions to {{site ROI name: protocol name}}"
        )
    for inst_node, block in root.value:
        if not isinstance(inst_node, yaml.ScalarNode) or not str(inst_node.value).strip():
            err(inst_node, "an institution must be a non-empty name (or '*' for every institution)")
            continue
        institution = str(inst_node.value).strip()
        ikey = "*" if institution == "*" else name_key(institution)
        if ikey in sites:
            err(inst_node, f"institution {institution!r} appears twice (also as {sites[ikey]!r})")
            continue
        sites[ikey] = institution
        own: dict[str, str | None] = {}
        entries[ikey] = own
        if not isinstance(block, yaml.MappingNode):
            err(block, f"institution {institution!r}: expected a mapping of site ROI name to protocol structure name")
            continue
        seen: dict[str, str] = {}
        for roi_node, target_node in block.value:
            if not isinstance(roi_node, yaml.ScalarNode) or not str(roi_node.value).strip():
                err(roi_node, f"institution {institution!r}: a site ROI name must be non-empty text")
                continue
            roi = str(roi_node.value)
            rkey = name_key(roi)
            if rkey in seen:
                err(roi_node, f"institution {institution!r}: ROI name {roi!r} is listed twice (also as {seen[rkey]!r})")
                continue
            seen[rkey] = roi
            if not isinstance(target_node, yaml.ScalarNode):
                err(target_node, f"{roi!r}: expected a protocol structure name or null, got a {target_node.id}")
                continue
            if target_node.tag == "tag:yaml.org,2002:null":
                own[rkey] = None
                continue
            target = str(target_node.value).strip()
            if name_key(target) not in known:
                err(
                    target_node,
                    f"{roi!r}: {target!r} is not a structure of the protocol; expected one of "
                    + ", ".join(sorted(structures))
                    + " (or null for an ROI that is none of them)",
                )
                continue
            own[rkey] = known[name_key(target)]
    if errors:
        raise ProtocolError(f"{spath}: invalid name map ({len(errors)} problem(s)):\n  " + "\n  ".join(errors))
    return NameMap(spath, entries, sites)
