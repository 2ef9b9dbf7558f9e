"""The command line. Thin: parse options, call the library, render, map errors to exit codes.

Each command lives in its own module and registers itself on the ``rtqa`` group of
:mod:`rtqa.cli.app`.
"""

from __future__ import annotations

from rtqa.cli import check, dvh, rules
from rtqa.cli import ledger as ledger_commands  # noqa: F401  (registers review, history, diff, report, stats, ledger)
from rtqa.cli.app import cli

__all__ = ["check", "cli", "dvh", "main", "rules"]


def main() -> None:
    cli()
