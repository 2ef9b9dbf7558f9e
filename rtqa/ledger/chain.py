"""The hash chain over submissions and decisions.

Both tables share one sequence ``seq`` (1, 2, 3, ...). A row's ``hash`` is the SHA-256 of its
kind and every other column in canonical JSON, ``prev_hash`` included, so each row vouches for the
one before it: an edited row no longer matches its hash, and a removed or reordered row breaks
the link of the row after it. Appends happen under the lock of :func:`rtqa.ledger.db.writing`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, func, select

from rtqa.ledger.schema import decisions, submissions

GENESIS = "0" * 64


def canonical(obj: Any) -> str:
    """JSON with sorted keys and no spaces: the same bytes for the same content, on any database."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_hash(table: Table, row: Mapping[str, Any]) -> str:
    """The hash of one row of ``table`` (every column but ``hash`` itself)."""
    content = {c.name: row[c.name] for c in table.columns if c.name != "hash"}
    return sha256_text(table.name + "\n" + canonical(content))


@dataclass
class Tail:
    """The last link of the chain and the next free ids, read under the append lock."""

    seq: int
    hash: str
    next_submission: int
    next_decision: int

    def link(self, table: Table, row: dict[str, Any]) -> dict[str, Any]:
        """Give ``row`` the next place in the chain and its hash; advance the tail."""
        self.seq += 1
        row["seq"] = self.seq
        row["prev_hash"] = self.hash
        row["hash"] = self.hash = row_hash(table, row)
        return row


def read_tail(conn: Connection) -> Tail:
    """The chain's tail and the next ids, in one statement (this runs once per append)."""
    top = select(
        func.coalesce(select(func.max(submissions.c.seq)).scalar_subquery(), 0),
        func.coalesce(select(func.max(decisions.c.seq)).scalar_subquery(), 0),
        func.coalesce(select(func.max(submissions.c.id)).scalar_subquery(), 0),
        func.coalesce(select(func.max(decisions.c.id)).scalar_subquery(), 0),
    )
    sub_seq, dec_seq, sub_id, dec_id = conn.execute(top).one()
    seq = max(sub_seq, dec_seq)
    digest = GENESIS
    if seq:
        table = submissions if sub_seq > dec_seq else decisions
        digest = conn.execute(select(table.c.hash).where(table.c.seq == seq)).scalar_one()
    return Tail(seq, digest, sub_id + 1, dec_id + 1)
