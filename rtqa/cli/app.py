"""The ``rtqa`` command group and what every command shares: exit codes, error mapping, output.

Exit codes are bit flags (DESIGN.md): 0 all fine; 1 a plan at or above ``--fail-on``; 4 something
could not be evaluated (a plan unreadable or incomplete, a file unassigned, no plan found); 8 a
checked patient is ineligible or their eligibility is unknown; 2 usage error; 70 internal error
(a bug). 1, 4 and 8 combine; 2 and 70 are exclusive codes.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from rtqa import __version__
from rtqa.errors import ProtocolError, RtqaError
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import Protocol, load_protocol

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_NOT_EVALUABLE = 4
EXIT_INELIGIBLE = 8  # a checked patient is ineligible or their eligibility is unknown
EXIT_USAGE = 2
EXIT_INTERNAL = 70
FAIL_ON = {"variation": Grade.VARIATION_ACCEPTABLE, "deviation": Grade.DEVIATION_UNACCEPTABLE, "never": None}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rtqa")
def cli() -> None:
    """rtqa: radiotherapy dose-plan QA and protocol-compliance checking for DICOM RT."""


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def _load_protocol(name: str | None) -> Protocol:
    try:
        return load_protocol(name)
    except ProtocolError as exc:
        raise click.UsageError(str(exc)) from None


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
