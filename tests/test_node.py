"""The DICOM node (rtqa listen) with pynetdicom's SCU as the sender: who may send, what is kept,
what is checked and recorded, and what a careless or hostile sender cannot achieve.

Each test starts a node in this process on a loopback port it picks itself and stops it; the
ledger is SQLite in tmp_path and is read back with sqlite3. The reference verdict is what
``rtqa check`` gives for the same files.
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from click.testing import CliRunner
from pydicom.uid import ImplicitVRLittleEndian

from rtqa.cli import cli
from rtqa.node.allow import AllowListError, build_allow_list, parse_allow_entry, read_allow_file
from rtqa.node.pseudonym import pseudonym_of, read_key
from rtqa.node.spool import safe_component
from tests.node_fixtures import (
    DEMO,
    DEMO_PATHS,
    DEMO_PATIENT,
    NODE_AE,
    demo_for_patient,
    read_demo,
    running_node,
    send,
    sender,
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


def test_unknown_calling_ae_title_is_rejected_at_association(tmp_path):
    with running_node(tmp_path, allowed=("TPS=Hospital A", "OTHER@10.0.0.0/8=Hospital B")) as node:
        for calling in ("STRANGER", "OTHER"):  # OTHER is allowed only from 10/8, not from loopback
            assoc = sender(calling).associate("127.0.0.1", node.port, ae_title=NODE_AE)
            assert assoc.is_rejected
            assert (assoc.acceptor.primitive.result, assoc.acceptor.primitive.diagnostic) == (0x01, 0x03)
        wrong_called = sender("TPS").associate("127.0.0.1", node.port, ae_title="NOT-RTQA")
        assert wrong_called.is_rejected
    assert spool_files(tmp_path / "spool") == []
    assert submissions(tmp_path / "ledger.db") == []


def test_an_aborted_association_leaves_nothing_checked(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rtqa.node")
    with running_node(tmp_path) as node:
        statuses = send(node.port, DEMO_PATHS + DEMO_PATHS[:1], abort_after=3)
        assert [s.Status for s in statuses] == [0, 0, 0]  # all three were acknowledged, then the abort
        wait_for(lambda: any("aborted" in r.getMessage() for r in caplog.records), "the abort's log line")
        assert node.state.pending() == []
        node.checker.tick(1e12)  # as if any settle time and timeout had passed: still nothing to check
    assert spool_files(tmp_path / "spool") == []
    assert submissions(tmp_path / "ledger.db") == []
    (kept,) = (tmp_path / "spool" / ".rtqa" / "aborted").iterdir()
    assert len(list(kept.iterdir())) == 3


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


def test_four_associations_at_once(tmp_path, check_verdict):
    patients = [f"PARALLEL-{k}" for k in range(4)]
    sets = {p: demo_for_patient(p) for p in patients}
    errors: list[BaseException] = []
    with running_node(tmp_path) as node:
        start = threading.Barrier(4)

        def go(p: str) -> None:
            try:
                start.wait(timeout=20)
                assert [s.Status for s in send(node.port, sets[p])] == [0, 0, 0]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(p,)) for p in patients]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, [f"{type(e).__name__}: {e}" for e in errors]
        subs = wait_for(lambda: (s := submissions(tmp_path / "ledger.db")) and len(s) == 4 and s, "four submissions")
    assert sorted(s["patient_id"] for s in subs) == patients
    # the same geometry and dose under other identities: the verdict of rtqa check on the demo
    assert all(verdict(s["report"]["plan"]) == check_verdict for s in subs)


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


def test_rt_ion_plan_is_refused_with_a_status_that_says_why(tmp_path):
    ion = next(ds for ds in read_demo() if ds.Modality == "RTPLAN")
    ion.SOPClassUID = ion.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.8"
    with running_node(tmp_path) as node:
        (status,) = send(node.port, [ion])
    assert status.Status == 0x0122
    assert "RT Ion Plan" in status.ErrorComment
    assert spool_files(tmp_path / "spool") == []


def test_a_plan_filed_under_a_storage_class_it_is_not_is_refused(tmp_path):
    plan = next(ds for ds in read_demo() if ds.Modality == "RTPLAN")
    plan.SOPClassUID = plan.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"  # CT Image Storage
    with running_node(tmp_path) as node:
        (status,) = send(node.port, [plan])
    assert status.Status == 0xA900
    assert spool_files(tmp_path / "spool") == []


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


def test_before_the_timeout_an_incomplete_set_is_not_recorded(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rtqa.node")
    no_dose = [ds for ds in read_demo() if ds.Modality != "RTDOSE"]
    with running_node(tmp_path, incomplete_after_s=600) as node:
        send(node.port, no_dose)
        wait_for(lambda: any("waiting for the rest" in r.getMessage() for r in caplog.records), "the wait")
        assert len(node.state.pending()) == 1
    assert submissions(tmp_path / "ledger.db") == []


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


# ----- the pieces, without a network


def test_pseudonyms_depend_on_key_and_patient_only():
    a, b = b"k" * 32, b"l" * 32
    assert pseudonym_of(a, "P1") == pseudonym_of(a, "P1") != pseudonym_of(b, "P1")
    assert pseudonym_of(a, "P1") != pseudonym_of(a, "P2")
    assert "P1" not in pseudonym_of(a, "P1")[5:]


def test_the_docstring_examples_hold():
    import doctest

    import rtqa.node.pseudonym
    import rtqa.node.spool

    for module in (rtqa.node.pseudonym, rtqa.node.spool):
        assert doctest.testmod(module).failed == 0


def test_allow_list_entries_and_file(tmp_path):
    e = parse_allow_entry("TPS@192.168.1.0/24=Hospital A")
    assert e.admits("TPS", "192.168.1.7")
    assert not e.admits("TPS", "192.168.2.7") and not e.admits("TPX", "192.168.1.7")
    bad_entries = (("TPS", "expected CALLING_AE=INSTITUTION"), ("TPS@host=A", "not an IP address"), ("=A", "1 to 16"))
    for bad, why in bad_entries:
        with pytest.raises(AllowListError, match=why):
            parse_allow_entry(bad)
    f = tmp_path / "allow.txt"
    f.write_text("# senders\nTPS=Hospital A\n\nECLIPSE@10.0.0.5=Hospital B  # the planning system\nbroken line\n")
    with pytest.raises(AllowListError, match=r"allow.txt:5: 'broken line'"):
        read_allow_file(str(f))
    with pytest.raises(AllowListError, match="two institutions"):
        build_allow_list([parse_allow_entry("TPS=A"), parse_allow_entry("TPS=B")])
    with pytest.raises(AllowListError, match="no sender is allowed"):
        build_allow_list([])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no sender is allowed"),
        (["--allow", "TPS"], "expected CALLING_AE=INSTITUTION"),
        (["--allow", "TPS=A", "--tls-cert", "README.md"], "needs both --tls-cert and --tls-key"),
        (["--allow", "TPS=A", "--ae-title", "A-TITLE-FAR-TOO-LONG"], "1 to 16 characters"),
    ],
)
def test_listen_usage_errors(tmp_path, args, message):
    base = ["listen", "--port", "0", "--spool", str(tmp_path / "s")]
    if "--ae-title" not in args:
        base += ["--ae-title", "RTQA"]
    result = run(*base, *args)
    assert result.exit_code == 2
    assert message in result.output
