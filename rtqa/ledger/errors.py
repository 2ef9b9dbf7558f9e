"""Errors of the ledger: every one is a clear message, mapped to exit code 2 by the CLI."""

from __future__ import annotations

from rtqa.errors import RtqaError


class LedgerError(RtqaError):
    """A ledger that cannot be opened, read or written, or a request it cannot satisfy."""
