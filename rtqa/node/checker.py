"""Settle, check, report and record: what the node does with the files it has received.

A patient's folder is looked at once no association has brought it anything for ``settle_s``
seconds. Its files are discovered and grouped as ``rtqa check`` does, and every plan set that
holds a newly received file is checked with the same code (:func:`~rtqa.discovery.batch.run_batch`)
when it is complete (plan, structure set and dose linked). An incomplete set waits for its
missing files; once nothing has arrived for ``incomplete_after_s`` seconds it is checked as it
is and recorded as not evaluable, naming what is missing. Reports are written first, then the
plans are recorded in the ledger (idempotent: the same files again are not a new submission).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rtqa.case import PlanSet, UnassignedFile
from rtqa.discovery.batch import error_report, plan_work, run_batch
from rtqa.discovery.grouping import discover
from rtqa.errors import InputError
from rtqa.io.header import read_header
from rtqa.model import Modality
from rtqa.node.state import NodeState, PendingPatient
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.loader import Protocol
from rtqa.report.model import CheckResult, PlanReport
from rtqa.report.render import render_json, render_text

if TYPE_CHECKING:
    from rtqa.ledger.db import Ledger
    from rtqa.ledger.record import Recorded

INCOMPLETE = "IncompleteSubmission"
RETRY_AFTER_ERROR_S = 60.0


@dataclass(frozen=True)
class CheckSettings:
    protocol: Protocol
    settle_s: float
    incomplete_after_s: float
    clinical: dict[str, ClinicalFacts] | None = None
    output: str | None = None  # a folder for the reports (institution/patient/TIME.json and .txt)


def record(ledger: Ledger, result: CheckResult) -> list[Recorded]:
    """The node's one call into the ledger, through its public recording function."""
    from rtqa.ledger.record import record_result

    return record_result(ledger, result)


def missing_parts(ps: PlanSet) -> list[str]:
    """What a plan set lacks to be checked: the RT Plan, the RT Structure Set, the RT Dose."""
    out = []
    if not ps.plans:
        out.append("RT Plan")
    if ps.structure_set is None:
        out.append("RT Structure Set")
    if not ps.doses:
        out.append("RT Dose")
    return out


