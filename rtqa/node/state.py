"""The node's own state, in ``SPOOL/.rtqa/node.sqlite``: files received and not yet checked,
and the pseudonym map. It survives a restart: files received before a stop are checked after
the next start."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    path TEXT PRIMARY KEY,          -- the file in the spool
    patient_dir TEXT NOT NULL,      -- SPOOL/institution/patient
    institution TEXT NOT NULL,      -- as the allow-list names it
    calling_ae TEXT NOT NULL,
    arrived REAL NOT NULL           -- UNIX time the association that brought it was released
);
CREATE TABLE IF NOT EXISTS pseudonyms (
    pseudonym TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    patient_name TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    UNIQUE (pseudonym, patient_id, patient_name)
);
"""


@dataclass(frozen=True)
class PendingPatient:
    patient_dir: str
    institution: str
    calling_ae: str
    last_arrival: float  # UNIX time
    files: frozenset[str]


@dataclass(frozen=True)
class PseudonymRecord:
    pseudonym: str
    patient_id: str
    patient_name: str
    first_seen: str


class NodeState:
    """A small SQLite database shared by the association threads and the checker (one
    connection, one lock: every statement is short)."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        with self._lock:
            self._db.executescript(_SCHEMA)
        os.chmod(path, 0o600)  # the pseudonym map identifies patients

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add_pending(self, paths: Iterable[str], *, patient_dir: str, institution: str, calling_ae: str) -> None:
        now = time.time()
        rows = [(p, patient_dir, institution, calling_ae, now) for p in paths]
        with self._lock:
            self._db.executemany(
                "INSERT INTO pending VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET arrived = excluded.arrived",
                rows,
            )

    def pending(self) -> list[PendingPatient]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path, patient_dir, institution, calling_ae, arrived FROM pending ORDER BY arrived"
            ).fetchall()
        by_dir: dict[str, list[tuple[str, str, str, str, float]]] = {}
        for row in rows:
            by_dir.setdefault(row[1], []).append(row)
        return [
            PendingPatient(d, rs[-1][2], rs[-1][3], max(r[4] for r in rs), frozenset(r[0] for r in rs))
            for d, rs in by_dir.items()
        ]

    def done(self, paths: Iterable[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM pending WHERE path = ?", [(p,) for p in paths])

    def record_pseudonym(self, pseudonym: str, patient_id: str, patient_name: str) -> None:
        seen = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO pseudonyms VALUES (?, ?, ?, ?)", (pseudonym, patient_id, patient_name, seen)
            )

    def lookup(self, pseudonym: str) -> list[PseudonymRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT pseudonym, patient_id, patient_name, first_seen FROM pseudonyms WHERE pseudonym = ? "
                "ORDER BY first_seen",
                (pseudonym.strip().upper(),),
            ).fetchall()
        return [PseudonymRecord(*r) for r in rows]


def state_path(spool: str) -> str:
    return os.path.join(spool, ".rtqa", "node.sqlite")
