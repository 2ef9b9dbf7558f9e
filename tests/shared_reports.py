"""One evaluation per test run of each case of the shared fixture trees: several test files ask
for the same report (``liver_clean`` of Child-Pugh A5 with AAA, ``liver_sib``, ...), each of
them evaluated it again, a second or more each time.

``evaluated(folder, clinical)`` is ``run_job`` of the folder's plan set with the shipped
protocol. When the folder is a case of a tree written by ``_shared_tree_by_parts`` (read-only
by the suite's contract), the report is computed by the first test, on any pytest-xdist worker,
that asks for it, and kept beside the tree (``shared-reports``, pickled; a lock per report), so
that the other tests and workers of the run read it instead of computing it again. The cache
lives in the run's temp folder only: a new run evaluates again. Nothing is kept for trees
given by ``RTQA_FIXTURE_TREES``: the mutation run (tox -e mutation) uses them, and mutmut runs
each mutant in a process forked from one that already ran the tests, which would inherit a
report of the unmutated code. Any other folder (a test's own copy, which it may edit) is
evaluated every time.

This holds because an evaluation is a pure function of its files, protocol and clinical facts
(tests/test_evaluate.py::test_evaluation_is_deterministic evaluates twice without this cache
and compares). The key holds each file's size and modification time besides the paths, so
that a shared case edited in place (forbidden) would be evaluated again, not served stale.
Reports are frozen dataclasses: tests read them and never change them.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from filelock import FileLock

from rtqa.discovery.batch import Job, run_job
from rtqa.discovery.grouping import discover
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.loader import load_protocol
from rtqa.report.model import PlanReport

PROTOCOL = load_protocol()
_PREBUILT = os.environ.get("RTQA_FIXTURE_TREES")


def plan_set(folder: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
    (ps,) = [p for p in discover([str(folder)]).plan_sets if p.plans]
    return ps


def evaluated(folder: str | os.PathLike[str], facts: dict[str, object] | None) -> PlanReport:
    """``run_job`` of the one plan set under ``folder`` with the shipped protocol and the clinical
    facts ``ClinicalFacts(patient_id, **facts)`` (none when ``facts`` is None), computed once per
    run when ``folder`` is a case of a shared tree (see the module's docstring)."""
    ps = plan_set(folder)
    clinical = None if facts is None else ClinicalFacts(ps.patient_id, **facts)  # type: ignore[arg-type]
    job = Job(ps, PROTOCOL.path, clinical)
    store = _store(Path(folder))
    if store is None:
        return run_job(job)
    files = sorted(str(p) for p in Path(folder).rglob("*") if p.is_file())  # every file discovery may read, CT included
    stats = [(f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files]
    key = hashlib.sha256(repr((os.path.realpath(folder), stats, clinical)).encode()).hexdigest()[:32]
    path = store / f"{key}.pickle"
    with FileLock(str(path) + ".lock"):
        if path.exists():
            with open(path, "rb") as fh:
                report: PlanReport = pickle.load(fh)
            return report
        report = run_job(job)
        tmp = path.with_suffix(".part")
        with open(tmp, "wb") as fh:
            pickle.dump(report, fh)
        tmp.replace(path)
        return report


def _store(folder: Path) -> Path | None:
    """Where the reports of cases under ``folder`` are kept, if anywhere."""
    tree = folder.resolve().parent
    if _PREBUILT:
        return None
    if tree.name.startswith("shared-") and (tree.parent / f"{tree.name}-0.done").exists():
        out = tree.parent / "shared-reports"
        out.mkdir(exist_ok=True)
        return out
    return None
