"""The HTML report opened in a real headless browser (Debian's chromium; ``pytest -m browser``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from rtqa.cli import cli
from tests.conftest import case

pytestmark = pytest.mark.browser
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium (.ci/run installs it)")
    return path


@pytest.fixture(scope="module")
def page(liver_tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("html") / "plan.html"
    result = CliRunner().invoke(
        cli, ["check", case(liver_tree, "liver_cord_overdose"), "--format", "html", "--output", str(out)]
    )
    assert result.exit_code == 1 | 4 | 8 and out.exists()  # no clinical CSV: facts and eligibility unknown
    assert "http://" not in out.read_text() and "https://" not in out.read_text()  # self-contained
    return out


def test_rendered_dom_has_the_dvh_plot_and_findings(page, tmp_path):
    proc = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    assert '<svg id="dvh"' in dom and dom.count('class="curve"') >= 10
    assert '<table id="findings">' in dom and "CORD_MAX" in dom and "DEVIATION UNACCEPTABLE" in dom


def test_screenshot_is_not_blank(page, tmp_path):
    shot = tmp_path / "page.png"
    proc = subprocess.run(
        [
            chromium(),
            *FLAGS,
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1100,1600",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and shot.exists(), proc.stderr[-2000:]
    # a blank 1100 x 1600 page compresses to a few kB; text, tables and colours do not
    assert shot.stat().st_size > 40_000
