"""The Storage SCP: associations, C-STORE and C-ECHO over pynetdicom, TLS, an orderly stop.

Accepted: CT Image, RT Structure Set, RT Plan and RT Dose storage, and verification (C-ECHO).
RT Ion Plan storage is negotiated so that its refusal can say why (rtqa checks photon plans
only). A calling AE title (and address) that is not on the allow-list is rejected at
association; a called AE title other than the node's is rejected too. One log line per
association says who sent what and what became of it.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    RTDoseStorage,
    RTIonPlanStorage,
    RTPlanStorage,
    RTStructureSetStorage,
    Verification,
)

from rtqa.io.received import ReceivedError, pseudonymise_instance, read_received_identity, status_dataset
from rtqa.node.allow import AllowList
from rtqa.node.checker import Checker, CheckSettings
from rtqa.node.pseudonym import pseudonym_of
from rtqa.node.spool import Spool, Staging
from rtqa.node.state import NodeState, state_path

if TYPE_CHECKING:
    from rtqa.ledger.db import Ledger

EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
STORAGE = (CTImageStorage, RTStructureSetStorage, RTPlanStorage, RTDoseStorage)
# the modality each storage class must carry (a CT storage request holding an RT Plan is refused)
_MODALITY = {
    str(CTImageStorage): "CT",
    str(RTStructureSetStorage): "RTSTRUCT",
    str(RTPlanStorage): "RTPLAN",
    str(RTDoseStorage): "RTDOSE",
}

# The acceptor's order decides among the syntaxes a sender proposes: Explicit VR Little Endian
# first, the syntax of nearly every exported file, so that an instance is stored as it was
# exported (an implicit-VR copy loses the VRs of private attributes) and a resend from another
# tool arrives in the same bytes
TRANSFER_SYNTAXES = [
    EXPLICIT_VR_LITTLE_ENDIAN,
    *(ts for ts in ALL_TRANSFER_SYNTAXES if ts != EXPLICIT_VR_LITTLE_ENDIAN),
]

# DIMSE statuses (PS3.4 B.2.3, PS3.7 C)
SUCCESS = 0x0000
REFUSED_SOP_CLASS = 0x0122  # Refused: SOP Class not supported
OUT_OF_RESOURCES = 0xA700
DOES_NOT_MATCH = 0xA900  # Error: Data Set does not match SOP Class
CANNOT_UNDERSTAND = 0xC000

# A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE title not recognised
_REJECT_PERMANENT, _SERVICE_USER, _CALLING_AE_NOT_RECOGNISED = 0x01, 0x01, 0x03


@dataclass(frozen=True)
class TlsFiles:
    cert: str  # the node's certificate (PEM)
    key: str  # its private key (PEM)
    ca: str | None = None  # when given, senders must show a certificate signed by it


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str
    port: int  # 0: the system picks a free port (:attr:`Node.port` says which)
    spool: str
    allow: AllowList
    check: CheckSettings
    bind: str = "0.0.0.0"
    ledger_url: str | None = None
    ledger_key: bytes | None = None  # the ledger's HMAC key, as rtqa check --ledger-key-file reads it
    pseudonym_key: bytes | None = None
    tls: TlsFiles | None = None
    network_timeout_s: float = 60.0  # a silent peer is cut off after this (its files are set aside)
    drain_s: float = 60.0  # on stop, how long associations under way may take to finish


@dataclass
class _Session:
    """One association, from its request to its end."""

    n: int
    calling_ae: str
    address: str
    institution: str | None
    started: float = field(default_factory=time.monotonic)
    staging: Staging | None = None
    stored: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count
    echoes: int = 0
    ended: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse(self, status: int, comment: str) -> Any:
        self.refused[comment] = self.refused.get(comment, 0) + 1
        return status_dataset(status, comment)

    @property
    def who(self) -> str:
        inst = f" ({self.institution})" if self.institution else ""
        return f"association {self.n} from {self.calling_ae!r} at {self.address}{inst}"

    def counts(self) -> str:
        refused = "; ".join(f"{n} refused: {why}" for why, n in self.refused.items())
        return (
            f"{self.stored} received"
            + (f", {refused}" if refused else "")
            + (f", {self.echoes} echo" if self.echoes else "")
        )


def tls_context(files: TlsFiles) -> ssl.SSLContext:
    """The server's TLS context (TLS 1.2 or later; client certificates required with a CA)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=files.ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(files.cert, files.key)
    ctx.verify_mode = ssl.CERT_REQUIRED if files.ca else ssl.CERT_NONE
    return ctx


