"""The ``rtqa`` command group and what every command shares: exit codes, error mapping, output.

Exit codes are bit flags (DESIGN.md): 0 all fine; 1 a plan at or above ``--fail-on``; 4 something
could not be evaluated (a plan unreadable or incomplete, a file unassigned, no plan found); 8 a
checked patient is ineligible or their eligibility is unknown; 16 a grade depends on the DVH
end-cap convention (a reviewer must look); 2 usage error; 70 internal error (a bug). 1, 4, 8 and
16 combine; 2 and 70 are exclusive codes.
"""

from __future__ import annotations

import importlib
import math
import os
import sys
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from rtqa import __version__
from rtqa.deadline import DEFAULT_SECONDS, SECONDS_ENV, parse_seconds
from rtqa.dvh.sizes import BUDGET_ENV, DEFAULT_BUDGET_BYTES, format_size, parse_size
from rtqa.errors import ProtocolError, RtqaError
from rtqa.protocol.limits import Grade

if TYPE_CHECKING:
    from rtqa.protocol.loader import Protocol

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_NOT_EVALUABLE = 4
EXIT_INELIGIBLE = 8  # a checked patient is ineligible or their eligibility is unknown
EXIT_CONVENTION = 16  # a grade depends on the DVH end-cap convention: a reviewer must look
EXIT_USAGE = 2
EXIT_INTERNAL = 70
FAIL_ON = {"variation": Grade.VARIATION_ACCEPTABLE, "deviation": Grade.DEVIATION_UNACCEPTABLE, "never": None}


# command name -> the module that defines it (and registers it on the group when imported)
COMMAND_MODULES = {
    "check": "rtqa.cli.check",
    "dvh": "rtqa.cli.dvh",
    "rules": "rtqa.cli.rules",
    # the QA office's commands over the audit ledger (rtqa.cli.ledger registers them all)
    "review": "rtqa.cli.ledger",
    "history": "rtqa.cli.ledger",
    "diff": "rtqa.cli.ledger",
    "report": "rtqa.cli.ledger",
    "stats": "rtqa.cli.ledger",
    "ledger": "rtqa.cli.ledger",
    # the DICOM node (rtqa.node, the node extra) and its pseudonyms
    "listen": "rtqa.cli.node",
    "pseudonym": "rtqa.cli.node",
}


class _LazyGroup(click.Group):
    """A group that imports a command's module the first time the command is needed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            importlib.import_module(COMMAND_MODULES[cmd_name])  # registers itself on this group
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rtqa")
def cli() -> None:
    """rtqa: radiotherapy dose-plan QA and protocol-compliance checking for DICOM RT."""


class FiniteFloatRange(click.FloatRange):
    """A :class:`click.FloatRange` that refuses ``nan`` and ``inf`` (which ``float()`` reads and
    a range check lets through: ``nan`` compares false with every bound, ``inf`` passes a lower
    one). A usage error names the option and says what is expected; ``expected`` says it in
    words, e.g. "a dose in Gy > 0"."""

    def __init__(self, expected: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.expected = expected

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r}: expected {self.expected}, a finite number", param, ctx)
        return number


def _max_memory(_ctx: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    """Parse ``--max-memory`` and put it in force through ``RTQA_MAX_MEMORY``, which worker
    processes inherit (the DVH engine and the readers read the budget from there)."""
    if value is None:
        return None
    try:
        n = parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    os.environ[BUDGET_ENV] = str(n)
    return n


max_memory_option = click.option(
    "--max-memory",
    metavar="SIZE",
    callback=_max_memory,
    expose_value=False,
    help=f"Memory budget per plan for reading doses and sampling DVHs, e.g. 8G "
    f"(default {format_size(DEFAULT_BUDGET_BYTES)}, or ${BUDGET_ENV}); larger inputs are refused.",
)


def _max_seconds(_ctx: click.Context, _param: click.Parameter, value: str | None) -> float | None:
    """Parse ``--max-seconds`` and put it in force through ``RTQA_MAX_SECONDS`` (inherited by
    worker processes, like the memory budget)."""
    if value is None:
        return None
    try:
        seconds = parse_seconds(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    os.environ[SECONDS_ENV] = repr(seconds)
    return seconds


max_seconds_option = click.option(
    "--max-seconds",
    metavar="SECONDS",
    callback=_max_seconds,
    expose_value=False,
    help=f"Time budget per plan (default {DEFAULT_SECONDS:g}, or ${SECONDS_ENV}; 0 for none); a plan that takes "
    "longer is reported not evaluable and the others are checked.",
)


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)


def _load_protocol(name: str | None) -> Protocol:
    from rtqa.protocol.loader import load_protocol

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
