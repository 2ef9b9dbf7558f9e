"""The DICOM node (rtqa listen): what it refuses (senders, instances, cut-short transfers), four
senders at once, and its pieces without a network (allow-list, pseudonyms, usage errors).

Split from test_node.py so that pytest-xdist (--dist loadfile) runs the two files side by side.

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

from rtqa.cli import cli
from rtqa.node.allow import AllowListError, build_allow_list, parse_allow_entry, read_allow_file
from rtqa.node.pseudonym import pseudonym_of
from tests.node_fixtures import (
    DEMO,
    DEMO_PATHS,
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


def test_before_the_timeout_an_incomplete_set_is_not_recorded(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rtqa.node")
    no_dose = [ds for ds in read_demo() if ds.Modality != "RTDOSE"]
    with running_node(tmp_path, incomplete_after_s=600) as node:
        send(node.port, no_dose)
        wait_for(lambda: any("waiting for the rest" in r.getMessage() for r in caplog.records), "the wait")
        assert len(node.state.pending()) == 1
    assert submissions(tmp_path / "ledger.db") == []


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
