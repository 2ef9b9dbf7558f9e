"""``rtqa check``: grade every plan found against the protocol and report deviations."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import click

from rtqa.cli.app import (
    EXIT_FAIL,
    EXIT_NOT_EVALUABLE,
    EXIT_OK,
    FAIL_ON,
    _load_protocol,
    _run,
    _write,
    cli,
)
from rtqa.discovery.batch import run_batch
from rtqa.discovery.grouping import discover
from rtqa.errors import RtqaError
from rtqa.protocol.clinical import read_clinical_csv
from rtqa.protocol.limits import Grade
from rtqa.report.html import page_name, render_index_html, render_plan_html
from rtqa.report.model import CheckResult
from rtqa.report.render import COLOUR, findings_csv, plans_csv
from rtqa.report.render import render_json as check_json
from rtqa.report.render import render_text as check_text


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--protocol",
    "protocol_name",
    metavar="FILE|NAME",
    help="Protocol file or shipped name (default: the NCT03535259 protocol).",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv", "html"]), default="text", show_default=True)
@click.option(
    "--output",
    type=click.Path(),
    help="A file (text, json, html of one plan), or a folder for csv "
    "(plans.csv, findings.csv) and html (index.html and a page per plan).",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Plans checked in parallel.")
@click.option("--scheduler", metavar="ADDRESS", help="Run on a Dask distributed cluster (pip install rtqa[dask]).")
@click.option(
    "--fail-on",
    type=click.Choice(list(FAIL_ON)),
    default="deviation",
    show_default=True,
    help="Lowest plan grade that sets exit-code bit 1.",
)
@click.option(
    "--clinical",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE.csv",
    help="Clinical facts per patient ID (child_pugh, dose_algorithm, rx_<target>).",
)
@click.option("--include-names", is_flag=True, help="Include patient names (identifying) in the report.")
@click.option(
    "--ledger", "ledger_url", envvar="RTQA_LEDGER", metavar="URL", help="Record the plans in this audit ledger."
)
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def check(
    paths: tuple[str, ...],
    protocol_name: str | None,
    fmt: str,
    output: str | None,
    workers: int,
    scheduler: str | None,
    fail_on: str,
    clinical: str | None,
    include_names: bool,
    ledger_url: str | None,
    debug: bool,
) -> None:
    """Check every plan found under PATHS against the protocol and report deviations."""
    _run(
        lambda: _check(
            paths, protocol_name, fmt, output, workers, scheduler, fail_on, clinical, include_names, ledger_url
        ),
        debug,
    )


def _check(
    paths: tuple[str, ...],
    protocol_name: str | None,
    fmt: str,
    output: str | None,
    workers: int,
    scheduler: str | None,
    fail_on: str,
    clinical_path: str | None,
    include_names: bool,
    ledger_url: str | None = None,
) -> int:
    protocol = _load_protocol(protocol_name)
    try:
        clinical = read_clinical_csv(clinical_path) if clinical_path else None
    except RtqaError as exc:
        raise click.UsageError(str(exc)) from None
    found = discover(paths)
    graded = [p for p in found.plan_sets if not any((h.plan_intent or "").upper() == "VERIFICATION" for h in p.plans)]
    skipped = tuple(
        (h.path, "VERIFICATION plan: not graded against the protocol")
        for p in found.plan_sets
        for h in p.plans
        if (h.plan_intent or "").upper() == "VERIFICATION"
    )
    progress = _progress_bar(len(graded))
    if scheduler:
        executor_cm: Any = _dask_executor(scheduler)
    elif workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        executor_cm = ProcessPoolExecutor(max_workers=workers)
    else:
        executor_cm = None
    if executor_cm is None:
        reports = run_batch(graded, protocol, clinical=clinical, progress=progress)
    else:
        with executor_cm as executor:
            reports = run_batch(graded, protocol, clinical=clinical, executor=executor, progress=progress)
    result = CheckResult(protocol, tuple(reports), found.unassigned, skipped)
    if ledger_url:  # written here, by the coordinating process, never by the workers
        from rtqa.cli.ledger import record_check

        record_check(ledger_url, result)
    if fmt == "html":
        _write_html(result, output, include_names)
    elif fmt == "csv" and output:
        os.makedirs(output, exist_ok=True)
        _write(os.path.join(output, "plans.csv"), plans_csv(result))
        _write(os.path.join(output, "findings.csv"), findings_csv(result))
    else:
        text = {
            "text": lambda: check_text(
                result, paint=_paint if output is None and sys.stdout.isatty() else None, include_names=include_names
            ),
            "json": lambda: check_json(result, include_names=include_names),
            "csv": lambda: findings_csv(result),
        }[fmt]()
        if output:
            _write(output, text)
        else:
            click.echo(text, nl=False)
    if not reports and not skipped:
        click.echo("rtqa: no plan found under " + ", ".join(paths), err=True)
    for u in found.unassigned:
        click.echo(f"rtqa: unassigned file {u.path}: {u.reason}", err=True)
    threshold = FAIL_ON[fail_on]
    code = EXIT_OK
    if threshold is not None and any(
        r.grade is not Grade.NOT_EVALUABLE and r.grade.severity >= threshold.severity for r in reports
    ):
        code |= EXIT_FAIL
    if found.unassigned or not reports or any(not r.complete for r in reports):
        code |= EXIT_NOT_EVALUABLE
    return code


def _write_html(result: CheckResult, output: str | None, include_names: bool) -> None:
    pages = [render_plan_html(result, r, include_names=include_names) for r in result.reports]
    single = len(pages) == 1 and (output is None or not os.path.isdir(output)) and not (output or "").endswith("/")
    if single:
        if output:
            _write(output, pages[0])
        else:
            click.echo(pages[0], nl=False)
        return
    if output is None:
        raise click.UsageError("--format html for several plans needs --output FOLDER (an index and a page per plan)")
    os.makedirs(output, exist_ok=True)
    names = [page_name(r, i) for i, r in enumerate(result.reports, start=1)]
    for name, page in zip(names, pages, strict=True):
        _write(os.path.join(output, name), page)
    _write(os.path.join(output, "index.html"), render_index_html(result, names))


def _paint(text: str, g: Grade) -> str:
    return click.style(text, fg=COLOUR[g], bold=g is not Grade.PER_PROTOCOL)


def _progress_bar(total: int) -> Callable[[int, int], None] | None:
    if total < 2 or not sys.stderr.isatty():
        return None

    def show(done: int, n: int) -> None:
        width = 30
        filled = int(width * done / n)
        sys.stderr.write(f"\rchecking plans [{'#' * filled}{'.' * (width - filled)}] {done}/{n}")
        if done == n:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def _dask_executor(address: str) -> Any:
    try:
        from distributed import Client
    except ImportError:
        raise click.UsageError("--scheduler needs Dask distributed: pip install 'rtqa[dask]'") from None

    class _DaskExecutor:
        def __enter__(self) -> Any:
            self.client = Client(address)  # type: ignore[no-untyped-call]
            return self.client.get_executor()  # type: ignore[no-untyped-call]

        def __exit__(self, *exc: object) -> None:
            self.client.close()  # type: ignore[no-untyped-call]

    return _DaskExecutor()
