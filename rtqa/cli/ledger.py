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

from rtqa.cli.app import EXIT_INTERNAL, EXIT_NOT_EVALUABLE, EXIT_USAGE, _write, cli
from rtqa.errors import RtqaError
from rtqa.protocol.limits import Grade

if TYPE_CHECKING:
    from rtqa.ledger.db import Ledger
    from rtqa.report.model import CheckResult

ENV = "RTQA_LEDGER"
KEY_FILE_ENV = "RTQA_LEDGER_KEY_FILE"


def ledger_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--ledger",
        "ledger_url",
        envvar=ENV,
        required=True,
        metavar="URL",
        help=f"The ledger: sqlite:///FILE, a path, or postgresql://USER@HOST/DB (or ${ENV}).",
    )(f)


def key_file_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--ledger-key-file",
        "key_file",
        envvar=KEY_FILE_ENV,
        type=click.Path(dir_okay=False),
        metavar="FILE",
        help=f"The ledger key (HMAC of every row), read from FILE (or ${KEY_FILE_ENV}); or the key itself in "
        "$RTQA_LEDGER_KEY.",
    )(f)


def _attempt(action: Callable[[], None], debug: bool = False) -> int | None:
    """Run a ledger action: None when it succeeds, else the exit code after saying why
    (2 for a ledger error, with a one-line message; 70 for a bug)."""
    try:
        action()
    except click.ClickException:
        raise
    except ImportError as exc:
        click.echo(f"rtqa: the ledger needs its database layer ({exc.name}): pip install 'rtqa[ledger]'", err=True)
        return EXIT_USAGE
    except RtqaError as exc:
        click.echo(f"rtqa: {exc}", err=True)
        return EXIT_USAGE
    except Exception as exc:  # a bug: say so, and keep the traceback for --debug
        if debug:
            traceback.print_exc()
        click.echo(f"rtqa: internal error ({type(exc).__name__}: {exc}); rerun with --debug and report it", err=True)
        return EXIT_INTERNAL
    return None


def _guard(action: Callable[[], None], debug: bool = False) -> None:
    """Run a ledger action: its errors are a message and exit 2, a bug is exit 70."""
    code = _attempt(action, debug)
    if code is not None:
        sys.exit(code)


def _open(url: str, *, create: bool = False, key_file: str | None = None) -> Ledger:
    from rtqa.ledger.chain import key_from_environment
    from rtqa.ledger.db import open_ledger

    return open_ledger(url, create=create, key=key_from_environment(key_file))


def check_ledger_options(url: str, key_file: str | None) -> None:
    """Refuse, before any plan is checked, a ledger URL or key that can never work (exit 2):
    an unsupported or in-memory database, a malformed URL, an unreadable or short key. The
    database itself is reached only after the reports are written."""
    try:
        from rtqa.ledger.chain import key_from_environment
        from rtqa.ledger.db import parse_url

        parse_url(url)
        key_from_environment(key_file)
    except ImportError as exc:
        raise click.UsageError(f"--ledger needs the database layer ({exc.name}): pip install 'rtqa[ledger]'") from None
    except RtqaError as exc:
        raise click.UsageError(f"--ledger: {exc}") from None