class Node:
    """A running DICOM node: :meth:`start`, then :meth:`stop` (which finishes the work under way)."""

    def __init__(self, config: NodeConfig, *, log: logging.Logger | None = None) -> None:
        self.config = config
        self.log = log or logging.getLogger("rtqa.node")
        self.spool = Spool(config.spool)
        self.state = NodeState(state_path(self.spool.root))
        self.ledger: Ledger | None = None
        self._sessions: dict[int, _Session] = {}
        self._finalising: set[int] = set()
        self._finalisers: list[threading.Thread] = []
        self._count = itertools.count(1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: Any = None
        self._checker_thread: threading.Thread | None = None
        self.checker: Checker | None = None
        self.port = 0

    # ----- life cycle

    def start(self) -> int:
        """Open the ledger, start the checker and listen; returns the port listened on."""
        c = self.config
        if c.ledger_url:
            from rtqa.ledger.db import open_ledger

            self.ledger = open_ledger(c.ledger_url, create=True, key=c.ledger_key)
        self.checker = Checker(self.state, c.check, ledger=self.ledger, log=self.log)
        ae = AE(ae_title=c.ae_title)
        ae.require_called_aet = True
        ae.network_timeout = c.network_timeout_s
        ae.acse_timeout = min(30.0, c.network_timeout_s)
        ae.dimse_timeout = c.network_timeout_s
        ae.maximum_associations = 16
        # PDUs of up to 1 MiB (pynetdicom's default is 16 kB): a dose arrives in a few dozen, not hundreds
        ae.maximum_pdu_size = 1 << 20
        for sop_class in (*STORAGE, RTIonPlanStorage):
            ae.add_supported_context(sop_class, TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_C_ECHO, self._on_echo),
            (evt.EVT_C_STORE, self._on_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_ended),
            (evt.EVT_CONN_CLOSE, self._on_ended),
        ]
        ctx = tls_context(c.tls) if c.tls else None
        self._server = ae.start_server((c.bind, c.port), block=False, evt_handlers=handlers, ssl_context=ctx)
        self.port = int(self._server.server_address[1])
        self._checker_thread = threading.Thread(target=self.checker.run, args=(self._stop,), name="rtqa-checker")
        self._checker_thread.start()
        pending = self.state.pending()
        self.log.info(
            "listening on %s:%d as AE %r%s; spool %s%s",
            c.bind,
            self.port,
            c.ae_title,
            " (TLS)" if ctx else "",
            self.spool.root,
            f"; {sum(len(p.files) for p in pending)} file(s) of {len(pending)} patient(s) pending from before"
            if pending
            else "",
        )
        return self.port

    def stop(self) -> None:
        """Stop listening, let the associations under way finish (up to ``drain_s``; those
        still running then are aborted and their files set aside), finish the check under way,
        and close. Files received and not yet checked are checked after the next start."""
        if self._server is None:
            return
        self.log.info("stopping: no new associations; finishing the work under way")
        server, self._server = self._server, None
        server.shutdown()
        deadline = time.monotonic() + self.config.drain_s
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for assoc in server.active_associations:
            assoc.abort()
        for assoc in server.active_associations:
            assoc.join(timeout=5)
        with self._lock:
            finalisers = list(self._finalisers)
        for t in finalisers:
            t.join(timeout=10)
        self._stop.set()
        if self._checker_thread is not None:
            self._checker_thread.join()
        if self.ledger is not None:
            self.ledger.dispose()
        self.state.close()
        self.log.info("stopped")

    # ----- association events (run in pynetdicom's threads)

    def _session(self, event: Any) -> _Session | None:
        with self._lock:
            return self._sessions.get(id(event.assoc))

    def _on_requested(self, event: Any) -> None:
        peer = event.assoc.requestor
        ae_title = str(peer.primitive.calling_ae_title).strip()
        address = f"{peer.address}:{peer.port}"
        institution = self.config.allow.institution(ae_title, str(peer.address))
        session = _Session(next(self._count), ae_title, address, institution)
        with self._lock:
            self._sessions[id(event.assoc)] = session
        if institution is None:
            session.ended = True
            self.log.info("%s: rejected, calling AE title (from this address) not on the allow-list", session.who)
            event.assoc.acse.send_reject(_REJECT_PERMANENT, _SERVICE_USER, _CALLING_AE_NOT_RECOGNISED)
            # as pynetdicom does for its own rejections: wait until the reject has gone out
            event.assoc.kill()

    def _on_echo(self, event: Any) -> int:
        session = self._session(event)
        if session is not None:
            session.echoes += 1
        return SUCCESS

    def _on_store(self, event: Any) -> Any:
        session = self._session(event)
        if session is None or session.institution is None:
            return CANNOT_UNDERSTAND
        sop_class = str(event.request.AffectedSOPClassUID)
        if sop_class == str(RTIonPlanStorage):
            return session.refuse(REFUSED_SOP_CLASS, "RT Ion Plan refused: rtqa checks photon plans only")
        data = event.encoded_dataset()
        try:
            ident = read_received_identity(data)
        except ReceivedError as exc:
            return session.refuse(CANNOT_UNDERSTAND, f"unreadable: {exc}")
        if ident.sop_class_uid != sop_class or _MODALITY.get(sop_class) != ident.modality:
            return session.refuse(DOES_NOT_MATCH, "SOP Class or Modality does not match the request")
        if not ident.patient_id:
            return session.refuse(CANNOT_UNDERSTAND, "PatientID is empty: cannot be filed to a patient")
        if not ident.sop_instance_uid:
            return session.refuse(CANNOT_UNDERSTAND, "SOPInstanceUID is empty")
        key = self.config.pseudonym_key
        if key is not None:  # before anything is written
            pseudonym = pseudonym_of(key, ident.patient_id)
            try:
                data = pseudonymise_instance(data, pseudonym)
            except ReceivedError as exc:
                return session.refuse(CANNOT_UNDERSTAND, f"not pseudonymised: {exc}")
            self.state.record_pseudonym(pseudonym, ident.patient_id, ident.patient_name)
            ident = dataclasses.replace(ident, patient_id=pseudonym, patient_name=pseudonym)
        with session.lock:
            try:
                if session.staging is None:
                    session.staging = self.spool.staging(f"{session.n:06d}-{os.getpid()}", session.institution)
                session.staging.add(data, ident)
            except OSError as exc:
                return session.refuse(OUT_OF_RESOURCES, f"not stored: {exc.strerror}")
            session.stored += 1
        return SUCCESS

    def _on_released(self, event: Any) -> None:
        session = self._session(event)
        if session is None:
            return
        with session.lock:
            if session.ended:
                return
            session.ended = True
            seconds = time.monotonic() - session.started
            if session.staging is None:
                self.log.info("%s: released after %.1f s; %s", session.who, seconds, session.counts())
                return
            committed = session.staging.commit()
            assert session.institution is not None
            for patient_dir, files in committed.new.items():
                self.state.add_pending(
                    files, patient_dir=patient_dir, institution=session.institution, calling_ae=session.calling_ae
                )
            new = sum(len(f) for f in committed.new.values())
            self.log.info(
                "%s: released after %.1f s; %s (%d new, %d already held, %d conflicting)",
                session.who,
                seconds,
                session.counts(),
                new,
                committed.held,
                len(committed.conflicts),
            )
            for uid, where in committed.conflicts:
                self.log.warning(
                    "%s: SOP Instance UID %s is already held with other contents; this copy is kept apart, "
                    "not checked: %s",
                    session.who,
                    uid,
                    where,
                )

    def _on_ended(self, event: Any) -> None:
        """An abort or a closed connection: once the association's thread has finished (a
        release is handled there), an association that was not released has its files set
        aside, never checked. Waiting here would block pynetdicom's thread, so a small thread
        of ours waits."""
        session = self._session(event)
        if session is None:
            return
        with self._lock:
            if id(event.assoc) in self._finalising:
                return
            self._finalising.add(id(event.assoc))
        t = threading.Thread(target=self._finalise, args=(event.assoc, session), name=f"rtqa-assoc-{session.n}-end")
        with self._lock:
            self._finalisers = [f for f in self._finalisers if f.is_alive()]
            self._finalisers.append(t)
        t.start()

    def _finalise(self, assoc: Any, session: _Session) -> None:
        assoc.join(timeout=self.config.network_timeout_s + 30)
        with self._lock:
            self._sessions.pop(id(assoc), None)
            self._finalising.discard(id(assoc))
        with session.lock:
            if session.ended:
                return
            session.ended = True
            kept = session.staging.set_aside() if session.staging is not None else None
            if assoc.is_rejected:
                how = "rejected at negotiation (called AE title or presentation contexts)"
            else:
                how = "aborted" if assoc.is_aborted else "cut off"
            self.log.info(
                "%s: %s after %.1f s; %s; nothing from it is checked%s",
                session.who,
                how,
                time.monotonic() - session.started,
                session.counts(),
                f" (files kept apart in {kept})" if kept else "",
            )
