"""Run the check over many plan sets, on any ``concurrent.futures.Executor``.

Each plan is loaded, evaluated and reported in isolation: a plan that fails to read or
compute becomes a not-evaluable report carrying its error, and the others carry on. Workers
receive only file paths and return plain reports, so a process pool or a Dask cluster's
executor can run the same audit.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future
from dataclasses import dataclass

from rtqa.case import LoadedCase, PlanSet
from rtqa.discovery.load import file_sha256, load_case
from rtqa.errors import RtqaError
from rtqa.evaluation.evaluate import evaluate
from rtqa.evaluation.views import compute_plan_views
from rtqa.io.ct import read_ct_series
from rtqa.protocol.clinical import ClinicalFacts
from rtqa.protocol.loader import Protocol, load_protocol
from rtqa.report.model import InputFile, PlanReport


@dataclass(frozen=True)
class Job:
    plan_set: PlanSet
    protocol_path: str
    clinical: ClinicalFacts | None
    views: bool = False  # compute the image views of the HTML report (and hot-spot locations)
    locations: bool = False  # only the hot-spot locations of organ findings (JSON, CSV)


@functools.lru_cache(maxsize=4)
def _protocol(path: str) -> Protocol:
    return load_protocol(path)


def run_job(job: Job) -> PlanReport:
    """Load and evaluate one plan set; never raises for bad input (a bug still raises)."""
    if job.plan_set.problems:
        return error_report(job.plan_set, "; ".join(job.plan_set.problems), "DiscoveryProblem")
    try:
        case = load_case(job.plan_set, with_dose=bool(job.plan_set.plans))
        report = evaluate(case, _protocol(job.protocol_path), clinical=job.clinical)
    except RtqaError as exc:
        return error_report(job.plan_set, str(exc), type(exc).__name__, getattr(exc, "path", None))
    if job.views:
        return _with_views(report, case, _protocol(job.protocol_path), job.plan_set)
    if job.locations:
        try:
            return compute_plan_views(report, case, _protocol(job.protocol_path), images=False)
        except RtqaError as exc:  # the grades stand without locations
            return dataclasses.replace(report, warnings=(*report.warnings, f"hot-spot locations not found: {exc}"))
    return report


def _with_views(report: PlanReport, case: LoadedCase, protocol: Protocol, plan_set: PlanSet) -> PlanReport:
    """The report with its image views; a CT that cannot be read leaves the dose alone, said so."""
    ct = None
    if plan_set.ct_images:
        try:
            ct = read_ct_series([h.path for h in plan_set.ct_images])
        except RtqaError as exc:
            report = dataclasses.replace(report, warnings=(*report.warnings, f"CT not shown in the images: {exc}"))
    try:
        report = compute_plan_views(report, case, protocol, ct=ct)
    except RtqaError as exc:  # the grades stand without pictures
        return dataclasses.replace(report, warnings=(*report.warnings, f"images not made: {exc}"))
    # drawn here, so that --workers draws the pictures of several plans in parallel; matplotlib
    # is imported only on this path (HTML reports)
    from rtqa.report.images import with_picture

    return dataclasses.replace(report, views=tuple(with_picture(v) for v in report.views))


def error_report(plan_set: PlanSet, message: str, kind: str, path: str | None = None) -> PlanReport:
    """A report for a plan set that could not be evaluated at all; its inputs are the files
    discovery found (modality and UID from their headers, SHA-256 of each file as it is now)."""
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
        institution=(first.institution_name if first else "") or "",
        inputs=inputs,
        dose_source=None,
        prescription=None,
        findings=(),
        eligibility=(),
        structures={},
        warnings=(),
        errors=({"type": kind, "message": message, "file": path or (first.path if first else "")},),
    )


def _sha256_or_reason(path: str) -> str:
    try:
        return file_sha256(path)
    except OSError as exc:
        return f"(not readable: {exc.strerror or exc})"


def run_batch(
    plan_sets: Iterable[PlanSet],
    protocol: Protocol,
    *,
    clinical: dict[str, ClinicalFacts] | None = None,
    executor: Executor | None = None,
    progress: Callable[[int, int], None] | None = None,
    views: bool = False,
    locations: bool = False,
) -> list[PlanReport]:
    """Check every plan set; results come back in the order of ``plan_sets``. ``views`` adds the
    image views of the HTML report to each report, ``locations`` only the hot-spot locations."""
    jobs = [
        Job(ps, os.path.abspath(protocol.path), (clinical or {}).get(ps.patient_id), views=views, locations=locations)
        for ps in plan_sets
    ]
    total = len(jobs)
    results: list[PlanReport | None] = [None] * total
    if executor is None:
        for i, job in enumerate(jobs):
            results[i] = _guarded(job)
            if progress:
                progress(i + 1, total)
        return [r for r in results if r is not None]
    futures: list[Future[PlanReport]] = [executor.submit(_guarded, job) for job in jobs]
    done = 0
    for i, fut in enumerate(futures):
        results[i] = fut.result()
        done += 1
        if progress:
            progress(done, total)
    return [r for r in results if r is not None]


def _guarded(job: Job) -> PlanReport:
    """run_job, turning an unexpected exception into a not-evaluable report that says it is a bug."""
    try:
        return run_job(job)
    except Exception as exc:  # a bug must not stop the batch; it is reported as one
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return error_report(
            job.plan_set, f"internal error (a bug in rtqa, please report it): {detail}", "InternalError"
        )
