"""Anchors: heads of the chain kept outside the database, to detect a rewritten or cut chain.

A head is the number of rows in the chain and the hash of the last one. The hash chain alone
cannot show a chain recomputed from an edited row onwards, nor the newest rows removed: the
rows still agree with each other. A head kept elsewhere (an anchor file on another machine, a
printed page, an e-mail) can: the row at that position must still have that hash, and then,
the chain being intact, every row up to it is as it was when the head was taken.

An anchor file holds one head per line, appended by ``rtqa ledger anchor --append FILE``::

    2026-11-30T10:14:03+00:00 rows=7 hash=3f0c...e1

Blank lines and lines starting with ``#`` are ignored; any other line that is not a head is an
error (an anchor silently skipped would be a check silently not made).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone

from rtqa.ledger.errors import LedgerError

_LINE = re.compile(r"^(?:(?P<at>\S+)\s+)?rows=(?P<rows>\d{1,18})\s+hash=(?P<hash>[0-9a-f]{64})\s*$")


@dataclass(frozen=True)
class Head:
    """The chain's length and the hash of its last row (the genesis hash for an empty chain)."""

    rows: int
    hash: str

    def text(self) -> str:
        return f"rows={self.rows} hash={self.hash}"


@dataclass(frozen=True)
class Anchor:
    """A head as kept in an anchor file, with where it was read."""

    head: Head
    taken_at: str
    source: str
    line: int

    def name(self) -> str:
        when = f" taken {self.taken_at}" if self.taken_at else ""
        return f"anchor {self.source}:{self.line} ({self.head.rows} rows{when})"


def anchor_line(head: Head, taken_at: str | None = None) -> str:
    """One line of an anchor file: the UTC time it was taken and the head."""
    when = taken_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    return f"{when} {head.text()}"


def parse_anchors(text: str, source: str) -> list[Anchor]:
    """Every head of an anchor file's text.

    Raises
    ------
    LedgerError
        A line that is not a head, or no head at all.
    """
    anchors: list[Anchor] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if m is None:
            raise LedgerError(
                f"{source}:{number}: not an anchor line; expected 'TIME rows=N hash=<64 hex digits>' "
                "(as rtqa ledger anchor writes)"
            )
        head = Head(int(m["rows"]), m["hash"])
        anchors.append(Anchor(head, m["at"] or "", source, number))
    if not anchors:
        raise LedgerError(f"{source}: no anchor in this file, so nothing to check against")
    return anchors


def read_anchors(path: str) -> list[Anchor]:
    """The heads kept in the anchor file at ``path``.

    Raises
    ------
    LedgerError
        The file cannot be read, is not UTF-8 text, or holds a line that is not a head.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(1 << 24)
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise LedgerError(f"anchor file {path}: cannot read it ({reason})") from None
    return parse_anchors(text, path)


def append_anchor(path: str, line: str) -> None:
    """Append one head to the anchor file at ``path`` (created if absent), flushed to disk.

    Raises
    ------
    LedgerError
        The file cannot be written.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        with os.fdopen(fd, "a+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size:
                fh.seek(size - 1)
                ends_line = fh.read(1) == b"\n"
            else:
                ends_line = True
            fh.write((line + "\n" if ends_line else "\n" + line + "\n").encode("utf-8"))
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise LedgerError(f"anchor file {path}: cannot append to it ({exc.strerror or exc})") from None
