"""Start-up: the version constant, and what the light commands import (issue 10).

No timings here (they live in bench/bench_cli.py): these tests check the causes instead,
namely which heavy libraries a fresh interpreter has imported after a command.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import rtqa

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("numpy", "scipy", "pydicom", "shapely")


def test_version_constant_equals_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert rtqa.__version__ == project["version"]


def _imported_after(*args: str) -> list[str]:
    probe = (
        "import json, sys\n"
        "from rtqa.cli import main\n"
        f"sys.argv = ['rtqa', *{list(args)!r}]\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    )
    return list(json.loads(done.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize(
    "args", [("--version",), ("--help",), ("check", "--help"), ("dvh", "--help"), ("rules", "show")]
)
def test_light_commands_import_no_heavy_library(args):
    assert _imported_after(*args) == []


def test_check_does_import_the_engine_when_it_runs(tmp_path):
    # the probe itself is sound: a command that computes does load numpy
    assert "numpy" in _imported_after("check", str(tmp_path))
