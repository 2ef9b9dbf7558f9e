"""Four processes writing to one ledger at once, on SQLite and on PostgreSQL.

Each process records its own 15 plans one transaction at a time, the same shared plan (which
must become one submission however the processes interleave) and a decision on it. Afterwards
the counts are exact and the hash chain verifies. Four processes that are the first writers of
an empty database create its schema once (on PostgreSQL, under an advisory lock) and all record.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from sqlalchemy import func, select, text

from rtqa.ledger.db import open_ledger, reading
from rtqa.ledger.schema import HEAD, decisions, submissions
from rtqa.ledger.verify import verify
from rtqa.report.model import CheckResult
from tests.ledger_cases import check, make_patients

WORKERS = 4
PLANS = 15

WRITER = f"""
import pickle, sys
from dataclasses import replace
from rtqa.ledger.db import open_ledger
from rtqa.ledger.record import record_result
from rtqa.ledger.review import add_decision

url, path, worker = sys.argv[1], sys.argv[2], int(sys.argv[3])
result = pickle.load(open(path, "rb"))
template = result.reports[0]
ledger = open_ledger(url, create=True)
for i in range({PLANS}):
    if i == 5:  # every worker sends the shared plan too, at about the same moment
        shared = record_result(ledger, replace(result, reports=(replace(template, patient_id="SHARED"),)))
        add_decision(ledger, shared[0].submission_id, action="accept_plan", reason=f"w{{worker}}", reviewer="R")
    report = replace(template, patient_id=f"W{{worker}}-{{i:02d}}")
    (r,) = record_result(ledger, replace(result, reports=(report,)))
    assert r.new, r
ledger.dispose()
"""


# every process sleeps until the same moment, then opens the empty ledger: the schema is created
# by several processes at once unless creation is serialised
FIRST_WRITER = """
import pickle, sys, time
from dataclasses import replace
from rtqa.ledger.db import open_ledger
from rtqa.ledger.record import record_result

url, path, worker, start = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
result = pickle.load(open(path, "rb"))
report = replace(result.reports[0], patient_id=f"FIRST-{worker}")
time.sleep(max(0.0, start - time.time()))
ledger = open_ledger(url, create=True)
(r,) = record_result(ledger, replace(result, reports=(report,)))
assert r.new, r
ledger.dispose()
"""


@pytest.fixture(scope="module")
def pickled(liver_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrent")
    tree, clinical = make_patients(liver_tree, root, [("T1", "liver_clean", "Centre A")])
    result: CheckResult = check([tree], clinical)
    path = root / "result.pickle"
    path.write_bytes(pickle.dumps(replace(result, reports=result.reports[:1])))
    return path


def test_four_writers_lose_and_duplicate_nothing(ledger_url, pickled):
    open_ledger(ledger_url, create=True).dispose()  # created once, as `rtqa ledger upgrade` would
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, ledger_url, str(pickled), str(w)], stderr=subprocess.PIPE, text=True
        )
        for w in range(WORKERS)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    ledger = open_ledger(ledger_url)
    try:
        with reading(ledger) as conn:
            n_sub = conn.execute(select(func.count()).select_from(submissions)).scalar_one()
            n_shared = conn.execute(
                select(func.count()).select_from(submissions).where(submissions.c.patient_id == "SHARED")
            ).scalar_one()
            n_dec = conn.execute(select(func.count()).select_from(decisions)).scalar_one()
            seqs = sorted(
                [*conn.execute(select(submissions.c.seq)).scalars(), *conn.execute(select(decisions.c.seq)).scalars()]
            )
        assert (n_sub, n_shared, n_dec) == (WORKERS * PLANS + 1, 1, WORKERS)
        assert seqs == list(range(1, n_sub + n_dec + 1))  # one chain, no gap, no position taken twice
        assert verify(ledger).ok
    finally:
        ledger.dispose()


def test_four_first_writers_to_an_empty_database_create_the_schema_once(ledger_url, pickled):
    start = time.time() + 2.5  # after every interpreter has imported rtqa and SQLAlchemy (about 1 s)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_WRITER, ledger_url, str(pickled), str(w), repr(start)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(WORKERS)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * WORKERS, errors
    assert time.time() > start  # the processes did wait for the common moment
    ledger = open_ledger(ledger_url)
    try:
        with reading(ledger) as conn:
            patients = sorted(conn.execute(select(submissions.c.patient_id)).scalars())
            revisions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert patients == [f"FIRST-{w}" for w in range(WORKERS)]
        assert revisions == [HEAD]
        assert verify(ledger).ok
    finally:
        ledger.dispose()
