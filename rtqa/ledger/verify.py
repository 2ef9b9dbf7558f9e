"""Checking the audit trail: the hash chain, and the finding rows against the hashed reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from rtqa.ledger.chain import GENESIS, canonical, row_hash
from rtqa.ledger.db import Ledger, reading
from rtqa.ledger.record import finding_row
from rtqa.ledger.schema import decisions, findings, submissions


@dataclass(frozen=True)
class Verification:
    """The outcome: rows checked, and the first broken link (None when the chain holds)."""

    submissions: int
    decisions: int
    broken: str | None

    @property
    def ok(self) -> bool:
        return self.broken is None


def verify(ledger: Ledger) -> Verification:
    """Recompute every hash in chain order and compare every finding row with its report.

    The chain proves that no row was edited, removed from the middle or reordered. It cannot
    show the removal of the newest rows (nothing comes after them): compare the count and the
    last hash with a copy kept elsewhere (a backup, or the figures printed by this command).
    """
    with reading(ledger) as conn:
        subs = conn.execute(select(submissions).order_by(submissions.c.seq)).all()
        decs = conn.execute(select(decisions).order_by(decisions.c.seq)).all()
        rows: list[tuple[str, Any]] = sorted(
            [("submission", r) for r in subs] + [("decision", r) for r in decs], key=lambda x: int(x[1].seq)
        )
        previous = GENESIS
        for expected_seq, (kind, r) in enumerate(rows, start=1):
            table = submissions if kind == "submission" else decisions
            name = f"{kind} {r.id} (chain position {r.seq})"
            if r.seq != expected_seq:
                return Verification(len(subs), len(decs), f"chain position {expected_seq} is missing (next: {name})")
            if r.prev_hash != previous:
                return Verification(
                    len(subs),
                    len(decs),
                    f"{name}: its link to position {expected_seq - 1} is broken (a row removed or replaced before it)",
                )
            if row_hash(table, r._mapping) != r.hash:
                return Verification(len(subs), len(decs), f"{name}: its content does not match its hash (edited)")
            previous = r.hash
        by_sub: dict[int, list[Any]] = {}
        for f in conn.execute(select(findings).order_by(findings.c.submission_id, findings.c.idx)):
            by_sub.setdefault(f.submission_id, []).append(f)
    for r in subs:
        expected = [finding_row(r.id, i, f) for i, f in enumerate(json.loads(r.report)["plan"]["findings"])]
        stored = by_sub.pop(r.id, [])
        if len(stored) != len(expected):
            return Verification(
                len(subs), len(decs), f"submission {r.id}: {len(stored)} finding rows, its report has {len(expected)}"
            )
        for want, got in zip(expected, stored, strict=True):
            have = dict(got._mapping)
            if canonical(have) != canonical(want):
                cols = [k for k in want if want[k] != have[k]]
                return Verification(
                    len(subs),
                    len(decs),
                    f"submission {r.id}: finding row {want['idx']} ({want['rule']}) differs from the hashed report "
                    f"in {', '.join(cols)} (edited)",
                )
    if by_sub:
        orphan = min(by_sub)
        return Verification(len(subs), len(decs), f"finding rows of submission {orphan}, which is not in the chain")
    return Verification(len(subs), len(decs), None)