def record_check(
    url: str,
    result: CheckResult,
    *,
    key_file: str | None = None,
    debug: bool = False,
    force_version: bool = False,
) -> int | None:
    """Record a check's plans as submissions (called by ``rtqa check --ledger`` once the reports
    are written): None when done, else the exit code, after saying why on stderr.

    A run is one transaction: when anything fails, no plan of the run is recorded.
    ``force_version`` (``--resubmission``) records every plan as a new version of its case."""

    def run() -> None:
        from rtqa.ledger.record import ADDITION, RE_EVALUATION, record_result
        from rtqa.report.render import clean

        ledger = _open(url, create=True, key_file=key_file)
        try:
            recorded = record_result(ledger, result, force_version=force_version)
        finally:
            ledger.dispose()
        for r in recorded:
            who = clean(f"{r.patient_id} ({r.institution})" if r.institution else r.patient_id)
            if not r.new:
                click.echo(
                    f"ledger: {who}: same input files, protocol and verdict as submission {r.submission_id} "
                    f"(version {r.version}); not recorded again",
                    err=True,
                )
            elif r.kind == RE_EVALUATION:
                click.echo(
                    f"ledger: {who}: recorded as submission {r.submission_id}, a re-evaluation of submission "
                    f"{r.evaluates} (version {r.version}: the same input files, other facts or protocol)",
                    err=True,
                )
            elif r.kind == ADDITION:
                click.echo(
                    f"ledger: {who}: recorded as submission {r.submission_id}, plan(s) added to the course of "
                    f"version {r.version} (submission {r.evaluates}); not a new version",
                    err=True,
                )
            elif r.supersedes:
                click.echo(
                    f"ledger: {who}: recorded as submission {r.submission_id}, version {r.version} "
                    f"(supersedes submission {r.supersedes})",
                    err=True,
                )
            else:
                click.echo(f"ledger: {who}: recorded as submission {r.submission_id}, version 1", err=True)

    code = _attempt(run, debug)
    if code is not None:
        click.echo(
            "rtqa: the reports were written; nothing of this run was recorded in the ledger (a run is recorded in one "
            "transaction): fix the ledger and run the check again with --ledger",
            err=True,
        )
    return code


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
@click.option(
    "--override-eligibility",
    is_flag=True,
    help="With --accept-plan: accept the plan of an INELIGIBLE patient (the --reason says why; the patient "
    "stays counted as ineligible).",
)
@click.option("--reason", required=True, help="Why (required; kept in the audit trail).")
@click.option("--reviewer", required=True, metavar="NAME", help="Who decides.")
@ledger_option
@key_file_option
def review(
    submission: int,
    rule: str | None,
    roi: str | None,
    grade: str | None,
    accept_plan: bool,
    reject_plan: bool,
    override_eligibility: bool,
    reason: str,
    reviewer: str,
    ledger_url: str,
    key_file: str | None,
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
    if override_eligibility and not accept_plan:
        raise click.UsageError("--override-eligibility goes with --accept-plan only")

    def run() -> None:
        from rtqa.ledger.review import ACCEPT, GRADE_DECISION, REJECT, add_decision

        action = GRADE_DECISION if rule else (ACCEPT if accept_plan else REJECT)
        ledger = _open(ledger_url, key_file=key_file)
        try:
            d = add_decision(
                ledger,
                submission,
                action=action,
                reason=reason,
                reviewer=reviewer,
                rule=rule,
                roi=roi,
                grade=grade,
                override_eligibility=override_eligibility,
            )
        finally:
            ledger.dispose()
        from rtqa.report.text_cells import clean  # a reason's newline must not forge a line

        click.echo(f"decision {d.id} on submission {submission}: {clean(d.text())}")

    _guard(run)


@cli.command()
@click.argument("patient")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--institution", metavar="NAME", help="Only the case of this institution (the same PatientID at two "
              "centres is two cases).")  # fmt: skip
@ledger_option
def history(patient: str, fmt: str, institution: str | None, ledger_url: str) -> None:
    """List PATIENT's cases (one per institution): the courses, plans and versions of each, additions
    to a course and re-evaluations, with grades and decisions."""

    def run() -> None:
        import json

        from rtqa.ledger.history import history as read_history
        from rtqa.ledger.render import history_text, submission_json

        ledger = _open(ledger_url)
        try:
            views = read_history(ledger, patient, institution=institution)
        finally:
            ledger.dispose()
        if fmt == "json":
            click.echo(json.dumps([submission_json(v) for v in views], indent=1, ensure_ascii=False, allow_nan=False))
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
            click.echo(json.dumps(diff_json(d), indent=1, ensure_ascii=False, allow_nan=False))
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
    """Look after the ledger: verify its audit trail, anchor its head, upgrade its schema."""


def _verification(ledger_url: str, key_file: str | None, anchor_files: tuple[str, ...]) -> Any:
    from rtqa.ledger.anchors import read_anchors
    from rtqa.ledger.verify import verify as run_verify

    anchors = [a for path in anchor_files for a in read_anchors(path)]
    led = _open(ledger_url, key_file=key_file)
    try:
        return run_verify(led, anchors)
    finally:
        led.dispose()


def _say_broken(v: Any) -> None:
    n = len(v.problems)
    click.echo(
        f"ledger BROKEN: {n} problem{'s' if n != 1 else ''} in {v.submissions} submissions and {v.decisions} decisions"
    )
    for p in v.problems:
        click.echo(f"  - {p}")
    click.echo(f"head: {v.head.text()}")


@ledger.command()
@click.option(
    "--anchor",
    "anchor_files",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="An anchor file (rtqa ledger anchor --append): every head kept there must still be a prefix of the "
    "chain. Repeatable.",
)
@ledger_option
@key_file_option
def verify(anchor_files: tuple[str, ...], ledger_url: str, key_file: str | None) -> None:
    """Check the hash chain, the HMACs (with the key) and kept anchors; print the head.

    Exit 0 when everything checked holds, 1 listing every problem, 4 when the rows carry HMACs
    and no key was given (the chain holds, the HMACs were not checked)."""

    def run() -> None:
        v = _verification(ledger_url, key_file, anchor_files)
        if not v.ok:
            _say_broken(v)
            sys.exit(1)
        click.echo(f"ledger verified: {v.submissions} submissions and {v.decisions} decisions, chain intact")
        click.echo(f"head: {v.head.text()}")
        if v.key_checked:
            click.echo(f"key: every row's HMAC matches the ledger key ({v.hmac_rows} rows)")
        elif v.hmac_rows:
            click.echo(
                f"key: NOT CHECKED: {v.hmac_rows} rows carry an HMAC; give the key (RTQA_LEDGER_KEY or "
                "--ledger-key-file) to check them"
            )
        else:
            click.echo("key: none (this ledger's rows carry no HMAC)")
        if anchor_files:
            click.echo(
                f"anchors: {v.anchors} kept head{'s' if v.anchors != 1 else ''} in {', '.join(anchor_files)}, "
                "each still a prefix of the chain"
            )
        else:
            click.echo("anchors: none given (--anchor FILE): a recomputed chain or removed newest rows would not show")
        if v.hmac_rows and not v.key_checked:  # part of the trail left unchecked is never a pass
            sys.exit(EXIT_NOT_EVALUABLE)

    _guard(run)


@ledger.command()
@click.option(
    "--append",
    "append_to",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Append the head to this anchor file (created if absent; keep it off the ledger's machine), after "
    "checking the heads it already holds.",
)
@ledger_option
@key_file_option
def anchor(append_to: str | None, ledger_url: str, key_file: str | None) -> None:
    """Verify the ledger, then print its head (time, rows, last hash) or append it to an anchor file."""

    def run() -> None:
        import os

        from rtqa.ledger.anchors import anchor_line, append_anchor

        kept = (append_to,) if append_to and os.path.exists(append_to) and _has_anchor(append_to) else ()
        v = _verification(ledger_url, key_file, kept)
        if not v.ok:
            _say_broken(v)
            click.echo("rtqa: no anchor taken: the ledger does not verify", err=True)
            sys.exit(1)
        line = anchor_line(v.head)
        click.echo(line)
        if append_to:
            append_anchor(append_to, line)
            earlier = f"; its {v.anchors} earlier heads still a prefix of the chain" if kept else ""
            click.echo(f"anchor appended to {append_to}{earlier}", err=True)

    _guard(run)


def _has_anchor(path: str) -> bool:
    """Whether an existing anchor file holds any line that is not blank or a comment."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return any(line.strip() and not line.lstrip().startswith("#") for line in fh)
    except OSError:
        return True  # read_anchors says why it cannot be read


@ledger.command()
@ledger_option
def upgrade(ledger_url: str) -> None:
    """Bring the ledger's schema up to this rtqa's (back it up first); creates an empty ledger."""

    def run() -> None:
        from rtqa.ledger.db import parse_url, shown_url
        from rtqa.ledger.db import upgrade as run_upgrade

        before, after = run_upgrade(ledger_url)
        shown = shown_url(parse_url(ledger_url))
        if before == after:
            click.echo(f"{shown}: schema already at revision {after}")
        else:
            click.echo(f"{shown}: schema upgraded from {before or 'empty'} to revision {after}")

    _guard(run)
