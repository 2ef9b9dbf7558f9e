"""The DICOM node (rtqa listen) with pynetdicom's SCU as the sender: who may send, what is kept,
what is checked and recorded, and what a careless or hostile sender cannot achieve.

Each test starts a node in this process on a loopback port it picks itself and stops it; the
ledger is SQLite in tmp_path and is read back with sqlite3. The reference verdict is what
``rtqa check`` gives for the same files.
"""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner
from pydicom.uid import ImplicitVRLittleEndian

from rtqa.cli import cli
from rtqa.node.pseudonym import pseudonym_of, read_key
from rtqa.node.spool import safe_component
from tests.node_fixtures import (
    DEMO,
    DEMO_PATHS,
    DEMO_PATIENT,
    read_demo,
    running_node,
    send,
    spool_files,
    submissions,
    verdict,
    wait_for,
)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def check_verdict() -> tuple:
    """The verdict of ``rtqa check`` on the demo files, as the reference."""
    result = run("check", str(DEMO), "--format", "json")
    assert result.exit_code == 12, result.output  # 4 | 8: child_pugh (eligibility) is unknown without --clinical
    (plan,) = json.loads(result.output)["plans"]
    return verdict(plan)


def test_demo_plan_is_checked_and_recorded_with_the_verdict_of_rtqa_check(tmp_path, check_verdict, caplog):
    caplog.set_level(logging.INFO, logger="rtqa.node")
    with running_node(tmp_path) as node:
        statuses = send(node.port, DEMO_PATHS)
        assert [s.Status for s in statuses] == [0, 0, 0]
        (sub,) = wait_for(lambda: submissions(tmp_path / "ledger.db"), "the submission")
    assert sub["patient_id"] == DEMO_PATIENT
    assert sub["institution"] == "Hospital A"  # the allow-list's name, not the files' InstitutionName
    assert verdict(sub["report"]["plan"]) == check_verdict
    study = read_demo()[0].StudyInstanceUID
    layout = {f.relative_to(tmp_path / "spool").parts[:3] for f in spool_files(tmp_path / "spool")}
    assert layout == {(safe_component("Hospital A", empty=""), DEMO_PATIENT, study)}
    (report_json,) = (tmp_path / "reports").rglob("*.json")
    assert verdict(json.loads(report_json.read_text())["plans"][0]) == check_verdict
    lines = [r.getMessage() for r in caplog.records]
    assert sum("association" in m and "released" in m for m in lines) == 1
    assert sum(m.startswith("check ") and "ledger submission" in m for m in lines) == 1


def test_the_same_files_sent_twice_are_one_submission(tmp_path, check_verdict, caplog):
    caplog.set_level(logging.INFO, logger="rtqa.node")
    with running_node(tmp_path) as node:
        send(node.port, DEMO_PATHS)
        send(node.port, DEMO_PATHS)  # before the first is settled
        wait_for(lambda: submissions(tmp_path / "ledger.db"), "the submission")
        send(node.port, DEMO_PATHS)  # after it was recorded
        # and once more in another transfer syntax (another tool's choice): the same data sets
        send(node.port, DEMO_PATHS, transfer_syntaxes=[ImplicitVRLittleEndian])
        wait_for(lambda: sum("3 already held" in r.getMessage() for r in caplog.records) == 3, "the resends")
        node.checker.tick(1e12)
    assert len(submissions(tmp_path / "ledger.db")) == 1
    assert len(spool_files(tmp_path / "spool")) == 3
    # another node (a new spool) that receives the same files records nothing new either
    with running_node(tmp_path, spool=tmp_path / "spool2", name="second") as node:
        send(node.port, DEMO_PATHS)
        wait_for(lambda: any("not recorded again" in r.getMessage() for r in caplog.records), "the second check")
    (sub,) = submissions(tmp_path / "ledger.db")
    assert verdict(sub["report"]["plan"]) == check_verdict


def test_same_uid_with_other_bytes_is_kept_apart_and_reported(tmp_path, caplog, check_verdict):
    caplog.set_level(logging.INFO, logger="rtqa.node")
    altered = read_demo()
    plan = next(ds for ds in altered if ds.Modality == "RTPLAN")
    plan.RTPlanLabel = "ALTERED"
    with running_node(tmp_path) as node:
        send(node.port, DEMO_PATHS)
        wait_for(lambda: submissions(tmp_path / "ledger.db"), "the submission")
        send(node.port, [plan])
        wait_for(lambda: any("already held with other contents" in r.getMessage() for r in caplog.records), "report")
        node.checker.tick(1e12)
    (sub,) = submissions(tmp_path / "ledger.db")
    assert sub["report"]["plan"]["plan_label"] != "ALTERED"
    (apart,) = (tmp_path / "spool" / ".rtqa" / "conflicts").rglob("*.dcm")
    assert plan.SOPInstanceUID in apart.name
    held = [f for f in spool_files(tmp_path / "spool") if f.name.startswith("RTPLAN_")]
    assert len(held) == 1 and b"ALTERED" not in held[0].read_bytes() and b"ALTERED" in apart.read_bytes()