class Checker:
    """Checks settled patients, one at a time, in the thread that calls :meth:`run`."""

    def __init__(
        self, state: NodeState, settings: CheckSettings, *, ledger: Ledger | None, log: logging.Logger
    ) -> None:
        self.state = state
        self.settings = settings
        self.ledger = ledger
        self.log = log
        self._next_look: dict[str, tuple[float, float]] = {}  # patient dir -> (last arrival, not before)
        self.checks = 0  # plans checked and recorded since the start

    def run(self, stop: threading.Event) -> None:
        """Check settled patients until ``stop`` is set; a check under way is finished first."""
        interval = min(1.0, max(0.05, self.settings.settle_s / 4))
        while not stop.is_set():
            self.tick(time.time(), stop=stop)
            stop.wait(interval)

    def tick(self, now: float, *, stop: threading.Event | None = None) -> None:
        """Check every patient whose files have settled (and are not waiting for more)."""
        for p in self.state.pending():
            if stop is not None and stop.is_set():
                return
            if now - p.last_arrival < self.settings.settle_s:
                continue
            look = self._next_look.get(p.patient_dir)
            if look is not None and look[0] == p.last_arrival and now < look[1]:
                continue
            self._next_look.pop(p.patient_dir, None)
            try:
                self.check_patient(p, now)
            except Exception as exc:  # a bug or an unreachable ledger must not stop the node
                self.log.exception(
                    "check %s: failed (%s: %s); its files stay pending and are tried again in %.0f s",
                    self._name(p),
                    type(exc).__name__,
                    exc,
                    RETRY_AFTER_ERROR_S,
                )
                self._next_look[p.patient_dir] = (p.last_arrival, now + RETRY_AFTER_ERROR_S)

    @staticmethod
    def _name(p: PendingPatient) -> str:
        """``institution/patient``, as the spool names them."""
        return os.path.relpath(p.patient_dir, os.path.dirname(os.path.dirname(p.patient_dir)))

    def check_patient(self, p: PendingPatient, now: float) -> None:
        s = self.settings
        timed_out = now - p.last_arrival >= s.incomplete_after_s
        found = discover([p.patient_dir])
        work = plan_work(found.plan_sets)
        ready: list[tuple[PlanSet, list[str]]] = []
        handled: set[str] = set()
        waiting = False
        for ps in work.graded:
            files = {*ps.files, *(h.path for h in ps.ct_images)}
            if not files & p.files:
                continue  # checked before, nothing new for it
            missing = missing_parts(ps)
            if missing and not timed_out:
                waiting = True
                continue
            ready.append((ps, missing))
            handled |= files
        extra: list[PlanReport] = [r for r in work.verification_only if {i.path for i in r.inputs} & p.files]
        handled |= {i.path for r in extra for i in r.inputs} | {path for path, _ in work.skipped}
        lone = [u for u in found.unassigned if u.path in p.files and u.path not in handled]
        if lone and not timed_out:
            waiting = True
        elif lone:
            extra.extend(r for u in lone if (r := self._lone_report(u)) is not None)
            handled |= {u.path for u in lone}
        reports = run_batch([ps for ps, _ in ready], s.protocol, clinical=s.clinical, notes=work.notes)
        reports = [
            self._as_received(r, missing, p, timed_out) for r, (_, missing) in zip(reports, ready, strict=True)
        ] + [dataclasses.replace(r, institution=p.institution) for r in extra]
        left = p.files - handled
        if reports:
            result = CheckResult(
                s.protocol,
                tuple(sorted(reports, key=lambda r: (r.patient_id, r.plan_label))),
                tuple(u for u in found.unassigned if u.path in handled),
                work.skipped,
                checked_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                skipped_files=found.skipped,
            )
            written = self._write_reports(result, p)
            recorded = record(self.ledger, result) if self.ledger is not None else None
            self._log_checks(result, p, written, recorded)
        if timed_out and left:
            self.log.info(
                "check %s: %d file(s) with no plan to check after %.0f s, kept in the spool: %s",
                self._name(p),
                len(left),
                s.incomplete_after_s,
                ", ".join(sorted(os.path.relpath(f, p.patient_dir) for f in left)[:5]),
            )
            handled |= left
        elif waiting or left:
            self._next_look[p.patient_dir] = (p.last_arrival, p.last_arrival + s.incomplete_after_s)
            self.log.info(
                "check %s: waiting for the rest of the plan (%d file(s) pending; not evaluable if nothing more "
                "arrives within %.0f s)",
                self._name(p),
                len(left),
                s.incomplete_after_s,
            )
        self.state.done(handled & p.files)

    def _as_received(self, r: PlanReport, missing: list[str], p: PendingPatient, timed_out: bool) -> PlanReport:
        """The report as the node records it: the institution of the allow-list, and an
        incomplete set said to be so."""
        warnings = r.warnings
        if r.institution and r.institution != p.institution:
            warnings = (
                *warnings,
                f"InstitutionName in the files is {r.institution!r}; the node received them from calling AE "
                f"{p.calling_ae!r}, registered to {p.institution!r}",
            )
        errors = r.errors
        if missing and timed_out:
            errors = (
                *errors,
                {
                    "type": INCOMPLETE,
                    "message": f"missing {', '.join(missing)}: nothing more arrived within "
                    f"{self.settings.incomplete_after_s:.0f} s of the last file",
                    "file": "",
                },
            )
        return dataclasses.replace(r, institution=p.institution, warnings=warnings, errors=errors)

    def _lone_report(self, u: UnassignedFile) -> PlanReport | None:
        """A not-evaluable report for an RT file that found no plan set by the deadline."""
        if "identical copy" in u.reason:
            return None
        try:
            h = read_header(u.path)
        except InputError as exc:
            ps = PlanSet(patient_id="", plans=(), structure_set=None, doses=())
            return error_report(ps, f"{os.path.basename(u.path)}: {exc}", INCOMPLETE, u.path)
        ps = PlanSet(
            patient_id=h.patient_id,
            plans=(h,) if h.modality == Modality.RTPLAN else (),
            structure_set=h if h.modality == Modality.RTSTRUCT else None,
            doses=(h,) if h.modality == Modality.RTDOSE else (),
        )
        message = (
            f"{os.path.basename(u.path)}: {u.reason}; nothing more arrived within "
            f"{self.settings.incomplete_after_s:.0f} s of the last file"
        )
        return error_report(ps, message, INCOMPLETE, u.path)

    def _write_reports(self, result: CheckResult, p: PendingPatient) -> list[str]:
        out = self.settings.output
        if out is None:
            return []
        folder = os.path.join(out, *self._name(p).split(os.sep))
        os.makedirs(folder, exist_ok=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        written = []
        for suffix, text in ((".json", render_json(result)), (".txt", render_text(result))):
            written.append(_write_new(os.path.join(folder, stamp), suffix, text))
        return written

    def _log_checks(
        self, result: CheckResult, p: PendingPatient, written: Iterable[str], recorded: list[Recorded] | None
    ) -> None:
        where = f"; report {next(iter(written))}" if written else ""
        for i, r in enumerate(result.reports):
            if recorded is None:
                ledger = ""
            elif recorded[i].new:
                ledger = f"; ledger submission {recorded[i].submission_id} (version {recorded[i].version})"
            else:
                ledger = f"; same as ledger submission {recorded[i].submission_id}, not recorded again"
            problems = "; ".join(e["message"] for e in r.errors)
            self.log.info(
                "check %s: plan %r %s%s%s%s",
                self._name(p),
                r.plan_label,
                r.verdict,
                f" ({problems[:200]})" if problems else "",
                ledger,
                where,
            )
            self.checks += 1


def _write_new(stem: str, suffix: str, text: str) -> str:
    """Write ``stem + suffix``, or ``stem-2 + suffix``... never over an existing file."""
    n = 1
    while True:
        path = f"{stem}{'' if n == 1 else f'-{n}'}{suffix}"
        try:
            with open(path, "x", encoding="utf-8", newline="") as fh:
                fh.write(text)
            return path
        except FileExistsError:
            n += 1
