"""Text from the files, made safe for line-based reports (the text renderers of every command).

A plan label, ROI name, institution, patient ID or review reason is chosen by whoever made
the export or typed the reason. A newline in it could forge a line of a text report (a
``Grade: PER PROTOCOL`` under the real one); a terminal escape could repaint the screen; a
right-to-left override could show a name reversed. :func:`clean` shows every such character
escaped, and every text renderer passes the text it did not write itself (or each whole line,
where it adds no colour) through it. CSV cells have their own guard (:mod:`rtqa.report.csv_cells`);
HTML escapes with :func:`html.escape` (quotes included).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable

_SPECIAL = {0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t"}


def _escape(ch: str) -> str:
    code = ord(ch)
    if code in _SPECIAL:
        return _SPECIAL[code]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


# C0 and C1 controls and DEL; the Unicode line and paragraph separators; the bidirectional
# embedding, override and isolate controls (a reversed name reads as another)
_UNSAFE = {
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    0x2028,
    0x2029,
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x200E,
    0x200F,
}
_TABLE = {c: _escape(chr(c)) for c in _UNSAFE}


def clean(text: object) -> str:
    """Text for a line-based report: control characters, line separators and bidirectional
    controls shown escaped; ``None`` is empty.

    Examples
    --------
    >>> clean("PLAN\\nGrade: PER PROTOCOL"), clean(None), clean("Leber \u2013 GTV")
    ('PLAN\\\\nGrade: PER PROTOCOL', '', 'Leber – GTV')
    """
    return str(text).translate(_TABLE) if text is not None else ""


def clean_lines(lines: Iterable[str]) -> str:
    """Lines joined by newlines, each cleaned first: a newline inside one shows as ``\\n``."""
    return "\n".join(clean(line) for line in lines)


def is_clean(text: str) -> bool:
    """Whether ``text`` has nothing :func:`clean` would escape (used by the tests)."""
    return not any(ord(c) in _UNSAFE or unicodedata.category(c) == "Cc" for c in text)
