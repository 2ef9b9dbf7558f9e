"""Check results for the ledger tests: copies of generated liver cases under new patient IDs."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from fixtures.batch import copy_case
from rtqa.discovery.batch import run_batch
from rtqa.discovery.grouping import discover
from rtqa.protocol.clinical import read_clinical_csv
from rtqa.protocol.loader import load_protocol
from rtqa.report.model import CheckResult


def make_patients(tree: Path, root: Path, plan: Iterable[tuple[str, str, str]]) -> tuple[Path, Path]:
    """Copy ``(patient_id, source case, institution)`` into ``root/submissions``; write the clinical CSV.

    Every patient is Child-Pugh A5 with the AAA algorithm, so that no rule is left not evaluable
    for want of a clinical fact (as tests/test_batch.py does).
    """
    rows = ["patient_id,child_pugh,dose_algorithm"]
    for pid, source, institution in plan:
        copy_case(str(tree / source), str(root / "submissions" / pid), pid, institution=institution)
        rows.append(f"{pid},A5,AAA")
    clinical = root / "clinical.csv"
    clinical.write_text("\n".join(rows) + "\n")
    return root / "submissions", clinical


def check(paths: Iterable[Path], clinical: Path) -> CheckResult:
    """What ``rtqa check PATHS --clinical CSV`` computes, as the library returns it."""
    protocol = load_protocol(None)
    found = discover([str(p) for p in paths])
    # two processes, as `rtqa check --workers 2` runs: the office test checks 23 plans
    with ProcessPoolExecutor(max_workers=2) as pool:
        reports = run_batch(list(found.plan_sets), protocol, clinical=read_clinical_csv(str(clinical)), executor=pool)
    return CheckResult(protocol, tuple(reports), found.unassigned)


def sha256_files(folder: Path) -> set[str]:
    """SHA-256 of the DICOM files of one copied case, computed here independently of rtqa."""
    return {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()}
