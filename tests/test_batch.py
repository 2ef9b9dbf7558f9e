"""Batch audits: a dozen patients in three centres with one corrupt dose file; process pools and a
Dask cluster. The same audit at 100 patients (1,000 files) is timed in bench/bench_batch.py: a
hundred copies prove nothing a dozen do not, at eight times the cost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures.batch import copy_case
from rtqa.cli import cli
from rtqa.discovery.batch import run_batch
from rtqa.discovery.grouping import discover
from rtqa.protocol.loader import load_protocol
from tests.conftest import case

CENTRES = ("Centre A", "Centre B", "Centre C")
PATIENTS = 12
OVERDOSED = (2, 7, 10)  # a cord overdose, in each centre
CORRUPT = 5  # its dose file cut to a third


@pytest.fixture(scope="module")
def batch_tree(liver_tree, tmp_path_factory) -> tuple[Path, Path]:
    """12 patients: 8 clean, 3 with a cord overdose, 1 whose dose file is cut to a third."""
    root = tmp_path_factory.mktemp("batch")
    tree = root / "submissions"
    rows = ["patient_id,child_pugh,dose_algorithm"]
    for i in range(PATIENTS):
        source = "liver_cord_overdose" if i in OVERDOSED else "liver_clean"
        pid = f"P{i:03d}"
        # submissions arrive by centre, in folders named however the centre likes
        copy_case(case(liver_tree, source), str(tree / CENTRES[i % 3] / f"upload_{i}"), pid, institution=CENTRES[i % 3])
        rows.append(f"{pid},A5,AAA")
    dose = tree / CENTRES[CORRUPT % 3] / f"upload_{CORRUPT}" / "RD_PLAN.dcm"
    with open(dose, "r+b") as fh:
        fh.truncate(os.path.getsize(dose) // 3)
    clinical = root / "clinical.csv"
    clinical.write_text("\n".join(rows) + "\n")
    return tree, clinical


def test_a_dozen_patients_one_corrupt_file(batch_tree, tmp_path):
    tree, clinical = batch_tree
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        cli,
        ["check", str(tree), "--clinical", str(clinical), "--workers", "2", "--format", "json", "--output", str(out)],
    )
    # deviations (1), something not evaluable (4), and P005 unreadable: its eligibility unknown (8)
    assert result.exit_code == 1 | 4 | 8, result.output
    data = json.loads(out.read_text())
    plans = data["plans"]
    assert len(plans) == PATIENTS
    evaluated = [p for p in plans if p["complete"]]
    assert len(evaluated) == PATIENTS - 1
    (broken,) = [p for p in plans if not p["complete"]]
    assert broken["patient_id"] == f"P{CORRUPT:03d}" and broken["grade"] == "not_evaluable"
    assert "no RT Dose file" in broken["errors"][0]["message"] and "truncated" in broken["errors"][0]["message"]
    (unassigned,) = data["unassigned_files"]
    assert unassigned["file"].endswith(f"upload_{CORRUPT}/RD_PLAN.dcm") and "truncated" in unassigned["reason"]
    deviations = sorted(p["patient_id"] for p in plans if p["grade"] == "deviation_unacceptable")
    assert deviations == [f"P{i:03d}" for i in OVERDOSED]
    assert [p["patient_id"] for p in plans] == sorted(p["patient_id"] for p in plans)  # deterministic order


def test_html_index_summarises_per_institution(batch_tree, tmp_path):
    tree, clinical = batch_tree
    subset = [str(tree / CENTRES[i % 3] / f"upload_{i}") for i in (0, 1, OVERDOSED[0], CORRUPT)]
    out = tmp_path / "html"
    result = CliRunner().invoke(
        cli, ["check", *subset, "--clinical", str(clinical), "--format", "html", "--output", str(out)]
    )
    assert result.exit_code == 1 | 4 | 8  # a deviation, the unreadable P005 (not evaluable, eligibility unknown)
    index = (out / "index.html").read_text()
    assert index.count("<a href='") == 4
    for centre in ("Centre A", "Centre B", "Centre C"):
        assert f"<td>{centre}</td>" in index
    assert len(list(out.glob("0*.html"))) == 4


def test_run_batch_reports_progress_in_order(liver_tree):
    found = discover([case(liver_tree, n) for n in ("liver_clean", "liver_cord_overdose", "liver_empty_roi")])
    calls = []
    reports = run_batch(
        [p for p in found.plan_sets if p.plans],
        load_protocol(),
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert [r.patient_id for r in reports] == ["HCC-CLEAN", "HCC-CORD", "HCC-EMPTY"]


def test_same_audit_on_a_local_dask_cluster(liver_tree, tmp_path):
    import distributed

    folders = [case(liver_tree, n) for n in ("liver_clean", "liver_cord_overdose")]
    local = CliRunner().invoke(cli, ["check", *folders, "--format", "json"])
    with distributed.LocalCluster(
        # the scheduler's HTTP server (health and metrics routes, dashboard or not) defaults to port
        # 8787; when that port is taken (another cluster, another test run) distributed warns and
        # leaks a socket, which this suite turns into errors: ask for any free port instead
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address="127.0.0.1:0",
        host="127.0.0.1",
    ) as cluster:
        remote = CliRunner().invoke(
            cli, ["check", *folders, "--format", "json", "--scheduler", cluster.scheduler_address]
        )
    assert remote.exit_code == local.exit_code == 1 | 4 | 8  # no clinical CSV: facts and eligibility unknown
    assert json.loads(remote.stdout)["plans"] == json.loads(local.stdout)["plans"]
