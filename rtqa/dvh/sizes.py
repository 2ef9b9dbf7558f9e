"""The memory budget's settings and size texts ("2G", "13.2 GiB"). Light to import: the CLI
reads them to build its options, and ``rtqa --help`` must not import numpy (issue 10)."""

from __future__ import annotations

import math
import re

DEFAULT_BUDGET_BYTES = 2 * 1024**3
BUDGET_ENV = "RTQA_MAX_MEMORY"

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from ``"2G"``, ``"512M"``, ``"8GiB"`` or a plain number of bytes.

    Raises
    ------
    ValueError
        Text of another form, or zero.

    Examples
    --------
    >>> parse_size("2G")
    2147483648
    >>> parse_size("512 MB")
    536870912
    """
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size; expected e.g. 2G, 512M or 4096M")
    number = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(number):  # digits beyond a float's range read as inf
        raise ValueError(f"{text!r} is not a size a machine can have; expected e.g. 2G, 512M or 4096M")
    value = int(number)
    if value <= 0:
        raise ValueError(f"{text!r}: the memory budget must be positive")
    return value


def format_size(n_bytes: float) -> str:
    """``"13.2 GiB"`` (binary units, one decimal)."""
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} TiB"
