"""Run the check over many plan sets, on any ``concurrent.futures.Executor``.

Each plan is loaded, evaluated and reported in isolation: a plan that fails to read or
compute becomes a not-evaluable report carrying its error, and the others carry on. Workers
receive only file paths and return plain reports, so a process pool or a Dask cluster's
executor can run the same audit.

A worker process handles many plans (the executor keeps it alive) and parses the protocol
once (:func:`~rtqa.protocol.loader.load_protocol` caches it per process). Reports stream
back in the order they finish (:func:`iter_batch`) with a bounded number of plans in
flight, so memory does not grow with the number of plans: a finished plan leaves only its
report behind.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, replace
from typing import Any

from rtqa.case import LoadedCase, PlanSet
from rtqa.deadline import TimeBudgetExceeded, configured_seconds, time_budget
from rtqa.discovery.grouping import file_sha256
from rtqa.discovery.load import load_case
from rtqa.dvh.budget import BUDGET_ENV, configured_budget_bytes, format_size
from rtqa.errors import CourseDoseError, RtqaError
from rtqa.evaluation.evaluate import evaluate
from rtqa.evaluation.views import compute_plan_views
from rtqa.io.ct import read_ct_series
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import Protocol, load_protocol
from rtqa.protocol.names import NameMap
from rtqa.report.model import Finding, InputFile, PlanReport


@dataclass(frozen=True)
class Job:
    plan_set: PlanSet
    protocol_path: str
    clinical: ClinicalFacts | None
    notes: tuple[str, ...] = ()  # warnings the coordinator adds (e.g. no row in the clinical CSV)
    views: bool = False  # compute the image views of the HTML report (and hot-spot locations)
    locations: bool = False  # only the hot-spot locations of organ findings (JSON, CSV)
    names: NameMap | None = None  # the QA office's name map (rtqa check --names)


IN_FLIGHT_PER_BATCH = 32  # plans submitted ahead of the finished ones


def run_job(job: Job) -> PlanReport:
    """Load and evaluate one plan set; never raises for bad input (a bug still raises)."""
    report = _run_job(job)
    if job.notes:
        report = replace(report, warnings=(*job.notes, *report.warnings))
    return report


def _run_job(job: Job) -> PlanReport:
    if job.plan_set.problems:
        return error_report(job.plan_set, "; ".join(job.plan_set.problems), "DiscoveryProblem", clinical=job.clinical)
    try:
        case = load_case(job.plan_set, with_dose=bool(job.plan_set.plans))
        protocol = load_protocol(job.protocol_path)  # parsed once per process
        report = evaluate(case, protocol, clinical=job.clinical, names=job.names)
    except CourseDoseError as exc:
        return course_query_report(job.plan_set, exc)
    except RtqaError as exc:
        return error_report(
            job.plan_set, str(exc), type(exc).__name__, getattr(exc, "path", None), clinical=job.clinical
        )
    if job.views:
        return _with_views(report, case, protocol, job.plan_set, job.names)
    if job.locations:
        try:
            return compute_plan_views(report, case, protocol, images=False, names=job.names)
        except RtqaError as exc:  # the grades stand without locations
            return dataclasses.replace(report, warnings=(*report.warnings, f"hot-spot locations not found: {exc}"))
    return report


def _with_views(
    report: PlanReport, case: LoadedCase, protocol: Protocol, plan_set: PlanSet, names: NameMap | None = None
) -> PlanReport:
    """The report with its image views; a CT that cannot be read leaves the dose alone, said so."""
    ct = None
    if plan_set.ct_images:
        try:
            ct = read_ct_series([h.path for h in plan_set.ct_images])
        except RtqaError as exc:
            report = dataclasses.replace(report, warnings=(*report.warnings, f"CT not shown in the images: {exc}"))
    try:
        report = compute_plan_views(report, case, protocol, ct=ct, names=names)
    except RtqaError as exc:  # the grades stand without pictures
        return dataclasses.replace(report, warnings=(*report.warnings, f"images not made: {exc}"))
    # drawn here, so that --workers draws the pictures of several plans in parallel; matplotlib
    # is imported only on this path (HTML reports)
    from rtqa.report.images import with_picture

    return dataclasses.replace(report, views=tuple(with_picture(v) for v in report.views))


def error_report(
    plan_set: PlanSet, message: str, kind: str, path: str | None = None, *, clinical: ClinicalFacts | None = None
) -> PlanReport:
    """A report for a plan set that could not be evaluated at all; its inputs are the files
    discovery found (modality and UID from their headers, SHA-256 of each file as it is now).
    The institution is the clinical CSV's when it gives one (as for a plan that could be read),
    else the plan header's InstitutionName."""
    first = plan_set.plans[0] if plan_set.plans else None
    headers = [*plan_set.plans, *([plan_set.structure_set] if plan_set.structure_set else []), *plan_set.doses]
    inputs = tuple(
        InputFile(h.path, str(getattr(h.modality, "value", h.modality)), h.sop_instance_uid, _sha256_or_reason(h.path))
        for h in headers
    )
    return PlanReport(
        patient_id=plan_set.patient_id,
        patient_name="",
        plan_uid=first.sop_instance_uid if first else None,
        plan_uids=tuple(p.sop_instance_uid for p in plan_set.plans),
        plan_label=plan_set.label,
        plan_date=None,
        approval_status=None,
        institution=(clinical.institution if clinical and clinical.institution else None)
        or (first.institution_name if first else "")
        or "",
        inputs=inputs,
        dose_source=None,
        prescription=None,
        findings=(),
        eligibility=(),
        structures={},
        warnings=(),
        errors=({"type": kind, "message": message, "file": path or (first.path if first else "")},),
        course=_course_stub(plan_set),
    )


