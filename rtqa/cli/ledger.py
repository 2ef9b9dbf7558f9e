"""The QA office's commands over the audit ledger: review, history, diff, report, stats, ledger.

The ledger's database layer (SQLAlchemy, Alembic, psycopg) is imported only inside these
commands and :func:`record_check`, so that ``rtqa`` without a ledger never loads it.
Every ledger error is a one-line message and exit code 2; URLs are shown with the password masked.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import click

from rtqa.cli.app import EXIT_INTERNAL, EXIT_USAGE, _write, cli
from rtqa.errors import RtqaError
from rtqa.protocol.limits import Grade

if TYPE_CHECKING:
    from rtqa.ledger.db import Ledger
    from rtqa.report.model import CheckResult

ENV = "RTQA_LEDGER"


def ledger_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--ledger",
        "ledger_url",
        envvar=ENV,
        required=True,
        metavar="URL",
        help=f"The ledger: sqlite:///FILE, a path, or postgresql://USER@HOST/DB (or ${ENV}).",
    )(f)


def _guard(action: Callable[[], None], debug: bool = False) -> None:
    """Run a ledger action: its errors are a message and exit 2, a bug is exit 70."""
    try:
        action()
    except click.ClickException:
        raise
    except ImportError as exc:
        click.echo(f"rtqa: the ledger needs its database layer ({exc.name}): pip install 'rtqa[ledger]'", err=True)
        sys.exit(EXIT_USAGE)
    except RtqaError as exc:
        click.echo(f"rtqa: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except Exception as exc:  # a bug: say so, and keep the traceback for --debug
        if debug:
            traceback.print_exc()
        click.echo(f"rtqa: internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it", err=True)
        sys.exit(EXIT_INTERNAL)


def _open(url: str, *, create: bool = False) -> Ledger:
    from rtqa.ledger.db import open_ledger

    return open_ledger(url, create=create)


def record_check(url: str, result: CheckResult) -> None:
    """Record a check's plans as submissions (called by ``rtqa check --ledger`` after the reports)."""

    def run() -> None:
        from rtqa.ledger.record import record_result

        ledger = _open(url, create=True)
        try:
            recorded = record_result(ledger, result)
        finally:
            ledger.dispose()
        for r in recorded:
            if not r.new:
                click.echo(
                    f"ledger: {r.patient_id}: same input files, protocol and verdict as submission {r.submission_id} "
                    f"(version {r.version}); not recorded again",
                    err=True,
                )
            elif r.supersedes:
                click.echo(
                    f"ledger: {r.patient_id}: recorded as submission {r.submission_id}, version {r.version} "
                    f"(supersedes submission {r.supersedes})",
                    err=True,
                )
            else:
                click.echo(f"ledger: {r.patient_id}: recorded as submission {r.submission_id}, version 1", err=True)

    _guard(run)


def _emit(text: str, output: str | None) -> None:
    if output:
        _write(output, text)
    else:
        click.echo(text, nl=False)


@cli.command()
@click.argument("submission", type=int)
@click.option("--rule", metavar="ID", help="The rule whose finding is decided (with --grade).")
@click.option("--roi", metavar="NAME", help="Only the finding on this ROI or structure (a rule with several).")
@click.option("--grade", type=click.Choice([g.value for g in Grade]), help="The reviewed grade of the finding.")
@click.option("--accept-plan", is_flag=True, help="Accept the plan as a whole.")
@click.option("--reject-plan", is_flag=True, help="Reject the plan as a whole.")
@click.option("--reason", required=True, help="Why (required; kept in the audit trail).")
@click.option("--reviewer", required=True, metavar="NAME", help="Who decides.")
@ledger_option
def review(
    submission: int,
    rule: str | None,
    roi: str | None,
    grade: str | None,
    accept_plan: bool,
    reject_plan: bool,
    reason: str,
    reviewer: str,
    ledger_url: str,
) -> None:
    """Record a reviewer decision on SUBMISSION: a finding's grade, or the plan's acceptance."""
    chosen = [
        name
        for name, on in (("--rule", bool(rule)), ("--accept-plan", accept_plan), ("--reject-plan", reject_plan))
        if on
    ]
    if len(chosen) != 1:
        raise click.UsageError("give one of --rule ID --grade GRADE, --accept-plan or --reject-plan")
    if rule and not grade:
        raise click.UsageError("--rule needs --grade")
    if grade and not rule:
        raise click.UsageError("--grade needs --rule")

    def run() -> None:
        from rtqa.ledger.review import ACCEPT, GRADE_DECISION, REJECT, add_decision

        action = GRADE_DECISION if rule else (ACCEPT if accept_plan else REJECT)
        ledger = _open(ledger_url)
        try:
            d = add_decision(
                ledger, submission, action=action, reason=reason, reviewer=reviewer, rule=rule, roi=roi, grade=grade
            )
        finally:
            ledger.dispose()
        click.echo(f"decision {d.id} on submission {submission}: {d.text()}")

    _guard(run)


