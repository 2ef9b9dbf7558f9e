"""Protocol files: YAML loaded safely and validated as a whole before use.

An invalid file is refused with every problem listed as ``file:line: [rule id] what is wrong
and what was expected``. See ``rules/nct03535259.yaml`` for a complete example and
README.md ("Protocol file format") for the reference.

This module finds and reads the file (YAML with line numbers, the alias table it names, a
per-process cache); :mod:`rtqa.protocol.validate` checks it and builds the model of
:mod:`rtqa.protocol.model`, whose names are importable from here too.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from typing import Any

import yaml

from rtqa.errors import ProtocolError
from rtqa.protocol.model import (
    CHILD_PUGH,
    GRADE_NAMES,
    KNOWN_FACTS,
    TECHNICAL_CHECKS,
    DerivedSpec,
    LimitSet,
    LowerDoseRing,
    Protocol,
    Rule,
    StructureSpec,
    normalise_name,
)
from rtqa.protocol.validate import LineList, LineMap, Validator, pattern_problem

# the model's and the validator's public names stay importable from here
__all__ = [
    "CHILD_PUGH",
    "GRADE_NAMES",
    "KNOWN_FACTS",
    "RULES_DIR",
    "TECHNICAL_CHECKS",
    "DerivedSpec",
    "LimitSet",
    "LowerDoseRing",
    "Protocol",
    "Rule",
    "StructureSpec",
    "load_protocol",
    "normalise_name",
    "pattern_problem",
    "resolve_protocol_path",
]

_SOURCE_RULES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "rules")
_INSTALLED_RULES = os.path.join(sys.prefix, "share", "rtqa", "rules")  # a wheel install puts them here
RULES_DIR = _SOURCE_RULES if os.path.isdir(_SOURCE_RULES) else _INSTALLED_RULES


# ------------------------------------------------------------------------------------------------
# YAML with line numbers

# libyaml's parser where PyYAML was built with it (about 10x faster than the pure-Python one);
# its nodes carry the same marks, so the line numbers of error messages are unchanged
try:
    from yaml import CSafeLoader as _SafeBase
except ImportError:  # PyYAML without libyaml
    from yaml import SafeLoader as _SafeBase  # type: ignore[assignment]


class _Loader(_SafeBase):
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineMap:
    out = LineMap()
    out.line = node.start_mark.line + 1
    out.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in out:
            raise ProtocolError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[str(key)] = key_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(n, deep=True) for n in node.value)
    out.line = node.start_mark.line + 1
    out.item_lines = [n.start_mark.line + 1 for n in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


# ------------------------------------------------------------------------------------------------
# Loading


def resolve_protocol_path(name_or_path: str | None) -> str:
    """A protocol file path from a path or a shipped name (``nct03535259``); None = the default."""
    if name_or_path is None:
        name_or_path = "nct03535259"
    if os.path.isfile(name_or_path):
        return name_or_path
    candidate = os.path.join(RULES_DIR, f"{name_or_path.lower()}.yaml")
    if os.path.isfile(candidate):
        return candidate
    shipped = sorted(f[:-5] for f in os.listdir(RULES_DIR) if f.endswith(".yaml") and not f.startswith("tg263"))
    raise ProtocolError(f"{name_or_path}: no such protocol file or shipped protocol (shipped: {', '.join(shipped)})")


def load_protocol(name_or_path: str | None = None) -> Protocol:
    """Load and validate a protocol; every problem is reported at once.

    A file is parsed once per process: a second call with the same file and the same bytes
    (the CLI, then each plan of a batch) returns the protocol already built.

    Raises
    ------
    ProtocolError
        The file is missing, not YAML, or invalid; the message lists file, line, rule id
        and what was expected for each problem.
    """
    path = resolve_protocol_path(name_or_path)
    with open(path, "rb") as fh:
        raw = fh.read()
    # keyed on the content too, so an edited file is read afresh; errors are never cached
    key = (os.path.abspath(path), path, hashlib.sha256(raw).hexdigest())
    cached = _PARSED.get(key)
    if cached is None:
        cached = _parse(path, raw, key[2])
        _PARSED[key] = cached
    return cached


_PARSED: dict[tuple[str, str, str], Protocol] = {}


def _parse(path: str, raw: bytes, sha: str) -> Protocol:
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_Loader)  # a SafeLoader subclass
    except ProtocolError as exc:
        raise ProtocolError(f"{path}: {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{path}: not valid YAML ({exc})") from None
    v = Validator(path, _table_reader(path))
    protocol = v.protocol(data, sha)
    if v.errors:
        listed = "\n  ".join(v.errors)
        raise ProtocolError(f"{path}: invalid protocol ({len(v.errors)} problem(s)):\n  {listed}")
    assert protocol is not None
    return protocol


def _table_reader(protocol_path: str) -> Callable[[str], Any]:
    """Reads an alias table named by a protocol: beside the protocol file, else a shipped one."""

    def read(name: str) -> Any:
        path = os.path.join(os.path.dirname(protocol_path), name)
        if not os.path.isfile(path):
            path = os.path.join(RULES_DIR, name)
        with open(path, encoding="utf-8") as fh:
            return yaml.load(fh, Loader=_Loader)  # a SafeLoader subclass

    return read
