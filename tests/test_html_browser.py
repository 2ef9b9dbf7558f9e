"""The HTML report opened in a real headless browser (Debian's chromium; ``pytest -m browser``),
printed to A4 and read back with Debian's poppler-utils (pdftotext, pdftoppm), as a reviewer
would see and print it. ``.ci/run`` installs both.

``RTQA_README_PICTURE=docs/plan-page.png pytest -m browser`` also writes the small picture of
a plan page that the README shows.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
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
A4_PT = (595.0, 842.0)  # ISO 216 A4, 210 x 297 mm, in PostScript points (1/72 in)
GRADE_WORDS = ("PER", "VARIATION", "DEVIATION", "NOT")


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is needed: apt-get install chromium poppler-utils (.ci/run installs them)")
    return path


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("headless Chromium is needed: apt-get install chromium (.ci/run installs it)")
    return path


def browse(url: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [chromium(), *FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def audit(liver_tree, tmp_path_factory) -> Path:
    """An audit folder: a plan with a cord deviation (no CT), the clean plan (with CT), and a plan
    that cannot be read (dose and contours in different frames of reference)."""
    out = tmp_path_factory.mktemp("html") / "audit"
    names = ("liver_cord_overdose", "liver_clean", "liver_for_mismatch")
    result = CliRunner().invoke(
        cli, ["check", *(case(liver_tree, n) for n in names), "--format", "html", "--output", f"{out}/"]
    )
    assert result.exit_code == 1 | 4 | 8, result.output  # no clinical CSV: facts and eligibility unknown
    for page in out.glob("*.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text  # self-contained: no network
    return out


def page_of(audit: Path, patient: str) -> Path:
    (page,) = audit.glob(f"*_{patient}_*.html")
    return page


class Dom(HTMLParser):
    """The parts of the rendered DOM the tests look at."""

    def __init__(self) -> None:
        super().__init__()
        self.finding_grades: list[str] = []
        self.views: list[dict[str, str]] = []
        self.legend_items_per_view: list[int] = []
        self.limit_marks: list[str] = []
        self.limit_labels = 0
        self.limit_legend = 0
        self.plan_rows: list[dict[str, str]] = []
        self._in_view_legend = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        classes = a.get("class", "").split()
        if tag == "tr" and "finding" in classes:
            self.finding_grades.append(a["data-grade"])
        if tag == "figure" and "view" in classes:
            self.views.append(a)
            self.legend_items_per_view.append(0)
        if tag == "div" and "legend" in classes:
            self._in_view_legend = True
        if tag == "span" and "item" in classes and self._in_view_legend:
            self.legend_items_per_view[-1] += 1
        if tag == "g" and "limit" in classes:
            self.limit_marks.append(a["data-rule"])
        if tag == "text" and "limit-label" in classes:
            self.limit_labels += 1
        if tag == "li" and "limit-legend" in classes:
            self.limit_legend += 1
        if tag == "tr" and "data-grade" in a and "data-institution" in a:
            self.plan_rows.append(a)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure":
            self._in_view_legend = False


def dom_of(url: str, profile: Path) -> tuple[Dom, str]:
    text = browse(url, profile, "--dump-dom").stdout
    dom = Dom()
    dom.feed(text)
    return dom, text


def test_plan_page_dom_views_order_and_limits(audit, tmp_path):
    dom, text = dom_of(page_of(audit, "HCC-CORD").as_uri(), tmp_path / "profile")
    # deviations and not-evaluable findings first, then the rest
    first = {"deviation_unacceptable", "not_evaluable"}
    flags = [g in first for g in dom.finding_grades]
    assert "deviation_unacceptable" in dom.finding_grades
    assert flags == sorted(flags, reverse=True), dom.finding_grades
    # views: each target's three planes and the cord's (its hottest point), each with a legend
    subjects = [v["data-subject"] for v in dom.views]
    assert subjects.count("SpinalCord") == 3 and {"PTVp", "PTVv", "PTVn"} <= set(subjects)
    assert all(n >= 4 for n in dom.legend_items_per_view)  # 3 isodoses at least and a contour
    assert all(v["data-plane"] in ("axial", "coronal", "sagittal") for v in dom.views)
    assert text.count("data:image/png;base64,") == len(dom.views)
    # every limit drawn on the DVH carries a label on the plot and a line in the legend
    assert "CORD_MAX" in dom.limit_marks
    assert len(dom.limit_marks) == dom.limit_labels == dom.limit_legend
    # the hottest point of the cord is printed with the finding
    assert re.search(r"Hottest point at x -?\d+\.\d, y \d+\.\d, z -?\d+\.\d mm", text)


def test_unreadable_plan_page_lists_files_and_reason_in_plain_words(audit, tmp_path):
    _, text = dom_of(page_of(audit, "HCC-FOR").as_uri(), tmp_path / "profile")
    inputs = re.search(r'<table id="inputs">(.*?)</table>', text, re.S)
    assert inputs is not None
    rows = re.findall(
        r"<tr><td>(RTPLAN|RTSTRUCT|RTDOSE)</td><td>[^<]+</td><td[^>]*>([\d.]+)</td>"
        r"<td[^>]*>([0-9a-f]{64})</td></tr>",
        inputs.group(1),
    )
    assert {r[0] for r in rows} == {"RTPLAN", "RTSTRUCT", "RTDOSE"}
    assert "Why this plan could not be checked" in text and "FrameOfReferenceUID" in text
    for internal in ("InputError", "DiscoveryProblem", "RtqaError", "Traceback"):
        assert internal not in text
    assert "- Gy in - fractions" not in text


def test_index_has_failed_rules_and_working_filters(audit, tmp_path):
    dom, text = dom_of((audit / "index.html").as_uri(), tmp_path / "p1")
    assert len(dom.plan_rows) == 3 and "<th>failed rules</th>" in text
    assert re.search(r"class=\"failed\">.*CORD_MAX", text)
    # a preset filter (the same script the select boxes run) hides the other grades
    filtered, _ = dom_of((audit / "index.html").as_uri() + "#grade=deviation_unacceptable", tmp_path / "p2")
    shown = [r["data-grade"] for r in filtered.plan_rows if "display: none" not in r.get("style", "")]
    assert shown == ["deviation_unacceptable"]


def test_screenshot_at_1200_px(audit, tmp_path):
    shot = tmp_path / "page.png"
    browse(page_of(audit, "HCC-CORD").as_uri(), tmp_path / "profile", "--window-size=1200,1600", f"--screenshot={shot}")
    # a blank 1200 x 1600 page compresses to a few kB; text, tables and colours do not
    assert shot.exists() and shot.stat().st_size > 40_000
    picture = os.environ.get("RTQA_README_PICTURE")
    if picture:
        browse(
            page_of(audit, "HCC-CORD").as_uri(),
            tmp_path / "profile",
            "--window-size=1200,1500",
            "--force-device-scale-factor=0.5",
            f"--screenshot={Path(picture).resolve()}",
        )


def words_per_page(pdf: Path) -> list[tuple[float, list[tuple[str, float, float]]]]:
    """(page width, [(word, xMin, xMax)]) of every page, from pdftotext -bbox-layout."""
    xml = subprocess.run(
        [tool("pdftotext"), "-bbox-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    pages = []
    for m in re.finditer(r'<page width="([\d.]+)" height="[\d.]+">(.*?)</page>', xml, re.S):
        words = [
            (w.group(3), float(w.group(1)), float(w.group(2)))
            for w in re.finditer(
                r'<word xMin="([\d.]+)" yMin="[\d.]+" xMax="([\d.]+)" yMax="[\d.]+">([^<]*)</word>', m.group(2)
            )
        ]
        pages.append((float(m.group(1)), words))
    return pages


def test_a4_print_keeps_the_grade_column_and_the_header(audit, tmp_path):
    pdf = tmp_path / "page.pdf"
    page = page_of(audit, "HCC-CORD")
    browse(page.as_uri(), tmp_path / "profile", "--no-pdf-header-footer", f"--print-to-pdf={pdf}")
    pages = words_per_page(pdf)
    assert len(pages) >= 2
    for width, words in pages:
        assert abs(width - A4_PT[0]) < 2  # A4 portrait
        assert all(x1 <= width for _, _, x1 in words)  # nothing runs off the right edge
        text = " ".join(w for w, _, _ in words)
        # the running head: patient, plan, protocol and grade on every printed page
        assert "HCC-CORD" in text and "NCT03535259" in text and "DEVIATION UNACCEPTABLE" in text
    first = pages[0][1] + pages[1][1]
    grade_heads = [(x0, x1) for w, x0, x1 in first if w == "grade"]
    assert len(grade_heads) >= 2  # the running head's "grade" and the findings table's column
    grades = [(w, x1) for w, _, x1 in first if w in GRADE_WORDS]
    assert sum(1 for w, _ in grades if w == "DEVIATION") >= 2  # the head and the CORD_MAX row
    # every grade label ends inside the printed page, right margin included (10 mm = 28 pt)
    assert all(x1 <= A4_PT[0] - 28 for _, x1 in grades)
    # and the printed page really has pixels on it: the first page rendered by pdftoppm
    subprocess.run(
        [tool("pdftoppm"), "-png", "-r", "50", "-f", "1", "-l", "1", str(pdf), str(tmp_path / "p")], check=True
    )
    (png,) = tmp_path.glob("p-*.png")
    assert png.stat().st_size > 20_000


def test_plan_page_size_is_stated(audit):
    """The README states it: a plan page with 9 views stays under 2 MB."""
    page = page_of(audit, "HCC-CLEAN")
    assert page.read_text().count("class='view'") == 9
    assert page.stat().st_size <= 2_000_000