def _course_stub(plan_set: PlanSet) -> dict[str, Any] | None:
    """The course of a plan set that could not be read: its plans as discovery found them."""
    c = plan_set.course
    if c is None or not plan_set.plans:
        return None
    plans: list[dict[str, Any]] = [
        {"plan_uid": h.sop_instance_uid, "plan_label": h.plan_label or "", "total_gy": None, "fractions": None,
         "fraction_groups": [], "dose_source": None, "own_dose": False}
        for h in plan_set.plans
    ]  # fmt: skip
    return {
        "institution": c.institution,
        "patient_id": c.patient_id,
        "frame_of_reference_uid": c.frame_of_reference_uid,
        "plans": plans,
        "links": list(c.links),
        "composite": None,
    }


def course_query_report(plan_set: PlanSet, exc: CourseDoseError) -> PlanReport:
    """A course whose composite dose cannot be formed (a plan without its dose): not evaluable,
    a question to the centre naming the plans, never the verdict of the plans that have a dose
    (a boost graded alone, or a primary without its boost, would hide the course's organ doses)."""
    finding = Finding(
        "COURSE_DOSE",
        None,
        None,
        None,
        "composite dose",
        None,
        "",
        Grade.NOT_EVALUABLE,
        f"not evaluable: {exc}; send the dose of {', '.join(exc.plans)} (or a MULTI_PLAN dose of the whole "
        "course): the course's organ doses are graded on the composite",
        category="query",
        value_text="plans without dose: " + ", ".join(exc.plans),
    )
    return replace(error_report(plan_set, "", ""), errors=(), findings=(finding,))


def iter_batch(
    plan_sets: Iterable[PlanSet],
    protocol: Protocol,
    *,
    clinical: dict[str, ClinicalFacts] | None = None,
    executor: Executor | None = None,
    in_flight: int = IN_FLIGHT_PER_BATCH,
    notes: Mapping[str, tuple[str, ...]] | None = None,
    views: bool = False,
    locations: bool = False,
    names: NameMap | None = None,
) -> Iterator[tuple[int, PlanReport]]:
    """Check every plan set, yielding ``(position, report)`` as each one finishes.

    Without an executor the plans run here, one after the other. With one, at most
    ``in_flight`` plans are submitted ahead, so neither pending jobs nor finished results
    pile up in memory on large audits.
    """
    path = os.path.abspath(protocol.path)
    jobs = (
        (i, replace(_job(ps, path, clinical, notes, views, locations), names=names)) for i, ps in enumerate(plan_sets)
    )
    if executor is None:
        for i, job in jobs:
            yield i, _guarded(job)
        return
    pending: dict[Future[PlanReport], int] = {}
    for i, job in jobs:
        pending[executor.submit(_guarded, job)] = i
        if len(pending) >= max(1, in_flight):
            yield from _collect(pending)
    while pending:
        yield from _collect(pending)


def _job(
    ps: PlanSet,
    path: str,
    clinical: dict[str, ClinicalFacts] | None,
    notes: Mapping[str, tuple[str, ...]] | None,
    views: bool,
    locations: bool,
) -> Job:
    missing = (
        (f"no row for patient {ps.patient_id!r} in the clinical CSV: every clinical fact of this patient is unknown",)
        if clinical is not None and ps.patient_id not in clinical
        else ()
    )
    return Job(
        ps, path, (clinical or {}).get(ps.patient_id), missing + (notes or {}).get(ps.patient_id, ()), views, locations
    )


def _collect(pending: dict[Future[PlanReport], int]) -> Iterator[tuple[int, PlanReport]]:
    """Wait for at least one pending plan and hand over every finished one."""
    done, _ = wait(pending, return_when=FIRST_COMPLETED)
    for fut in done:
        yield pending.pop(fut), fut.result()


