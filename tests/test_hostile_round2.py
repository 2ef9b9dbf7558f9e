"""Issue 18, hostile input round 2: the whole plan within a time and memory budget, numbers that
stay finite, and no injection in any renderer.

Each input is a builder of tests/hostile_round2.py at a small size (a second or two here);
bench/stress_bombs.py runs the sizes of the issue's findings and prints time and peak memory.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser

import numpy as np
import pydicom
import pytest
import shapely
from click.testing import CliRunner
from hostile_edits import DEMO_PATIENT, FILES, demo_copy, edit, reidentify
from hostile_round2 import (
    beam_dose_edit,
    beam_doses,
    deflated_with_pad,
    mlc_control_points,
    rx_edit,
    squares_on_cord,
    stored_dvh_items,
    zeros_file,
)
from shapely.geometry import Polygon

from rtqa.cli import cli
from rtqa.deadline import TimeBudgetExceeded, check_time, time_budget
from rtqa.discovery.batch import run_batch
from rtqa.discovery.grouping import discover
from rtqa.discovery.load import load_case
from rtqa.dvh.geometry import Slab, _rings_area, coincident_rings
from rtqa.dvh.grid import sum_doses
from rtqa.errors import DoseGridError
from rtqa.evaluation.casedvh import review_stored_dvhs
from rtqa.io import read_dose, read_plan, read_stored_dvhs, read_structure_set
from rtqa.io.common import NotDicomError, open_dataset, require_bounded_inflation
from rtqa.protocol.loader import load_protocol
from rtqa.report.text_cells import clean

# ----------------------------------------------------------------------------------------------
# time


def test_a_deflated_structure_set_followed_by_a_pad_byte_is_read(tmp_path):
    # the inflation check looped forever on the pad byte after the end of the stream; under a
    # time budget a regression fails here instead of hanging the suite
    case = demo_copy(tmp_path / "case")
    path = deflated_with_pad(case)
    with time_budget(30):
        require_bounded_inflation(str(path))
        ss = read_structure_set(path)
    assert "SpinalCord" in {r.name for r in ss.rois}


def test_a_file_of_zeros_is_refused_before_pydicom_walks_it(tmp_path):
    case = demo_copy(tmp_path / "case")
    zeros = zeros_file(case, 8 * 1024**2)
    with pytest.raises(NotDicomError, match="group 0000"):
        open_dataset(zeros)
    found = discover([str(case)])  # ignored as not DICOM, the plan found as before
    assert len(found.plan_sets) == 1 and not found.unassigned
    # a Part-10 file whose data set is zeros is DICOM that cannot be read: said so, not ignored
    part10 = case / "part10_zeros.dcm"
    meta = (case / FILES["plan"]).read_bytes()
    ds = pydicom.dcmread(case / FILES["plan"], stop_before_pixels=True)
    start = 132 + 12 + ds.file_meta.FileMetaInformationGroupLength
    part10.write_bytes(meta[:start] + bytes(1 << 20))
    with pytest.raises(Exception, match="Command group"):
        open_dataset(part10)


def _pairwise_area(rings):
    """The parity area as computed before the spatial index: every ring against every other."""
    polys = [Polygon(r) for r in rings]
    area = 0.0
    for i, p in enumerate(polys):
        rp = p.representative_point()
        depth = sum(
            1
            for j, q in enumerate(polys)
            if j != i and q.contains(rp) and (q.area > p.area or (q.area == p.area and j < i))
        )
        area += -abs(p.area) if depth % 2 else abs(p.area)
    return area


def _square(x, y, side):
    return np.array([[x, y], [x + side, y], [x + side, y + side], [x, y + side]], dtype=float)


def test_indexed_parity_area_equals_the_pairwise_one():
    rng = np.random.default_rng(18)
    # nested squares (holes and islands), disjoint squares, and one outline drawn twice
    rings = [_square(0, 0, 100), _square(10, 10, 50), _square(20, 20, 10), _square(200, 0, 5), _square(200, 0, 5)]
    rings += [_square(x, y, s) for x, y, s in rng.uniform([300, 0, 1], [600, 300, 8], size=(200, 3))]
    assert _rings_area(tuple(rings)) == pytest.approx(_pairwise_area(rings), rel=1e-12)
    # by hand: 100^2 - 50^2 + 10^2 = 7600 for the nest; the twice-drawn square cancels
    nest = (_square(0, 0, 100), _square(10, 10, 50), _square(20, 20, 10), _square(200, 0, 5), _square(200, 0, 5))
    assert _rings_area(nest) == pytest.approx(7600.0)


def test_region_of_grouped_rings_equals_the_fold_over_every_ring():
    rng = np.random.default_rng(7)
    rings = [_square(0, 0, 40), _square(5, 5, 10), _square(30, 30, 20)]  # overlapping: one group
    rings += [_square(x, y, 2.0) for x, y in rng.uniform(100, 400, size=(150, 2))]
    fold = Polygon(rings[0])
    for r in rings[1:]:
        fold = fold.symmetric_difference(Polygon(r))
    region = Slab(0.0, 1.0, tuple(rings)).region()
    assert region.area == pytest.approx(fold.area, rel=1e-12)
    assert shapely.equals_exact(shapely.normalize(region), shapely.normalize(fold), tolerance=1e-9) or (
        region.symmetric_difference(fold).area < 1e-9
    )


def test_coincident_rings_are_found_among_many_disjoint_ones():
    many = tuple(_square(3.0 * i, 0, 2.0) for i in range(400))
    assert not coincident_rings(many)
    assert coincident_rings((*many, many[123][::-1]))  # one outline drawn again, reversed


def test_many_squares_on_the_cord_are_checked(tmp_path):
    case = demo_copy(tmp_path / "case")
    squares_on_cord(case, 300, one_plane=True)
    result = CliRunner().invoke(cli, ["check", str(case), "--format", "json"])
    assert result.exit_code != 70, result.output
    plan = json.loads(result.output)["plans"][0]
    assert not plan["errors"]


def test_stored_dvhs_are_compared_once_per_roi_and_only_for_rois_the_report_uses(tmp_path):
    case = demo_copy(tmp_path / "case")
    stored_dvh_items(case, 40, "Body")
    ss = read_structure_set(case / FILES["structures"])
    dose = read_dose(case / FILES["dose"])
    stored = read_stored_dvhs(case / FILES["dose"])
    body = next(r.number for r in ss.rois if r.name == "Body")
    assert len(stored) == 40
    used = review_stored_dvhs(ss, [], stored, grid_max_gy=dose.max_gy, dose=dose, roi_numbers={body})
    assert "39 stored DVH(s) name an ROI an earlier stored DVH already names: only the first compared" in used
    # the one comparison made: 1000 cc stored against Body's real volume
    assert sum("stored DVH of 'Body': volume" in w for w in used) == 1
    unused = review_stored_dvhs(ss, [], stored, grid_max_gy=dose.max_gy, dose=dose, roi_numbers=set())
    assert "40 stored DVH(s) of ROIs this report does not use: not compared" in unused
    assert not any("stored DVH of 'Body'" in w for w in unused)


def test_time_budget_interrupts_a_loop_in_the_main_thread():
    start = time.monotonic()
    with pytest.raises(TimeBudgetExceeded, match=r"more than 0\.2 s"), time_budget(0.2):
        while True:
            sum(range(1000))
    assert time.monotonic() - start < 5


def test_time_budget_is_checked_between_steps_in_other_threads():
    outcome = []

    def work():
        try:
            with time_budget(0.1):
                while True:
                    time.sleep(0.01)
                    check_time()
        except TimeBudgetExceeded as exc:
            outcome.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join(10)
    assert outcome and outcome[0].seconds == 0.1


def test_a_plan_over_its_time_budget_is_not_evaluable_and_the_batch_goes_on(tmp_path, monkeypatch):
    demo_copy(tmp_path / "a")
    reidentify(demo_copy(tmp_path / "b"), "HCC-OTHER")
    found = discover([str(tmp_path)])
    protocol = load_protocol(None)
    monkeypatch.setenv("RTQA_MAX_SECONDS", "0.001")
    reports = run_batch(found.plan_sets, protocol)
    assert len(reports) == 2
    for r in reports:
        assert r.errors[0]["type"] == "TimeBudgetExceeded"
        assert "time budget" in r.errors[0]["message"] and not r.complete
    monkeypatch.setenv("RTQA_MAX_SECONDS", "0")  # no budget: the same plan is checked
    assert not run_batch(found.plan_sets[:1], protocol)[0].errors


def test_max_seconds_is_checked_by_the_cli(tmp_path, monkeypatch):
    monkeypatch.setenv("RTQA_MAX_SECONDS", "300")  # the option sets it: restored after the test
    case = demo_copy(tmp_path / "case")
    bad = CliRunner().invoke(cli, ["check", str(case), "--max-seconds", "-1"])
    assert bad.exit_code == 2 and "seconds >= 0" in bad.output
    slow = CliRunner().invoke(cli, ["check", str(case), "--max-seconds", "0.001", "--format", "json"])
    plan = json.loads(slow.output)["plans"][0]
    assert slow.exit_code & 4 and plan["errors"][0]["type"] == "TimeBudgetExceeded"


# ----------------------------------------------------------------------------------------------
# memory


def test_beam_doses_summed_one_at_a_time_give_the_same_bits(tmp_path):
    case = demo_copy(tmp_path / "case")
    beam_doses(case, 5)
    (plan_set,) = discover([str(case)]).plan_sets
    loaded = load_case(plan_set)
    assert loaded.dose_choice.source == "BEAM sum (5 files)"
    order = [os.path.basename(i.path) for i, _ in loaded.dose_choice.parts]
    every = [read_dose(case / name) for name in order]
    np.testing.assert_array_equal(loaded.dose.dose_gy, sum_doses(every).dose_gy)


def test_the_memory_budget_is_the_plans_not_one_grids(tmp_path, monkeypatch):
    case = demo_copy(tmp_path / "case")
    beam_doses(case, 3)
    (plan_set,) = discover([str(case)]).plan_sets
    voxels = read_dose(next(case.glob("RD_BEAM*.dcm"))).dose_gy.size
    # one grid read and prepared takes 72 bytes a voxel (rtqa/dvh/budget.py): a budget of 75
    # fits one grid, not one grid beside the 8-byte sum of the others
    monkeypatch.setenv("RTQA_MAX_MEMORY", str(75 * voxels))
    with pytest.raises(DoseGridError, match=r"beside the .* the plan already holds"):
        load_case(plan_set)
    monkeypatch.setenv("RTQA_MAX_MEMORY", str(81 * voxels))
    assert load_case(plan_set).dose is not None


def test_mlc_control_points_are_compared_without_keeping_them(tmp_path):
    case = demo_copy(tmp_path / "case")
    mlc_control_points(case, 400)
    beam = read_plan(case / FILES["plan"]).beams[0]
    assert beam.control_point_count == 400 and beam.mlc_modulated

    def still(ds):
        for cp in ds.BeamSequence[0].ControlPointSequence:
            cp.BeamLimitingDevicePositionSequence[0].LeafJawPositions = ["-30"] * 60 + ["30"] * 60

    edit(case, "plan", still)
    assert not read_plan(case / FILES["plan"]).beams[0].mlc_modulated


_MEMORY_SCRIPT = """
import resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from rtqa.cli import main
sys.argv = ["rtqa", "check", sys.argv[2], "--format", "json", "--max-memory", "64G"]
main()
"""


def test_a_plan_out_of_memory_is_its_own_report_and_the_batch_goes_on(tmp_path):
    # a real MemoryError, not a mock: the budget is lifted (64G) and the address space limited
    # to 640 MiB (the demo plan's check peaks near 220 MiB), so that preparing a 9.8M-voxel
    # dose (48 bytes a voxel once prepared: 470 MB) fails in one plan only
    demo_copy(tmp_path / "small")
    big = reidentify(demo_copy(tmp_path / "big"), "HCC-BIG")
    beam_doses(big, 1, shape=(90, 330, 330))
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(640 * 1024**2), str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode != 70, proc.stderr[-2000:]
    plans = {p["patient_id"]: p for p in json.loads(proc.stdout)["plans"]}
    assert plans[DEMO_PATIENT]["errors"] == [] and plans[DEMO_PATIENT]["findings"]
    (error,) = plans["HCC-BIG"]["errors"]
    assert error["type"] == "MemoryError" and "ran out of memory" in error["message"]
    assert all(len(i["sha256"]) == 64 for i in plans["HCC-BIG"]["inputs"])


# ----------------------------------------------------------------------------------------------
# numbers


_NON_FINITE = re.compile(r"\b(inf|infinity|nan)\b", re.IGNORECASE)


_ABSURD = [
    pytest.param(beam_dose_edit, "1e308", id="BeamDose 1e308"),
    pytest.param(rx_edit, "1e-320", id="prescription 1e-320"),
    pytest.param(rx_edit, "5000", id="prescription 5000 Gy"),
]


# every absurd input through the fast renderers; through the slow HTML renderer (images), the
# overflowing BeamDose and one absurd prescription are enough
@pytest.mark.parametrize(
    ("change", "value", "fmt"),
    [pytest.param(*p.values, fmt, id=f"{fmt}-{p.id}") for fmt in ("json", "csv", "text") for p in _ABSURD]
    + [pytest.param(*p.values, "html", id=f"html-{p.id}") for p in _ABSURD[:2]],
)
def test_absurd_numbers_reach_no_renderer(tmp_path, change, value, fmt):
    case = demo_copy(tmp_path / "case")
    change(case, value)
    result = CliRunner().invoke(cli, ["check", str(case), "--format", fmt])
    assert result.exit_code not in (2, 70), result.output
    assert not _NON_FINITE.search(result.output), _NON_FINITE.search(result.output)
    if fmt == "json":
        plan = json.loads(result.output)["plans"][0]
        graded = {f["rule"]: f for f in plan["findings"]}
        # the absurd source is never taken as agreeing with the others
        assert graded["RX_AGREEMENT"]["grade"] == "not_evaluable"
        if change is rx_edit:  # the most trusted source is absurd: nothing relative to it is graded
            assert plan["prescription"]["total_gy"] is None
            assert graded["PTV_D95"]["grade"] == "not_evaluable"


def test_json_writers_refuse_non_finite_numbers():
    with pytest.raises(ValueError, match="Out of range float"):
        json.dumps({"v": float("inf")}, allow_nan=False)
    import inspect

    from rtqa.ledger import render as ledger_render
    from rtqa.report import dvh_tables, render

    for module in (render, dvh_tables, ledger_render):
        for call in re.findall(r"json\.dumps\([^\n]*", inspect.getsource(module)):
            assert "allow_nan=False" in call, (module.__name__, call)


# ----------------------------------------------------------------------------------------------
# injection


_HOSTILE = "X'\" onmouseover='alert(1)' <b>\nGrade: PER PROTOCOL"


def _hostile_case(tmp_path):
    case = demo_copy(tmp_path / "case")

    def plan(ds):
        ds.RTPlanLabel = "L" + _HOSTILE[:12]  # a short string (SH, 16 characters in the standard)
        ds.InstitutionName = '=HYPERLINK("x")\'" <b>\nGrade: PER PROTOCOL'  # within LO's 64

    def structures(ds):
        for r in ds.StructureSetROISequence:
            if r.ROIName == "Bowel_Small":
                r.ROIName = "Bowel_Small" + _HOSTILE

    edit(case, "plan", plan)
    edit(case, "structures", structures)
    return case


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.attrs: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.attrs.update(name for name, _ in attrs)
        self.text.extend(v or "" for _, v in attrs)

    def handle_data(self, data):
        self.text.append(data)


def test_html_attributes_and_text_keep_quotes_and_brackets_as_text(tmp_path):
    case = _hostile_case(tmp_path)
    out = tmp_path / "html"
    result = CliRunner().invoke(cli, ["check", str(case), "--format", "html", "--output", f"{out}/"])
    assert result.exit_code != 70, result.output
    label = pydicom.dcmread(case / FILES["plan"]).RTPlanLabel
    institution = pydicom.dcmread(case / FILES["plan"]).InstitutionName
    for page in out.glob("*.html"):
        parser = _Collect()
        parser.feed(page.read_text(encoding="utf-8"))
        assert "onmouseover" not in parser.attrs, page.name  # no attribute broke out of its quotes
        assert any(label in t for t in parser.text), page.name  # the label, unchanged, as text
        assert any("<b>" in t for t in parser.text), page.name  # a bracket stays text, never a tag
    index = _Collect()
    index.feed((out / "index.html").read_text(encoding="utf-8"))
    assert institution in index.text  # data-institution holds the name unchanged


def test_text_reports_show_control_characters_escaped(tmp_path):
    case = _hostile_case(tmp_path)
    for args in (["check", str(case)], ["dvh", str(case)]):
        out = CliRunner().invoke(cli, args).output
        assert not any(line.startswith("Grade: PER PROTOCOL") for line in out.splitlines()), args
        assert "\\nGrade: PER PROTOCOL" in out, args
    assert clean("a\u202eb\u2028c\x1b[31m") == "a\\u202eb\\u2028c\\x1b[31m"


def test_ledger_renderers_escape_and_neutralise(tmp_path):
    case = _hostile_case(tmp_path)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    runner = CliRunner(env={"RTQA_LEDGER": url})
    assert runner.invoke(cli, ["check", str(case), "--ledger", url]).exit_code != 70
    reason = "fine\nGrade: PER PROTOCOL"
    review = runner.invoke(cli, ["review", "1", "--reject-plan", "--reason", reason, "--reviewer", "R"])
    assert review.exit_code == 0, review.output
    assert len(review.output.splitlines()) == 1 and "fine\\nGrade: PER PROTOCOL" in review.output
    for args in (["history", DEMO_PATIENT], ["report", "1"], ["stats"], ["stats", "--by", "institution"]):
        out = runner.invoke(cli, args).output
        assert not any(line.lstrip().startswith("Grade: PER PROTOCOL") for line in out.splitlines()), (args, out)
    assert "\\nGrade: PER PROTOCOL" in runner.invoke(cli, ["history", DEMO_PATIENT]).output
    csv_out = runner.invoke(cli, ["stats", "--by", "institution", "--format", "csv"]).output
    assert "\n=HYPERLINK" not in csv_out and "'=HYPERLINK" in csv_out


def test_an_output_hard_linked_to_an_input_is_refused_even_with_force(tmp_path):
    case = demo_copy(tmp_path / "case")
    plan = case / FILES["plan"]
    before = plan.read_bytes()
    link = tmp_path / "report.json"
    os.link(plan, link)
    for args in (
        ["check", str(case), "--format", "json", "--output", str(link), "--force"],
        ["dvh", str(case), "--output", str(link)],
    ):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2 and "is an input file" in result.output, args
    assert plan.read_bytes() == before
