"""The hash chain over submissions and decisions.

Both tables share one sequence ``seq`` (1, 2, 3, ...). A row's ``hash`` is the SHA-256 of its
kind and every other column in canonical JSON, ``prev_hash`` included, so each row vouches for the
one before it: an edited row no longer matches its hash, and a removed or reordered row breaks
the link of the row after it. Appends happen under the lock of :func:`rtqa.ledger.db.writing`.

The chain alone proves only that the rows agree with each other: whoever can write to the
database can edit a row and recompute every hash after it. Two things go further:

* the *head* (the number of rows and the last row's hash, :class:`Head`) kept outside the
  database (:mod:`rtqa.ledger.anchors`): a kept head must stay a prefix of the chain;
* a *ledger key*: each row's ``hmac`` is the HMAC-SHA256 of its hash under a secret key, so a
  row cannot be rewritten, nor its hash recomputed, by anyone who does not hold the key. The
  ``hmac`` is outside the hash, so the chain verifies with or without the key. A ledger is keyed
  from its first row or never (:func:`read_tail` refuses a mixture).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table, func, select

from rtqa.ledger.errors import LedgerError
from rtqa.ledger.schema import LATER_COLUMNS, decisions, submissions

if TYPE_CHECKING:
    from rtqa.ledger.db import Ledger

GENESIS = "0" * 64
# columns that are not part of a row's hashed content: the hash itself, and the HMAC over it
UNHASHED = ("hash", "hmac")
KEY_ENV = "RTQA_LEDGER_KEY"
MIN_KEY_BYTES = 16


def canonical(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same bytes for the same content, on any database."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_hash(table: Table, row: Mapping[str, Any]) -> str:
    """The hash of one row of ``table`` (every column but ``hash`` itself)."""
    content = {
        c.name: row[c.name]
        for c in table.columns
        if c.name not in UNHASHED and not (c.name in LATER_COLUMNS and row[c.name] in LATER_COLUMNS[c.name])
    }
    return sha256_text(table.name + "\n" + canonical(content))


def row_hmac(key: bytes, digest: str) -> str:
    """The HMAC-SHA256 of a row's hash under the ledger key (the hash covers the row and its link)."""
    return hmac.new(key, b"rtqa-ledger-row\n" + digest.encode("ascii"), hashlib.sha256).hexdigest()


def hmac_matches(key: bytes, digest: str, stored: str | None) -> bool:
    return stored is not None and hmac.compare_digest(row_hmac(key, digest), stored)


def ledger_key(env_value: str | None, key_file: str | None) -> bytes | None:
    """The ledger key from ``RTQA_LEDGER_KEY`` (its text) or a key file (its bytes), or None.

    Trailing whitespace (the newline of ``openssl rand -hex 32 > ledger.key``) is not part of it.

    Raises
    ------
    LedgerError
        Both given, a file that cannot be read, or a key shorter than MIN_KEY_BYTES.
    """
    if env_value and key_file:
        raise LedgerError(f"the ledger key is given twice ({KEY_ENV} and --ledger-key-file): give it one way")
    if key_file:
        try:
            with open(key_file, "rb") as fh:
                key = fh.read(1 << 16).rstrip()
        except OSError as exc:
            raise LedgerError(f"--ledger-key-file {key_file}: cannot read it ({exc.strerror or exc})") from None
        where = f"--ledger-key-file {key_file}"
    elif env_value:
        key, where = env_value.rstrip().encode("utf-8"), KEY_ENV
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise LedgerError(
            f"{where}: the ledger key has {len(key)} bytes; expected at least {MIN_KEY_BYTES} "
            "(make one with: openssl rand -hex 32)"
        )
    return key


def key_from_environment(key_file: str | None) -> bytes | None:
    return ledger_key(os.environ.get(KEY_ENV), key_file)


@dataclass
class Tail:
    """The last link of the chain and the next free ids, read under the append lock."""

    seq: int
    hash: str
    next_submission: int
    next_decision: int
    key: bytes | None = None

    def link(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        """Give ``row`` the next place in the chain and its hash; advance the tail."""
        self.seq += 1
        row["seq"] = self.seq
        row["prev_hash"] = self.hash
        row["hash"] = self.hash = row_hash(table, row)
        row["hmac"] = row_hmac(self.key, self.hash) if self.key is not None else None
        return row


def read_tail(conn: Connection, ledger: Ledger) -> Tail:
    """The chain's tail and the next ids, in one statement (this runs once per append).

    Raises
    ------
    LedgerError
        The ledger is keyed and ``ledger`` has no key or another key, or the ledger was started
        without a key and ``ledger`` has one: a ledger is keyed from its first row or never, so
        that ``rtqa ledger verify`` with the key can require an HMAC on every row.
    """
    top = select(
        func.coalesce(select(func.max(submissions.c.seq)).scalar_subquery(), 0),
        func.coalesce(select(func.max(decisions.c.seq)).scalar_subquery(), 0),
        func.coalesce(select(func.max(submissions.c.id)).scalar_subquery(), 0),
        func.coalesce(select(func.max(decisions.c.id)).scalar_subquery(), 0),
    )
    sub_seq, dec_seq, sub_id, dec_id = conn.execute(top).one()
    seq = max(sub_seq, dec_seq)
    digest, key = GENESIS, ledger.key
    if seq:
        table = submissions if sub_seq > dec_seq else decisions
        digest, mac = conn.execute(select(table.c.hash, table.c.hmac).where(table.c.seq == seq)).one()
        if mac is not None and key is None:
            raise LedgerError(
                f"{ledger.shown_url}: this ledger is keyed (its rows carry an HMAC): writing to it needs its key "
                f"({KEY_ENV} or --ledger-key-file)"
            )
        if mac is None and key is not None:
            raise LedgerError(
                f"{ledger.shown_url}: this ledger was started without a key, and a key was given: rows written "
                "without a key cannot be authenticated afterwards; write without the key, or start a new keyed ledger"
            )
        if key is not None and not hmac_matches(key, digest, mac):
            raise LedgerError(
                f"{ledger.shown_url}: the ledger key given is not this ledger's key (its last row's HMAC does not "
                "match); nothing written"
            )
    return Tail(seq, digest, sub_id + 1, dec_id + 1, key)
