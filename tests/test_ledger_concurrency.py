"""Four processes writing to one ledger at once, on SQLite and on PostgreSQL.

Each process records its own 15 plans one transaction at a time, the same shared plan (which
must become one submission however the processes interleave) and a decision on it. Afterwards
the counts are exact and the hash chain verifies.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from rtqa.ledger.db import open_ledger, reading
from rtqa.ledger.schema import decisions, submissions
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
