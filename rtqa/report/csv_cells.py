"""Cells of the CSV reports, made safe for spreadsheets.

DICOM text (ROI names, patient IDs, plan labels, messages quoting them) is chosen by whoever
exported the plan. A cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage
return, which some spreadsheets skip before reading a formula) is run as a formula by Excel and
LibreOffice. The OWASP "CSV Injection" advice is followed: such a text cell is written with a
leading apostrophe, which spreadsheets show as text and which a reader can strip. Numbers are
written as numbers (a negative dose stays ``-0.5``, never ``'-0.5``), because they come from
rtqa's own arithmetic, not from the file.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

# Excel on Windows reads a CSV as the ANSI code page unless it starts with a byte-order mark;
# Python (encoding="utf-8-sig") and pandas (its default "utf-8" skips a BOM) read it either way.
CSV_FILE_ENCODING = "utf-8-sig"

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

Cell = str | int | float | None


def safe_cell(value: Cell) -> str | int | float:
    """The value as a CSV cell: numbers unchanged, ``None`` empty, formula-like text neutralised.

    Examples
    --------
    >>> safe_cell("=HYPERLINK(1)"), safe_cell("-12"), safe_cell(-12.5), safe_cell("Liver")
    ("'=HYPERLINK(1)", "'-12", -12.5, 'Liver')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return value
    text = str(value)
    return "'" + text if text.startswith(_FORMULA_START) else text


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Cell]]) -> str:
    """A CSV document (``\\n`` line ends, minimal quoting) with every cell passed through
    :func:`safe_cell`."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([safe_cell(c) for c in row])
    return buf.getvalue()