def _sha256_or_reason(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        return f"(not readable: {exc.strerror or exc})"
    except MemoryError:  # the report of a plan that ran out of memory must still be written
        return "(not computed: out of memory)"


def run_batch(
    plan_sets: Iterable[PlanSet],
    protocol: Protocol,
    *,
    clinical: dict[str, ClinicalFacts] | None = None,
    executor: Executor | None = None,
    progress: Callable[[int, int], None] | None = None,
    views: bool = False,
    locations: bool = False,
    notes: Mapping[str, tuple[str, ...]] | None = None,
    names: NameMap | None = None,
) -> list[PlanReport]:
    """Check every plan set; results come back in the order of ``plan_sets``.

    ``views`` adds the image views of the HTML report to each report, ``locations`` only the
    hot-spot locations; ``notes`` are warnings per patient ID that the coordinator knows and a
    worker cannot (a verification plan of the same patient left ungraded, say).
    """
    plan_sets = list(plan_sets)
    total = len(plan_sets)
    results: list[PlanReport | None] = [None] * total
    batch = iter_batch(
        plan_sets,
        protocol,
        clinical=clinical,
        executor=executor,
        notes=notes,
        views=views,
        locations=locations,
        names=names,
    )
    for done, (i, report) in enumerate(batch, start=1):
        results[i] = report
        if progress:
            progress(done, total)
    return [r for r in results if r is not None]


def _guarded(job: Job) -> PlanReport:
    """run_job under the plan's time budget (:mod:`rtqa.deadline`), turning a plan over budget,
    out of memory, or hitting an unexpected exception into a not-evaluable report that says which
    (a bug is said to be one). The batch goes on with the next plan."""
    failure: tuple[str, str]
    try:
        with time_budget(configured_seconds()):
            report = run_job(job)
        # a plan's case context sits in reference cycles, which the collector would reach only
        # after several plans (numpy arrays do not count towards its thresholds): a batch of 8
        # demo plans in one process peaked at 340 MiB, 144 MiB with this collection
        gc.collect()
        return report
    except TimeBudgetExceeded as exc:
        failure = (str(exc), "TimeBudgetExceeded")
    except MemoryError:
        # nothing is formatted here: the frames of the failed plan, and the memory they hold,
        # are released when this clause ends; the report is built after it
        failure = ("", "MemoryError")
    except Exception as exc:  # a bug must not stop the batch; it is reported as one
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        failure = (f"internal error (a bug in rtqa, please report it): {detail}", "InternalError")
    message, kind = failure
    # frames caught in a reference cycle outlive the clause until the collector runs, and the
    # arrays they hold would starve the next plan: collect them now
    gc.collect()
    if kind == "MemoryError":
        message = (
            f"not evaluated: this plan ran out of memory (memory budget {format_size(configured_budget_bytes())} "
            f"per plan; with --workers N, N plans share the machine: give fewer workers or more memory, "
            f"or raise --max-memory or {BUDGET_ENV} if the machine has it)"
        )
    return error_report(job.plan_set, message, kind, clinical=job.clinical)


@dataclass(frozen=True)
class Work:
    """What a check grades, what it leaves ungraded on purpose, and what it must say about that."""

    graded: tuple[PlanSet, ...]
    skipped: tuple[tuple[str, str], ...]  # (file, reason): verification plans
    notes: dict[str, tuple[str, ...]]  # patient ID -> warnings for that patient's graded plans
    verification_only: tuple[PlanReport, ...]  # patients whose only plan is a verification plan


def plan_work(plan_sets: Sequence[PlanSet]) -> Work:
    """Set verification plans aside (PlanIntent VERIFICATION is never graded) without letting
    that hide anything: a patient whose only plan is a verification plan gets a not-evaluable
    report saying so, and a patient's graded plans name the verification plans left aside."""

    def is_verification(ps: PlanSet) -> bool:
        return any((h.plan_intent or "").upper() == "VERIFICATION" for h in ps.plans)

    graded = tuple(p for p in plan_sets if not is_verification(p))
    verification = [p for p in plan_sets if is_verification(p)]
    skipped = tuple(
        (h.path, "VERIFICATION plan: not graded against the protocol") for p in verification for h in p.plans
    )
    with_plans = {p.patient_id for p in graded if p.plans}
    notes: dict[str, tuple[str, ...]] = {}
    only: list[PlanReport] = []
    for ps in verification:
        files = ", ".join(h.path for h in ps.plans)
        if ps.patient_id in with_plans:
            notes[ps.patient_id] = (
                *notes.get(ps.patient_id, ()),
                f"this patient also has a VERIFICATION plan ({files}), not graded: check that the plan graded "
                "here is the treatment plan",
            )
            continue
        finding = Finding(
            "PLAN_INTENT",
            None,
            None,
            None,
            "PlanIntent",
            None,
            "",
            Grade.NOT_EVALUABLE,
            f"not evaluable: the only plan of patient {ps.patient_id!r} in the input is a VERIFICATION plan "
            f"({files}); verification plans are not graded: submit the treatment plan",
            category="resubmit",
            value_text="VERIFICATION",
        )
        report = error_report(ps, "", "")
        only.append(replace(report, errors=(), findings=(finding,)))
    return Work(graded, skipped, notes, tuple(only))
