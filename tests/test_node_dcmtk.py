"""The node as a site meets it: ``rtqa listen`` started as a process, Debian's dcmtk
(``echoscu``, ``storescu``) as the sender, SIGTERM to stop it.

dcmtk is a system package (``apt-get install dcmtk``; ``.ci/run`` installs it). Without it these
tests skip, saying so, unless ``RTQA_REQUIRE_DCMTK=1`` (set by ``.ci/run``), where they fail.
pynetdicom installs console scripts of the same names: dcmtk's are told apart by their
``--version``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rtqa.cli import cli
from tests.node_fixtures import DEMO, DEMO_PATHS, DEMO_PATIENT, NODE_AE, submissions, verdict, wait_for

pytestmark = pytest.mark.dcmtk


def _dcmtk(tool: str) -> str | None:
    """The dcmtk program ``tool`` on PATH (or in /usr/bin), not pynetdicom's script of that name."""
    dirs = [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin"]
    for d in dict.fromkeys(dirs):
        path = shutil.which(tool, path=d)
        if path is None:
            continue
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return path
    return None


@pytest.fixture(scope="module")
def dcmtk() -> dict[str, str]:
    tools = {t: _dcmtk(t) for t in ("storescu", "echoscu")}
    missing = [t for t, p in tools.items() if p is None]
    if missing:
        reason = f"dcmtk's {', '.join(missing)} not found (apt-get install dcmtk)"
        if os.environ.get("RTQA_REQUIRE_DCMTK") == "1":
            pytest.fail(reason + "; RTQA_REQUIRE_DCMTK=1 requires it")
        pytest.skip(reason)
    return {t: p for t, p in tools.items() if p is not None}


class NodeProcess:
    """``python -m rtqa listen`` on 127.0.0.1, on a port it picks and logs; stderr to a file."""

    def __init__(self, tmp_path: Path, *extra: str, settle: str = "0.2") -> None:
        self.log = tmp_path / f"node-{time.monotonic_ns()}.log"
        self.ledger = tmp_path / "ledger.db"
        args = [
            sys.executable, "-m", "rtqa", "listen", "--port", "0", "--bind", "127.0.0.1", "--ae-title", NODE_AE,
            "--spool", str(tmp_path / "spool"), "--ledger", str(self.ledger), "--output", str(tmp_path / "reports"),
            "--allow", "TPS=Hospital A", "--settle", settle, "--timeout", "20", *extra,
        ]  # fmt: skip
        self.fh = open(self.log, "w")
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.fh)
        found = wait_for(lambda: self._port() or self.proc.poll() is not None, "the node to listen", 60)
        if self.proc.poll() is not None:
            raise AssertionError(f"the node exited at start: {self.text()}")
        self.port = int(found)

    def _port(self) -> str | None:
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.text())
        return m.group(1) if m else None

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError("the node did not stop within 60 s of SIGTERM") from None
        self.fh.close()
        return self.proc.returncode


def _scu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60)


def test_storescu_sends_the_demo_plan_and_the_ledger_holds_the_verdict_of_rtqa_check(tmp_path, dcmtk):
    expected = CliRunner().invoke(cli, ["check", str(DEMO), "--format", "json"])
    (plan,) = json.loads(expected.output)["plans"]
    node = NodeProcess(tmp_path)
    try:
        echo = _scu(dcmtk["echoscu"], "-aet", "TPS", "-aec", NODE_AE, "127.0.0.1", str(node.port))
        assert echo.returncode == 0, echo.stderr
        sent = _scu(dcmtk["storescu"], "-aet", "TPS", "-aec", NODE_AE, "127.0.0.1", str(node.port), *DEMO_PATHS)
        assert sent.returncode == 0, sent.stderr
        (sub,) = wait_for(lambda: submissions(node.ledger), "the submission")
        stranger = _scu(dcmtk["echoscu"], "-aet", "STRANGER", "-aec", NODE_AE, "127.0.0.1", str(node.port))
        assert stranger.returncode != 0 and "Calling AE Title Not Recognized" in stranger.stderr
    finally:
        code = node.stop()
    assert code == 0, node.text()
    assert sub["patient_id"] == DEMO_PATIENT and sub["institution"] == "Hospital A"
    assert verdict(sub["report"]["plan"]) == verdict(plan)
    log = node.text()
    assert "1 echo" in log and "3 received (3 new" in log and "rejected" in log and log.rstrip().endswith("stopped")


def test_sigterm_keeps_unchecked_files_for_the_next_start(tmp_path, dcmtk):
    node = NodeProcess(tmp_path, settle="3600")
    try:
        sent = _scu(dcmtk["storescu"], "-aet", "TPS", "-aec", NODE_AE, "127.0.0.1", str(node.port), *DEMO_PATHS)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: "3 new" in node.text(), "the association's log line")
    finally:
        assert node.stop() == 0, node.text()
    assert submissions(node.ledger) == []
    again = NodeProcess(tmp_path)
    try:
        assert "3 file(s) of 1 patient(s) pending from before" in again.text()
        (sub,) = wait_for(lambda: submissions(again.ledger), "the submission after the restart")
    finally:
        assert again.stop() == 0, again.text()
    assert sub["patient_id"] == DEMO_PATIENT


def test_tls_echo_with_a_client_certificate_and_plain_refused(tmp_path, dcmtk):
    openssl = shutil.which("openssl")
    if openssl is None:
        reason = "openssl (to make a throwaway certificate) not found (apt-get install openssl)"
        if os.environ.get("RTQA_REQUIRE_DCMTK") == "1":
            pytest.fail(reason + "; RTQA_REQUIRE_DCMTK=1 requires the TLS test to run")
        pytest.skip(reason)
    key, cert = tmp_path / "node.key", tmp_path / "node.crt"
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=127.0.0.1"],
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    # the self-signed certificate is the node's, the CA the node trusts, and the sender's
    node = NodeProcess(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(cert))
    try:
        base = ["-aet", "TPS", "-aec", NODE_AE, "127.0.0.1", str(node.port)]
        with_cert = _scu(dcmtk["echoscu"], "+tls", str(key), str(cert), "+cf", str(cert), *base)
        no_client_cert = _scu(dcmtk["echoscu"], "+tla", "+cf", str(cert), *base)  # TLS, no certificate of its own
        plain = _scu(dcmtk["echoscu"], *base)
    finally:
        assert node.stop() == 0, node.text()
    assert with_cert.returncode == 0, with_cert.stderr
    assert no_client_cert.returncode != 0
    assert plain.returncode != 0
    assert "(TLS)" in node.text() and node.text().count("1 echo") == 1