@cli.command()
@click.argument("patient")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@ledger_option
def history(patient: str, fmt: str, ledger_url: str) -> None:
    """List the versions of PATIENT's case with grades and decisions."""

    def run() -> None:
        import json

        from rtqa.ledger.history import history as read_history
        from rtqa.ledger.render import history_text, submission_json

        ledger = _open(ledger_url)
        try:
            views = read_history(ledger, patient)
        finally:
            ledger.dispose()
        if fmt == "json":
            click.echo(json.dumps([submission_json(v) for v in views], indent=1, ensure_ascii=False))
        else:
            click.echo(history_text(views), nl=False)

    _guard(run)


@cli.command()
@click.argument("submission_a", type=int)
@click.argument("submission_b", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@ledger_option
def diff(submission_a: int, submission_b: int, fmt: str, ledger_url: str) -> None:
    """List what changed from SUBMISSION_A to SUBMISSION_B: findings and input files."""

    def run() -> None:
        import json

        from rtqa.ledger.diff import diff as compute_diff
        from rtqa.ledger.render import diff_json, diff_text
        from rtqa.ledger.review import view

        ledger = _open(ledger_url)
        try:
            d = compute_diff(view(ledger, submission_a), view(ledger, submission_b))
        finally:
            ledger.dispose()
        if fmt == "json":
            click.echo(json.dumps(diff_json(d), indent=1, ensure_ascii=False))
        else:
            click.echo(diff_text(d), nl=False)

    _guard(run)


@cli.command()
@click.argument("submission", type=int)
@click.option("--format", "fmt", type=click.Choice(["text", "json", "html"]), default="text", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Write to this file.")
@ledger_option
def report(submission: int, fmt: str, output: str | None, ledger_url: str) -> None:
    """Regenerate SUBMISSION's report from the ledger, with reviewed grades and decisions."""

    def run() -> None:
        import json

        from rtqa.ledger.render import submission_html, submission_json, submission_text
        from rtqa.ledger.review import view

        ledger = _open(ledger_url)
        try:
            v = view(ledger, submission)
        finally:
            ledger.dispose()
        if fmt == "json":
            text = json.dumps(submission_json(v), indent=1, ensure_ascii=False, allow_nan=False) + "\n"
        else:
            text = submission_html(v) if fmt == "html" else submission_text(v)
        _emit(text, output)

    _guard(run)


def _since(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a date YYYY-MM-DD") from None


@cli.command()
@click.option("--by", type=click.Choice(["institution", "rule", "month"]), default="institution", show_default=True)
@click.option("--since", metavar="DATE", callback=_since, help="Only submissions made on or after DATE (YYYY-MM-DD).")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json", "html"]), default="text", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Write to this file.")
@ledger_option
def stats(by: str, since: str | None, fmt: str, output: str | None, ledger_url: str) -> None:
    """Statistics of the ledger: plans, final grades, resubmissions, deviations per rule, time to acceptance."""

    def run() -> None:
        from rtqa.ledger.render import stats_csv, stats_html, stats_json, stats_text
        from rtqa.ledger.stats import compute_stats

        ledger = _open(ledger_url)
        try:
            s = compute_stats(ledger, by=by, since=since)
        finally:
            ledger.dispose()
        _emit({"text": stats_text, "csv": stats_csv, "json": stats_json, "html": stats_html}[fmt](s), output)

    _guard(run)


@cli.group()
def ledger() -> None:
    """Look after the ledger: verify its audit trail, upgrade its schema."""


@ledger.command()
@ledger_option
def verify(ledger_url: str) -> None:
    """Check the hash chain of every submission and decision; name the first broken link (exit 1)."""

    def run() -> None:
        from rtqa.ledger.verify import verify as run_verify

        led = _open(ledger_url)
        try:
            v = run_verify(led)
        finally:
            led.dispose()
        if v.ok:
            click.echo(f"ledger verified: {v.submissions} submissions and {v.decisions} decisions, chain intact")
            return
        click.echo(f"ledger BROKEN: {v.broken}")
        sys.exit(1)

    _guard(run)


@ledger.command()
@ledger_option
def upgrade(ledger_url: str) -> None:
    """Bring the ledger's schema up to this rtqa's (back it up first); creates an empty ledger."""

    def run() -> None:
        from rtqa.ledger.db import parse_url
        from rtqa.ledger.db import upgrade as run_upgrade

        before, after = run_upgrade(ledger_url)
        shown = parse_url(ledger_url).render_as_string(hide_password=True)
        if before == after:
            click.echo(f"{shown}: schema already at revision {after}")
        else:
            click.echo(f"{shown}: schema upgraded from {before or 'empty'} to revision {after}")

    _guard(run)
