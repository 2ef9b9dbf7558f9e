"""The end-cap convention and the tokens of structure expressions. Pure, and light to import.

These live apart from :mod:`rtqa.dvh.geometry` (numpy and shapely) so that loading and
showing a protocol (``rtqa rules``) imports neither (issue 10: start-up time).
"""

from __future__ import annotations

import re
from enum import Enum


class EndCap(str, Enum):
    HALF_SLAB = "half_slab"
    NONE = "none"


# a parenthesis, an operator with spaces around it, or a name (which may hold hyphens and spaces)
TOKEN_RE = re.compile(r"\s*(\(|\)|(?<=\s)[|&-](?=\s)|[^()\s][^()]*?(?=\s+[|&-]\s|\s*\)|\s*$))")


def expression_names(expression: str) -> list[str]:
    """The structure names an expression refers to, in order.

    Examples
    --------
    >>> expression_names("Liver - (GTVp | GTV v)")
    ['Liver', 'GTVp', 'GTV v']
    """
    return [t.strip() for t in TOKEN_RE.findall(expression) if t.strip() and t.strip() not in ("(", ")", "|", "&", "-")]
