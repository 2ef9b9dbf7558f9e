"""Checking the audit trail: the hash chain, the HMACs, kept anchors, and the finding rows.

Every problem is listed, not only the first: an office that finds one edited row needs to know
whether it is the only one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from rtqa.ledger.anchors import Anchor, Head
from rtqa.ledger.chain import GENESIS, canonical, hmac_matches, row_hash
from rtqa.ledger.db import Ledger, reading
from rtqa.ledger.record import finding_row
from rtqa.ledger.schema import decisions, findings, submissions


@dataclass(frozen=True)
class Verification:
    """The outcome: rows checked, the head, and every problem found (none when the trail holds)."""

    submissions: int
    decisions: int
    head: Head
    problems: tuple[str, ...]
    hmac_rows: int  # rows that carry an HMAC
    key_checked: bool  # every row's HMAC was checked with the ledger key
    anchors: int  # kept heads checked

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(ledger: Ledger, anchors: Sequence[Anchor] = ()) -> Verification:
    """Recompute every hash in chain order, check every HMAC (with the ledger's key), every kept
    anchor, and every finding row against its hashed report.

    The chain proves that no row was edited, removed from the middle or reordered, unless the
    chain was recomputed after the edit. An anchor (a head kept elsewhere) shows a recomputed
    chain and removed newest rows up to that anchor; the key makes recomputing impossible for
    whoever does not hold it (but not the removal of the newest rows: anchors show that).
    """
    with reading(ledger) as conn:
        subs = conn.execute(select(submissions).order_by(submissions.c.seq)).all()
        decs = conn.execute(select(decisions).order_by(decisions.c.seq)).all()
        by_sub: dict[int, list[Any]] = {}
        for f in conn.execute(select(findings).order_by(findings.c.submission_id, findings.c.idx)):
            by_sub.setdefault(f.submission_id, []).append(f)
    rows: list[tuple[str, Any]] = sorted(
        [("submission", r) for r in subs] + [("decision", r) for r in decs], key=lambda x: int(x[1].seq)
    )
    problems = _chain_problems(rows, ledger.key)
    head = Head(int(rows[-1][1].seq), str(rows[-1][1].hash)) if rows else Head(0, GENESIS)
    problems += _anchor_problems(rows, head, anchors)
    problems += _finding_problems(subs, by_sub)
    return Verification(
        len(subs),
        len(decs),
        head,
        tuple(problems),
        sum(1 for _, r in rows if r.hmac is not None),
        ledger.key is not None,
        len(anchors),
    )


def _name(kind: str, r: Any) -> str:
    return f"{kind} {r.id} (chain position {r.seq})"


def _chain_problems(rows: list[tuple[str, Any]], key: bytes | None) -> list[str]:
    problems: list[str] = []
    previous, expected, last_name = GENESIS, 1, ""
    for kind, r in rows:
        table = submissions if kind == "submission" else decisions
        name = _name(kind, r)
        if r.seq < expected:  # a submission and a decision at one position
            problems.append(f"{name}: chain position {r.seq} is taken twice (also by {last_name})")
        elif r.seq > expected:  # its link cannot be checked: the row before it is gone
            gap = f"position {expected} is" if r.seq == expected + 1 else f"positions {expected}-{r.seq - 1} are"
            problems.append(f"chain {gap} missing (next: {name})")
        elif r.prev_hash != previous:
            problems.append(f"{name}: its link to position {r.seq - 1} is broken (a row removed or replaced before it)")
        if row_hash(table, r._mapping) != r.hash:
            problems.append(f"{name}: its content does not match its hash (edited)")
        if key is not None and not hmac_matches(key, r.hash, r.hmac):
            problems.append(
                f"{name}: "
                + (
                    "no HMAC (written without the ledger key)"
                    if r.hmac is None
                    else "its HMAC does not match its hash under the ledger key (written or rewritten without it)"
                )
            )
        if r.seq >= expected:
            previous, expected, last_name = r.hash, r.seq + 1, name
    return problems


def _anchor_problems(rows: list[tuple[str, Any]], head: Head, anchors: Sequence[Anchor]) -> list[str]:
    problems: list[str] = []
    at: dict[int, tuple[str, Any]] = {}
    for kind, r in rows:
        at.setdefault(int(r.seq), (kind, r))
    for a in anchors:
        n = a.head.rows
        if n == 0:
            if a.head.hash != GENESIS:
                problems.append(f"{a.name()}: an empty chain's head is {GENESIS}, the anchor has {a.head.hash}")
            continue
        if n > head.rows:
            problems.append(
                f"{a.name()}: the chain now ends at position {head.rows}: "
                f"the rows after it up to position {n} were removed since the anchor was taken"
            )
            continue
        found = at.get(n)
        if found is None:
            problems.append(f"{a.name()}: chain position {n} is missing")
        elif found[1].hash != a.head.hash:
            problems.append(
                f"{a.name()}: {_name(*found)} has hash {found[1].hash[:16]}..., the anchor kept "
                f"{a.head.hash[:16]}...: "
                f"the chain was rewritten at or before position {n}"
            )
    return problems


def _finding_problems(subs: Sequence[Any], by_sub: dict[int, list[Any]]) -> list[str]:
    problems: list[str] = []
    for r in subs:
        stored = by_sub.pop(r.id, [])
        try:
            plan_findings = json.loads(r.report)["plan"]["findings"]
            expected = [finding_row(r.id, i, f) for i, f in enumerate(plan_findings)]
        except (ValueError, KeyError, TypeError):
            problems.append(f"submission {r.id}: its report is not a report (no findings can be read from it)")
            continue
        by_idx = {int(g.idx): g for g in stored}
        for want in expected:
            got = by_idx.pop(want["idx"], None)
            if got is None:
                problems.append(f"submission {r.id}: finding row {want['idx']} ({want['rule']}) is missing (deleted)")
                continue
            have = dict(got._mapping)
            if canonical(have) != canonical(want):
                cols = [k for k in want if want[k] != have[k]]
                problems.append(
                    f"submission {r.id}: finding row {want['idx']} ({want['rule']}) differs from the hashed report "
                    f"in {', '.join(cols)} (edited)"
                )
        for idx in sorted(by_idx):
            problems.append(f"submission {r.id}: finding row {idx} is not in its hashed report (added)")
    for orphan in sorted(by_sub):
        problems.append(f"finding rows of submission {orphan}, which is not in the chain")
    return problems
