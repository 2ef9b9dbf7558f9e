"""The end-cap convention and the grammar of structure expressions. Pure, and light to import.

These live apart from :mod:`rtqa.dvh.geometry` (numpy and shapely) so that loading and
showing a protocol (``rtqa rules``) imports neither (issue 10: start-up time).

An expression combines structures with ``|`` (union), ``&`` (intersection) and ``-``
(difference), left to right, parentheses grouping; operators need spaces around them (names may
hold hyphens and spaces). A margin grows (``+``) or shrinks (``-``) the operand before it in
3D: ``PTVp + 5mm`` (isotropic), ``SpinalCord + [LR 3, AP 3, SI 5]mm`` (per axis of the patient:
left-right, anterior-posterior, superior-inferior). A margin binds to one operand; written
after a set operation without parentheses (``Liver - PTV + 5mm``) it is refused as ambiguous.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from rtqa.errors import GeometryError


class EndCap(str, Enum):
    """How far a structure reaches beyond its first and last contour.

    ``half_slab``: half a slab, the outline unchanged (the contour stands for its slice);
    ``none``: not at all (the outer contours are the faces; what most planning systems report);
    ``shape``: as far, and narrowing as fast, as the trend of the outer contours says (a dome
    closes like a dome, a cone like a cone, a flat end stays flat): the estimate of the true shape.
    """

    HALF_SLAB = "half_slab"
    NONE = "none"
    SHAPE = "shape"


# a parenthesis, an operator with spaces around it, or a name (which may hold hyphens and spaces)
TOKEN_RE = re.compile(r"\s*(\(|\)|(?<=\s)[|&+-](?=\s)|[^()\s][^()]*?(?=\s+[|&+-]\s|\s*\)|\s*$))")
SET_OPERATORS = ("|", "&", "-")
# what reads as a margin rather than a name: a number or a bracket, ending in mm
_MARGIN_LIKE = re.compile(r"(\d|\[).*mm", re.IGNORECASE | re.DOTALL)
_NUMBER = r"\d+(?:\.\d+)?"
_ISOTROPIC = re.compile(rf"({_NUMBER})\s*mm", re.IGNORECASE)
_PER_AXIS = re.compile(r"\[(.*)\]\s*mm", re.IGNORECASE | re.DOTALL)
_AXIS_ITEM = re.compile(rf"\s*(LR|AP|SI)\s+({_NUMBER})\s*", re.IGNORECASE)
AXES = ("LR", "AP", "SI")
MAX_MARGIN_MM = 50.0


def looks_like_margin(token: str) -> bool:
    """Whether a token reads as a margin (``5mm``, ``2.5 mm``, ``[LR 5, AP 5, SI 3]mm``)."""
    return _MARGIN_LIKE.fullmatch(token.strip()) is not None


def parse_margin(token: str) -> tuple[float, float, float]:
    """A margin's (LR, AP, SI) in mm.

    Raises
    ------
    ValueError
        Not a margin, an axis missing or given twice, an in-plane margin zero on one axis only
        (a margin along one in-plane axis alone is not supported), or over 50 mm.

    Examples
    --------
    >>> parse_margin("5mm")
    (5.0, 5.0, 5.0)
    >>> parse_margin("[SI 3, LR 5, AP 4]mm")
    (5.0, 4.0, 3.0)
    """
    text = token.strip()
    iso = _ISOTROPIC.fullmatch(text)
    if iso:
        mm = (float(iso.group(1)),) * 3
    else:
        per_axis = _PER_AXIS.fullmatch(text)
        if per_axis is None:
            raise ValueError(f"margin {text!r}: expected e.g. 5mm or [LR 5, AP 5, SI 3]mm")
        found: dict[str, float] = {}
        for item in per_axis.group(1).split(","):
            m = _AXIS_ITEM.fullmatch(item)
            if m is None:
                raise ValueError(f"margin {text!r}: {item.strip()!r} is not an axis and mm, e.g. 'LR 5'")
            axis = m.group(1).upper()
            if axis in found:
                raise ValueError(f"margin {text!r}: {axis} is given twice")
            found[axis] = float(m.group(2))
        missing = [a for a in AXES if a not in found]
        if missing:
            raise ValueError(f"margin {text!r}: {', '.join(missing)} missing (give LR, AP and SI)")
        mm = (found["LR"], found["AP"], found["SI"])
    if (mm[0] == 0) != (mm[1] == 0):
        raise ValueError(f"margin {text!r}: LR and AP must both be zero or both positive")
    if max(mm) > MAX_MARGIN_MM:
        raise ValueError(f"margin {text!r}: over {MAX_MARGIN_MM:g} mm")
    return mm


@dataclass(frozen=True)
class Name:
    name: str


@dataclass(frozen=True)
class SetOp:
    op: str  # |, & or -
    left: Node
    right: Node


@dataclass(frozen=True)
class Margin:
    operand: Node
    grow: bool  # + grows, - shrinks
    mm: tuple[float, float, float]  # LR, AP, SI
    text: str


Node = Name | SetOp | Margin


def parse_expression(expression: str) -> Node:
    """The syntax tree of a structure expression.

    Raises
    ------
    GeometryError
        A malformed expression, a malformed margin, or a margin next to a set operation
        without parentheses.
    """
    tokens = [t.strip() for t in TOKEN_RE.findall(expression) if t.strip()]
    pos = 0

    def fail(why: str) -> GeometryError:
        return GeometryError(f"structure expression {expression!r}: {why}")

    def primary() -> Node:
        nonlocal pos
        if pos >= len(tokens):
            raise GeometryError(f"structure expression {expression!r} ends too early")
        tok = tokens[pos]
        pos += 1
        if tok == "(":
            value = chain()
            if pos >= len(tokens) or tokens[pos] != ")":
                raise fail("missing ')'")
            pos += 1
            return value
        if tok in ("|", "&", "-", "+", ")"):
            raise fail(f"unexpected {tok!r}")
        if looks_like_margin(tok):
            raise fail(f"margin {tok!r} must follow a structure and + or -")
        return Name(tok)

    def term() -> tuple[Node, bool]:
        nonlocal pos
        value, margin = primary(), False
        while pos < len(tokens) and tokens[pos] in ("+", "-"):
            after = tokens[pos + 1] if pos + 1 < len(tokens) else ""
            if not looks_like_margin(after):
                if tokens[pos] == "+":
                    raise fail("'+' needs a margin after it, e.g. + 5mm or + [LR 5, AP 5, SI 3]mm")
                break  # a set difference
            try:
                mm = parse_margin(after)
            except ValueError as exc:
                raise fail(str(exc)) from None
            value = Margin(value, tokens[pos] == "+", mm, after)
            margin = True
            pos += 2
        return value, margin

    def chain() -> Node:
        nonlocal pos
        value, margin = term()
        operands = 1
        while pos < len(tokens) and tokens[pos] in SET_OPERATORS:
            op = tokens[pos]
            pos += 1
            right, right_margin = term()
            operands += 1
            margin = margin or right_margin
            if margin and operands > 1:
                raise fail(
                    "a margin beside |, & or - is ambiguous: use parentheses, e.g. (A - B) + 5mm or A - (B + 5mm)"
                )
            value = SetOp(op, value, right)
        return value

    result = chain()
    if pos != len(tokens):
        raise fail(f"unexpected {tokens[pos]!r}")
    return result


def expression_names(expression: str) -> list[str]:
    """The structure names an expression refers to, in order (margins are not names).

    Examples
    --------
    >>> expression_names("Liver - (GTVp | GTV v)")
    ['Liver', 'GTVp', 'GTV v']
    >>> expression_names("Body - (PTVp + 5mm)")
    ['Body', 'PTVp']
    """
    return [
        t.strip()
        for t in TOKEN_RE.findall(expression)
        if t.strip() and t.strip() not in ("(", ")", "|", "&", "-", "+") and not looks_like_margin(t)
    ]
