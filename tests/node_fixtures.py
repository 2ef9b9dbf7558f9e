"""Helpers of the DICOM node tests: a node started in this process on a port it picks itself,
a pynetdicom sender, variants of the demo plan for other patients, and the ledger read back.

Everything is bounded in time: a node is always stopped, waits poll with a deadline, and the
sender's network timeouts are short. Only the loopback address is used.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    RTDoseStorage,
    RTIonPlanStorage,
    RTPlanStorage,
    RTStructureSetStorage,
)

from rtqa.node.allow import build_allow_list, parse_allow_entry
from rtqa.node.checker import CheckSettings
from rtqa.node.server import Node, NodeConfig
from rtqa.protocol.loader import load_protocol

DEMO = Path(__file__).resolve().parent.parent / "fixtures" / "demo" / "liver_clean"
DEMO_FILES = sorted(DEMO.glob("*.dcm"))
DEMO_PATHS = [str(f) for f in DEMO_FILES]  # sent as they are on disk (pynetdicom does not re-encode)
DEMO_PATIENT = "HCC-CLEAN"
NODE_AE = "RTQA"
WAIT_S = 60.0  # the longest any wait may take (a check of the demo plan takes about a second)


def read_demo() -> list[Dataset]:
    return [pydicom.dcmread(f) for f in DEMO_FILES]


def demo_for_patient(patient_id: str) -> list[Dataset]:
    """The demo plan, structure set and dose under another PatientID (the UIDs are kept: only
    the top-level identity changes, so pydicom re-encodes nothing else and sending stays fast)."""
    datasets = read_demo()
    for ds in datasets:
        ds.PatientID = patient_id
        ds.PatientName = f"TEST^{patient_id}"
    return datasets


def allow(*entries: str) -> Any:
    return build_allow_list([parse_allow_entry(e) for e in entries])


@contextmanager
def running_node(
    tmp_path: Path,
    *,
    settle_s: float = 0.2,
    incomplete_after_s: float = 30.0,
    allowed: tuple[str, ...] = ("TPS=Hospital A",),
    key: bytes | None = None,
    ledger: str | None = "default",
    spool: Path | None = None,
    name: str = "node",
) -> Iterator[Node]:
    """A node on 127.0.0.1, on a port of its own choosing; stopped whatever happens."""
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}" if ledger == "default" else ledger
    config = NodeConfig(
        ae_title=NODE_AE,
        port=0,
        bind="127.0.0.1",
        spool=str(spool or tmp_path / "spool"),
        allow=allow(*allowed),
        check=CheckSettings(load_protocol(None), settle_s, incomplete_after_s, output=str(tmp_path / "reports")),
        ledger_url=ledger_url,
        pseudonym_key=key,
        network_timeout_s=10.0,
        drain_s=10.0,
    )
    node = Node(config, log=logging.getLogger(f"rtqa.node.test.{name}"))
    node.start()
    try:
        yield node
    finally:
        node.stop()


def sender(calling: str = "TPS", transfer_syntaxes: list[str] | None = None) -> AE:
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    # the demo files' own transfer syntax first, as dcmtk's storescu proposes it: nothing re-encoded
    for cls in (CTImageStorage, RTStructureSetStorage, RTPlanStorage, RTDoseStorage, RTIonPlanStorage):
        ae.add_requested_context(cls, transfer_syntaxes or [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae


def send(
    port: int,
    datasets: list[Dataset] | list[str],
    *,
    calling: str = "TPS",
    abort_after: int | None = None,
    transfer_syntaxes: list[str] | None = None,
) -> list[Dataset]:
    """Send over one association; the C-STORE response of each instance. ``abort_after=n``
    aborts the association after n instances instead of releasing it."""
    assoc = sender(calling, transfer_syntaxes).associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established, f"association not established (rejected={assoc.is_rejected})"
    out = []
    try:
        for i, ds in enumerate(datasets):
            if abort_after is not None and i == abort_after:
                break
            out.append(assoc.send_c_store(ds))
    finally:
        if abort_after is not None:
            assoc.abort()
        else:
            assoc.release()
    return out


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def submissions(ledger: Path) -> list[dict[str, Any]]:
    """The ledger's submissions, read back with sqlite3 (nothing of rtqa in between)."""
    if not ledger.exists():
        return []
    with sqlite3.connect(ledger) as db:
        try:
            rows = db.execute(
                "SELECT id, patient_id, institution, grade, complete, version, report FROM submissions ORDER BY id"
            ).fetchall()
        except sqlite3.OperationalError:  # the schema is not there yet
            return []
    keys = ("id", "patient_id", "institution", "grade", "complete", "version", "report")
    return [dict(zip(keys, r, strict=True)) | {"report": json.loads(r[6])} for r in rows]


def verdict(plan: dict[str, Any]) -> tuple[Any, ...]:
    """What must agree between the node and ``rtqa check``: the plan's grade and every finding."""
    findings = tuple(
        (f["rule"], f.get("matched_roi"), f.get("value"), f.get("grade"))
        for f in (*plan["findings"], *plan.get("eligibility", {}).get("items", ()))
    )
    return plan["grade"], plan["complete"], findings


def spool_files(spool: Path) -> list[Path]:
    """The checked files of the spool (the node's own folder left out)."""
    return sorted(p for p in spool.rglob("*.dcm") if ".rtqa" not in p.relative_to(spool).parts)


def all_bytes_under(root: Path, *, skip: tuple[str, ...] = ()) -> Iterator[tuple[Path, bytes]]:
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if n not in skip:
                yield p, p.read_bytes()