def test_an_incomplete_set_is_recorded_not_evaluable_after_the_timeout_then_completed(tmp_path, check_verdict):
    demo = read_demo()
    no_dose = [ds for ds in demo if ds.Modality != "RTDOSE"]
    dose = [ds for ds in demo if ds.Modality == "RTDOSE"]
    with running_node(tmp_path, incomplete_after_s=1.0) as node:
        send(node.port, no_dose)
        (first,) = wait_for(lambda: submissions(tmp_path / "ledger.db"), "the incomplete submission")
        send(node.port, dose)
        subs = wait_for(lambda: (s := submissions(tmp_path / "ledger.db")) and len(s) == 2 and s, "the complete one")
    plan = first["report"]["plan"]
    assert first["grade"] == "not_evaluable" and not first["complete"]
    incomplete = [e for e in plan["errors"] if e["type"] == "IncompleteSubmission"]
    assert incomplete and "missing RT Dose" in incomplete[0]["message"]
    assert subs[1]["version"] == 2
    assert verdict(subs[1]["report"]["plan"]) == check_verdict


def test_a_dose_alone_is_recorded_not_evaluable_naming_the_missing_plan(tmp_path):
    dose = [ds for ds in read_demo() if ds.Modality == "RTDOSE"]
    with running_node(tmp_path, incomplete_after_s=0.5) as node:
        send(node.port, dose)
        (sub,) = wait_for(lambda: submissions(tmp_path / "ledger.db"), "the incomplete submission")
    (error,) = sub["report"]["plan"]["errors"]
    assert sub["grade"] == "not_evaluable" and not sub["complete"]
    assert error["type"] == "IncompleteSubmission" and "dose with no plan" in error["message"]


def test_pseudonymised_before_anything_is_stored(tmp_path, check_verdict):
    key_file = tmp_path / "key"
    assert run("pseudonym", "keygen", str(key_file)).exit_code == 0
    key = read_key(str(key_file))
    alias = pseudonym_of(key, DEMO_PATIENT)
    with running_node(tmp_path, key=key) as node:
        send(node.port, DEMO_PATHS)
        (sub,) = wait_for(lambda: submissions(tmp_path / "ledger.db"), "the submission")
    assert sub["patient_id"] == alias
    assert verdict(sub["report"]["plan"]) == check_verdict
    # no file the node wrote, but its own map, holds the patient's ID or name
    for root in (tmp_path / "spool", tmp_path / "reports"):
        for path, data in _files(root):
            if path.name.startswith("node.sqlite"):
                continue
            assert DEMO_PATIENT.encode() not in data, path
            assert b"HCC^" not in data, path
    assert DEMO_PATIENT.encode() not in (tmp_path / "ledger.db").read_bytes()
    assert all(f.relative_to(tmp_path / "spool").parts[1] == alias for f in spool_files(tmp_path / "spool"))
    looked = run("pseudonym", "lookup", alias, "--spool", str(tmp_path / "spool"))
    assert looked.exit_code == 0 and f"{alias}\t{DEMO_PATIENT}\tHCC^{DEMO_PATIENT}" in looked.output
    forward = run("pseudonym", "lookup", DEMO_PATIENT, "--key", str(key_file))
    assert forward.output.strip() == alias
    unknown = run("pseudonym", "lookup", "RTQA-0000", "--spool", str(tmp_path / "spool"))
    assert unknown.exit_code == 2


def _files(root):
    for path in root.rglob("*"):
        if path.is_file():
            yield path, path.read_bytes()


def test_pending_files_survive_a_stop_and_are_checked_after_the_next_start(tmp_path, check_verdict):
    with running_node(tmp_path, settle_s=3600) as node:
        send(node.port, DEMO_PATHS)
        wait_for(lambda: node.state.pending(), "the files to be pending")
    assert submissions(tmp_path / "ledger.db") == []
    with running_node(tmp_path, settle_s=0.1, name="restarted"):
        (sub,) = wait_for(lambda: submissions(tmp_path / "ledger.db"), "the submission after the restart")
    assert verdict(sub["report"]["plan"]) == check_verdict
