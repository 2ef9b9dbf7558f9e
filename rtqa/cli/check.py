"""``rtqa check``: grade every plan found against the protocol and report deviations."""

from __future__ import annotations

import datetime
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from rtqa.cli.app import (
    EXIT_CONVENTION,
    EXIT_FAIL,
    EXIT_INELIGIBLE,
    EXIT_INTERNAL,
    EXIT_NOT_EVALUABLE,
    EXIT_OK,
    FAIL_ON,
    _load_protocol,
    _run,
    cli,
    max_memory_option,
    max_seconds_option,
)
from rtqa.errors import RtqaError
from rtqa.protocol.limits import Grade

# The library (numpy, pydicom, the DVH engine, the renderers) is imported inside the command,
# not here: ``rtqa --help`` imports this module to list the command and must stay fast (issue 10).


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
    help="A file (text, json, html of one plan), or a folder for csv (plans.csv, findings.csv, UTF-8 with a "
    "byte-order mark for Excel) and html (index.html and a page per plan). Its folder must exist; existing "
    "files need --force.",
)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Plans checked in parallel.")
@click.option("--scheduler", metavar="ADDRESS", help="Run on a Dask distributed cluster (pip install rtqa[dask]).")
@click.option(
    "--fail-on",
    type=click.Choice(list(FAIL_ON)),
    default="deviation",
    show_default=True,
    help="Lowest plan grade that sets exit-code bit 1 (bits 4, 8 and 16 are set whatever it is).",
)
@click.option(
    "--clinical",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE.csv",
    help="Clinical facts per patient ID (child_pugh, dose_algorithm, rx_<target>).",
)
@click.option(
    "--names",
    "names_path",
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE.yaml",
    help="The QA office's name map: per institution, site ROI name -> protocol structure (null: none of them).",
)
@max_memory_option
@max_seconds_option
@click.option("--include-names", is_flag=True, help="Include patient names (identifying) in the report.")
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite existing report files, and allow --output inside an input folder (input files are never "
    "overwritten).",
)
@click.option(
    "--ledger",
    "ledger_url",
    envvar="RTQA_LEDGER",
    metavar="URL",
    help="Record the plans in this audit ledger, once the reports are written (one transaction per run).",
)
@click.option(
    "--ledger-key-file",
    "ledger_key_file",
    envvar="RTQA_LEDGER_KEY_FILE",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="The ledger key (HMAC of every recorded row) read from FILE; or the key itself in $RTQA_LEDGER_KEY.",
)
@click.option(
    "--resubmission",
    is_flag=True,
    help="With --ledger: record every plan as a new version of its case (replacing the current one), "
    "whatever its plans.",
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
    names_path: str | None,
    include_names: bool,
    force: bool,
    ledger_url: str | None,
    ledger_key_file: str | None,
    resubmission: bool,
    debug: bool,
) -> None:
    """Check every plan found under PATHS against the protocol and report deviations.

    \b
    Exit codes (bits that combine):
      0   every plan complete, none at or above --fail-on
      1   some plan graded at or above --fail-on
      4   something not evaluable (a plan incomplete or unreadable, a file unassigned, no plan)
      8   a checked patient is ineligible, or their eligibility is unknown
      16  a grade depends on the DVH end-cap convention: a reviewer must look
    2 is a usage error and 70 an internal error (a bug): never combined.
    """
    _run(
        lambda: _check(
            paths,
            protocol_name,
            fmt,
            output,
            workers,
            scheduler,
            fail_on,
            clinical,
            include_names,
            force=force,
            ledger_url=ledger_url,
            ledger_key_file=ledger_key_file,
            debug=debug,
            names_path=names_path,
            resubmission=resubmission,
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
    *,
    force: bool = False,
    ledger_url: str | None = None,
    ledger_key_file: str | None = None,
    debug: bool = False,
    names_path: str | None = None,
    resubmission: bool = False,
) -> int:
    from rtqa.discovery.batch import plan_work, run_batch
    from rtqa.discovery.grouping import discover
    from rtqa.protocol.clinical import read_clinical_table
    from rtqa.protocol.names import read_name_map
    from rtqa.report.html import page_name, render_index_html, render_plan_html
    from rtqa.report.model import CheckResult
    from rtqa.report.render import findings_csv, plans_csv
    from rtqa.report.render import render_json as check_json
    from rtqa.report.render import render_text as check_text

    if resubmission and not ledger_url:
        raise click.UsageError("--resubmission says how to record the plans in a ledger: give --ledger URL")
    protocol = _load_protocol(protocol_name)
    if ledger_url:
        from rtqa.cli.ledger import check_ledger_options

        check_ledger_options(ledger_url, ledger_key_file)
    try:
        table = read_clinical_table(clinical_path) if clinical_path else None
    except RtqaError as exc:
        raise click.UsageError(str(exc)) from None
    clinical = table.facts if table else None
    try:
        name_map = read_name_map(names_path, [*protocol.structures, *protocol.derived]) if names_path else None
    except RtqaError as exc:
        raise click.UsageError(str(exc)) from None
    found = discover(paths)
    work = plan_work(found.plan_sets)
    graded, skipped = list(work.graded), work.skipped
    target = _output_target(fmt, output, len(graded) + len(work.verification_only), force=force, inputs=paths)
    progress = _progress_bar(len(graded))
    if scheduler:
        executor_cm: Any = _dask_executor(scheduler)
    elif workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        executor_cm = ProcessPoolExecutor(max_workers=workers)
    else:
        executor_cm = None
    # image views for HTML; the hot-spot coordinates of organ findings for the machine-read formats
    views, locations = fmt == "html", fmt in ("json", "csv")
    if executor_cm is None:
        reports = run_batch(
            graded,
            protocol,
            clinical=clinical,
            progress=progress,
            views=views,
            locations=locations,
            notes=work.notes,
            names=name_map,
        )
    else:
        with executor_cm as executor:
            reports = run_batch(
                graded,
                protocol,
                clinical=clinical,
                executor=executor,
                progress=progress,
                views=views,
                locations=locations,
                notes=work.notes,
                names=name_map,
            )
    reports = sorted([*reports, *work.verification_only], key=lambda r: (r.patient_id, r.plan_label))
    warnings = (*table.warnings, *table.unmatched({p.patient_id for p in found.plan_sets})) if table else ()
    checked_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result = CheckResult(
        protocol,
        tuple(reports),
        found.unassigned,
        skipped,
        warnings=warnings,
        checked_at=checked_at,
        skipped_files=found.skipped,
    )
    if fmt == "html":
        pages = [render_plan_html(result, r, include_names=include_names) for r in result.reports]
        if target.folder is None:
            files = [(target.file, pages[0])] if pages else []
        else:
            names = [page_name(r, i) for i, r in enumerate(result.reports, start=1)]
            files = [(os.path.join(target.folder, n), p) for n, p in zip(names, pages, strict=True)]
            files.append((os.path.join(target.folder, "index.html"), render_index_html(result, names)))
    elif fmt == "csv" and target.folder is not None:
        files = [
            (os.path.join(target.folder, "plans.csv"), plans_csv(result)),
            (os.path.join(target.folder, "findings.csv"), findings_csv(result)),
        ]
    else:
        text = {
            "text": lambda: check_text(
                result, paint=_paint if output is None and sys.stdout.isatty() else None, include_names=include_names
            ),
            "json": lambda: check_json(result, include_names=include_names),
            "csv": lambda: findings_csv(result),
        }[fmt]()
        files = [(target.file, text)]
    _emit(files, target, force=force, bom=fmt == "csv")
    ledger_code = None
    if ledger_url:  # after the reports, by the coordinating process (never by the workers)
        from rtqa.cli.ledger import record_check

        ledger_code = record_check(
            ledger_url, result, key_file=ledger_key_file, debug=debug, force_version=resubmission
        )
    if not reports and not skipped:
        click.echo("rtqa: no plan found under " + ", ".join(paths), err=True)
    for w in warnings:
        click.echo(f"rtqa: warning: {w}", err=True)
    for path, reason in found.skipped:
        click.echo(f"rtqa: skipped {path}: {reason}", err=True)
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
    if any(r.eligibility_status != "eligible" for r in reports):
        code |= EXIT_INELIGIBLE
    if any(r.convention_sensitive for r in reports):  # whatever --fail-on, like 4 and 8
        code |= EXIT_CONVENTION
    if any(e.get("type") == "InternalError" for r in reports for e in r.errors):
        # a bug met on one plan: the others are reported, and the exit code says it was a bug
        click.echo("rtqa: internal error on some plan (see its report); rerun with --debug and report it", err=True)
        return EXIT_INTERNAL
    if ledger_code is not None:  # the reports stand; the exit code says the ledger did not record them
        return ledger_code
    return code


@dataclass(frozen=True)
class _Target:
    """Where the report goes: stdout (``file`` None, ``folder`` None), one file, or a folder."""

    file: str | None = None
    folder: str | None = None
    inputs: tuple[str, ...] = ()  # real paths of every input file (never written to)
    input_dirs: tuple[str, ...] = ()  # real paths of the input folders


_FILE_SUFFIXES = (".html", ".htm", ".csv", ".json", ".txt")


def _output_target(fmt: str, output: str | None, n_plans: int, *, force: bool, inputs: tuple[str, ...]) -> _Target:
    """Check ``--output`` before any work is done, and say where the report goes.

    Usage errors (exit 2): a missing parent folder; several HTML pages, or the two CSV files,
    aimed at a file name; an existing file without ``--force``; an input file, a symlink, or
    (without ``--force``) a place inside an input folder.
    """
    if output is None:
        if fmt == "html" and n_plans > 1:
            raise click.UsageError(
                "--format html for several plans needs --output FOLDER (an index and a page per plan)"
            )
        return _Target()
    from rtqa.discovery.grouping import iter_files

    files = tuple(os.path.realpath(f) for f in iter_files(inputs))
    dirs = tuple(os.path.realpath(p) for p in inputs if os.path.isdir(p))
    ends_sep = output.endswith(("/", os.sep))
    wants_folder = fmt == "csv" or (fmt == "html" and (n_plans > 1 or ends_sep or os.path.isdir(output)))
    path = output.rstrip("/" + os.sep) or output
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise click.UsageError(f"--output {output}: the folder {parent} does not exist")
    if os.path.islink(path):
        raise click.UsageError(f"--output {output} is a symbolic link; rtqa does not write through links")
    _require_outside_inputs(output, os.path.realpath(path), files, dirs, force=force)
    if wants_folder:
        if os.path.exists(path) and not os.path.isdir(path):
            raise click.UsageError(
                f"--output {output} is a file, but --format {fmt} "
                + ("writes plans.csv and findings.csv" if fmt == "csv" else f"of {n_plans} plans writes a page each")
                + " into a folder"
            )
        if not os.path.exists(path) and not ends_sep and path.lower().endswith(_FILE_SUFFIXES):
            what = "plans.csv and findings.csv" if fmt == "csv" else f"an index and {n_plans} pages"
            raise click.UsageError(
                f"--output {output} names a file, but --format {fmt} writes {what}: give a folder "
                "(an existing one, or a new name ending in /)"
            )
        # the files every run of this format writes are checked now, before the long work
        for name in ("plans.csv", "findings.csv") if fmt == "csv" else ("index.html",):
            _require_writable(os.path.join(path, name), files, force=force)
        return _Target(folder=path, inputs=files, input_dirs=dirs)
    if ends_sep or os.path.isdir(path):
        raise click.UsageError(f"--output {output} is a folder; --format {fmt} writes one file")
    if os.path.exists(path) and not force:
        raise click.UsageError(f"--output {output} exists; add --force to overwrite it")
    return _Target(file=path, inputs=files, input_dirs=dirs)


def _require_outside_inputs(
    shown: str, real: str, files: tuple[str, ...], dirs: tuple[str, ...], *, force: bool
) -> None:
    if _is_input(real, files):
        raise click.UsageError(f"--output {shown} is an input file; rtqa never writes over its inputs")
    inside = [d for d in dirs if real == d or real.startswith(d.rstrip(os.sep) + os.sep)]
    if inside and not force:
        raise click.UsageError(
            f"--output {shown} is inside the input folder {inside[0]}; add --force to write there "
            "(input files are never overwritten)"
        )


def _is_input(path: str, inputs: tuple[str, ...]) -> bool:
    """Whether ``path`` is one of the input files: by its real path, or by its inode (a hard
    link to an input has another path but the same file: overwriting it rewrites the input)."""
    if os.path.realpath(path) in inputs:
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False  # a new file is no input
    return (st.st_dev, st.st_ino) in _inodes(inputs)


@functools.lru_cache(maxsize=4)
def _inodes(files: tuple[str, ...]) -> frozenset[tuple[int, int]]:
    out = set()
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        out.add((st.st_dev, st.st_ino))
    return frozenset(out)


def _require_writable(path: str, inputs: tuple[str, ...], *, force: bool) -> None:
    """A report file may be written at ``path``: not a link, not an input, new or ``--force``."""
    if os.path.islink(path):
        raise click.UsageError(f"{path} is a symbolic link; rtqa does not write through links")
    if _is_input(path, inputs):
        raise click.UsageError(f"{path} is an input file; rtqa never writes over its inputs")
    if os.path.exists(path) and not force:
        raise click.UsageError(f"{path} exists; add --force to overwrite it")


def _emit(files: list[tuple[str | None, str]], target: _Target, *, force: bool, bom: bool) -> None:
    """Write every report file, or echo the one report to stdout; checks every path before
    writing any, so a refused path leaves nothing half-written."""
    if target.file is None and target.folder is None:
        for _, text in files:
            click.echo(text, nl=False)
        return
    if target.folder is not None:
        for path, _ in files:
            assert path is not None
            _require_writable(path, target.inputs, force=force)
        os.makedirs(target.folder, exist_ok=True)
    for path, text in files:
        assert path is not None
        from rtqa.report.csv_cells import CSV_FILE_ENCODING

        _write_file(path, text, encoding=CSV_FILE_ENCODING if bom else "utf-8")


def _write_file(path: str, text: str, *, encoding: str) -> None:
    """Write a new file or replace a regular one, never following a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise click.UsageError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w", encoding=encoding, newline="") as fh:
        fh.write(text)


def _paint(text: str, g: Grade) -> str:
    from rtqa.report.render import COLOUR

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
