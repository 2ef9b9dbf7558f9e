"""The command line. Thin: parse options, call the library, render, map errors to exit codes.

Exit codes are bit flags (DESIGN.md): 0 all fine; 4 something could not be evaluated (a plan
unreadable or incomplete, a file unassigned, no plan found); 2 usage error; 70 internal error.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from rtqa import __version__
from rtqa.batch import run_batch
from rtqa.case import PlanSet
from rtqa.casedvh import compute_case_dvhs, compute_protocol_dvhs, review_stored_dvhs
from rtqa.clinical import read_clinical_csv
from rtqa.discover import discover
from rtqa.errors import ProtocolError, RtqaError
from rtqa.geometry import EndCap
from rtqa.io import read_stored_dvhs
from rtqa.limits import Grade
from rtqa.planset import load_case
from rtqa.protocol import Protocol, load_protocol
from rtqa.render_check import COLOUR, CheckResult, findings_csv, plans_csv
from rtqa.render_check import render_json as check_json
from rtqa.render_check import render_text as check_text
from rtqa.render_dvh import DvhResult, render_csv, render_json, render_text
from rtqa.render_html import page_name, render_index_html, render_plan_html

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_NOT_EVALUABLE = 4
EXIT_USAGE = 2
EXIT_INTERNAL = 70
FAIL_ON = {"variation": Grade.VARIATION_ACCEPTABLE, "deviation": Grade.DEVIATION_UNACCEPTABLE, "never": None}


def _derived(_ctx: click.Context, _param: click.Parameter, values: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for v in values:
        name, sep, expr = v.partition("=")
        if not sep or not name.strip() or not expr.strip():
            raise click.BadParameter(f"{v!r}: expected NAME=EXPRESSION, e.g. 'Liver-GTV=Liver - (GTVp | GTVv)'")
        out.append((name.strip(), expr.strip()))
    return out


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rtqa")
def cli() -> None:
    """rtqa: radiotherapy dose-plan QA and protocol-compliance checking for DICOM RT."""


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option(
    "--protocol",
    "protocol_name",
    metavar="FILE|NAME",
    help="Name structures as this protocol does (aliases matched, derived structures such as Liver-GTV).",
)
@click.option("--structure", "structures", multiple=True, metavar="NAME", help="Only these ROIs (repeatable).")
@click.option(
    "--derived",
    multiple=True,
    callback=_derived,
    metavar="NAME=EXPR",
    help="A derived structure, e.g. 'Liver-GTV=Liver - (GTVp | GTVv | GTVn)' (repeatable).",
)
@click.option(
    "--end-cap",
    type=click.Choice([e.value for e in EndCap]),
    default=EndCap.HALF_SLAB.value,
    show_default=True,
    help="Slab convention at the first and last contour of each structure.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, writable=True), help="Write here instead of stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks of internal errors.")
def dvh(
    paths: tuple[str, ...],
    protocol_name: str | None,
    structures: tuple[str, ...],
    derived: list[tuple[str, str]],
    end_cap: str,
    fmt: str,
    output: str | None,
    debug: bool,
) -> None:
    """Dose-volume statistics of every structure of every plan found under PATHS."""
    protocol = _load_protocol(protocol_name) if protocol_name else None
    _run(lambda: _dvh(paths, protocol, structures, derived, EndCap(end_cap), fmt, output), debug)


def _dvh(
    paths: tuple[str, ...],
    protocol: Protocol | None,
    structures: tuple[str, ...],
    derived: list[tuple[str, str]],
    end_cap: EndCap,
    fmt: str,
    output: str | None,
) -> int:
    found = discover(paths)
    results = []
    not_evaluable = bool(found.unassigned)
    plan_sets = [p for p in found.plan_sets if p.plans]
    if not plan_sets:
        click.echo("rtqa: no plan found under " + ", ".join(paths), err=True)
        not_evaluable = True
    for plan_set in plan_sets:
        result = _case_dvh(plan_set, protocol, structures, derived, end_cap)
        not_evaluable |= result.error is not None or any(s.dvh is None for s in result.structures)
        results.append(result)
    renderer: Callable[[list[DvhResult]], str] = {"text": render_text, "json": render_json, "csv": render_csv}[fmt]
    text = renderer(results)
    if output:
        with open(output, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        click.echo(text, nl=False)
    for u in found.unassigned:
        click.echo(f"rtqa: unassigned file {u.path}: {u.reason}", err=True)
    return EXIT_NOT_EVALUABLE if not_evaluable else EXIT_OK


def _case_dvh(
    plan_set: PlanSet,
    protocol: Protocol | None,
    structures: tuple[str, ...],
    derived: list[tuple[str, str]],
    end_cap: EndCap,
) -> DvhResult:
    plan_uid = plan_set.plans[0].sop_instance_uid
    label = plan_set.label
    if plan_set.problems:
        return DvhResult(plan_set.patient_id, plan_uid, label, (), (), error="; ".join(plan_set.problems))
    try:
        case = load_case(plan_set)
        assert case.structure_set is not None and case.dose is not None and case.dose_choice is not None
        facts = [("dose", case.dose_choice.source)]
        for plan, rx in zip(case.plans, case.prescriptions, strict=True):
            intent = " (VERIFICATION plan)" if plan.is_verification else ""
            if rx.total_gy is not None:
                per = f"{rx.per_fraction_gy:.2f} Gy x {rx.fractions}" if rx.per_fraction_gy else "fractions unknown"
                facts.append(
                    (
                        "prescription",
                        f"{plan.label}: {rx.total_gy:.2f} Gy ({per}) from "
                        f"{rx.source.value if rx.source else '?'}{intent}",
                    )
                )
        sx, sy, sz = case.dose.info.spacing_mm if case.dose.info else (0.0, 0.0, 0.0)
        facts.append(("dose grid", f"{sx:.2f} x {sy:.2f} x {sz:.2f} mm, max {case.dose.max_gy:.2f} Gy"))
        if protocol is not None:
            end_cap = protocol.end_cap
            facts.append(("protocol", f"{protocol.id} v{protocol.version} (structure names and derived structures)"))
            dvhs = compute_protocol_dvhs(case.structure_set, case.dose, protocol, names=structures)
        else:
            dvhs = compute_case_dvhs(case.structure_set, case.dose, names=structures, derived=derived, end_cap=end_cap)
        facts.append(("DVH settings", f"end cap {end_cap.value}, bins 0.01 Gy"))
        warnings = list(case.warnings) + [w for s in dvhs if s.dvh for w in s.dvh.warnings]
        if len(case.dose_choice.parts) == 1 and case.dose_choice.parts[0][0].has_dvh_sequence:
            stored = read_stored_dvhs(case.dose_choice.parts[0][0].path)
            warnings += review_stored_dvhs(case.structure_set, dvhs, stored, grid_max_gy=case.dose.max_gy)
        return DvhResult(plan_set.patient_id, plan_uid, label, tuple(facts), tuple(dvhs), tuple(warnings))
    except RtqaError as exc:
        return DvhResult(plan_set.patient_id, plan_uid, label, (), (), error=str(exc))


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
    debug: bool,
) -> None:
    """Check every plan found under PATHS against the protocol and report deviations."""
    _run(lambda: _check(paths, protocol_name, fmt, output, workers, scheduler, fail_on, clinical, include_names), debug)


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


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def _load_protocol(name: str | None) -> Protocol:
    try:
        return load_protocol(name)
    except ProtocolError as exc:
        raise click.UsageError(str(exc)) from None


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


@cli.group()
def rules() -> None:
    """Validate and show protocol files."""


@rules.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path())
def rules_validate(files: tuple[str, ...]) -> None:
    """Check protocol files; exit 2 if any is invalid."""
    bad = 0
    for f in files:
        try:
            p = load_protocol(f)
            click.echo(
                f"{f}: valid - {p.id} v{p.version}, {len(p.all_rules())} rules, "
                f"{sum(1 for r in p.all_rules() if r.unconfirmed)} unconfirmed"
            )
        except ProtocolError as exc:
            bad += 1
            click.echo(str(exc), err=True)
    sys.exit(EXIT_USAGE if bad else EXIT_OK)


@rules.command("show")
@click.argument("protocol_name", required=False, metavar="[FILE|NAME]")
def rules_show(protocol_name: str | None) -> None:
    """A readable table of every rule, limit, source and unconfirmed mark (†)."""
    p = _load_protocol(protocol_name)
    click.echo(f"{p.id} v{p.version}: {p.title}")
    click.echo(f"file {p.path} (sha256 {p.sha256[:12]}...); DVH end cap {p.end_cap.value}; † = unconfirmed")
    click.echo("")
    click.echo(
        f"{'rule':<22} {'kind':<12} {'structure':<12} {'metric/check':<22} {'per protocol':<16} "
        f"{'variation':<14} source"
    )
    for r in p.all_rules():
        what = r.metric.text if r.metric else (r.check or "")
        pp = r.per_protocol.text(r.unit) if r.per_protocol else (", ".join(r.allowed) if r.allowed else "-")
        va = r.variation.text(r.unit) if r.variation else "-"
        extra = ""
        if r.when:
            extra += " when " + "; ".join(f"{k} in {', '.join(v)}" for k, v in r.when.items())
        dagger = " †" if r.unconfirmed else ""
        click.echo(
            f"{r.id:<22} {r.kind:<12} {(r.structure or ''):<12} {what:<22} {pp[:16]:<16} {va[:14]:<14} "
            f"{r.source}{dagger}{extra}"
        )
    click.echo("")
    click.echo("structures:")
    for s in p.structures.values():
        need = "required" if s.required else "optional"
        card = "many ROIs" if s.many else "one ROI"
        click.echo(
            f"  {s.name:<12} {s.role:<7} {need:<9} {card:<9} aliases: {', '.join(s.aliases[1:]) or '-'}"
            + (f"; patterns: {', '.join(s.patterns)}" if s.patterns else "")
        )
    for d in p.derived.values():
        click.echo(
            f"  {d.name:<12} derived: {d.expression}"
            + (" (an ROI of this name is used if present)" if d.prefer_roi else "")
        )


def _run(action: Callable[[], int], debug: bool) -> Any:
    try:
        code = action()
    except click.ClickException:
        raise
    except ProtocolError as exc:
        click.echo(f"rtqa: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except RtqaError as exc:
        click.echo(f"rtqa: {exc}", err=True)
        sys.exit(EXIT_NOT_EVALUABLE)
    except Exception as exc:  # a bug: say so, and keep the traceback for --debug
        if debug:
            traceback.print_exc()
        click.echo(f"rtqa: internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it", err=True)
        sys.exit(EXIT_INTERNAL)
    sys.exit(code)


def main() -> None:
    cli()
