"""The command line. Thin: parse options, call the library, render, map errors to exit codes.

Each command lives in its own module and registers itself on the ``rtqa`` group of
:mod:`rtqa.cli.app`; the group imports a command's module only when that command is asked
for (or listed by ``--help``), and the modules import the library inside their command
functions, so ``rtqa --version`` and ``rtqa --help`` start without numpy, scipy or pydicom.
"""

from __future__ import annotations

from rtqa.cli.app import cli

__all__ = ["cli", "main"]


def main() -> None:
    cli()
