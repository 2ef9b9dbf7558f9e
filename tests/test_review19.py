"""Review of issue 19: a grade that depends on the DVH end-cap convention is visible everywhere
(HTML plan page and index, exit-code bit 16), also through the candidates of an ambiguous
structure; ``rtqa dvh`` refuses non-finite numbers; a dose that pairs with no structure set says
why (its PatientID and FrameOfReferenceUID beside those of the structure sets found)."""

from __future__ import annotations

import re
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner

from fixtures import cases, nelms
from rtqa.cli import cli
from rtqa.dvh.expression import EndCap
from rtqa.evaluation.checks import constraints
from rtqa.protocol.limits import Grade
from tests.end_cap_protocols import SPHERE_PTV, write_protocol
from tests.test_eval_constraints import RULES, ctx, dvh

# -- a plan whose grade straddles a limit between conventions -----------------------------------
# sphere of 20 mm on 3 mm planes in a dose of 50 Gy + 1 Gy/mm along z (fixtures/phantoms.py): the
# top contour is at z = 18 mm, so Max is 68 Gy stopping there (none) and 69.5 Gy half a slab
# beyond (half_slab) -- tests/test_end_caps.py measures both


def _protocol(tmp_path: Path, end_cap: str, per_protocol: float, variation: float) -> str:
    return write_protocol(
        tmp_path,
        f"p_{per_protocol}_{variation}",
        end_cap,
        SPHERE_PTV
        + f"""\
constraints:
  - {{id: PTV_MAX, structure: PTV, metric: "Max[Gy]", per_protocol: "<= {per_protocol}",
     variation_acceptable: "<= {variation}", source: "test"}}
""",
    )


@pytest.fixture(scope="module")
def sphere(tmp_path_factory):
    out = tmp_path_factory.mktemp("caps")
    return cases.write_phantom_case(str(out), "sphere20", "zgrad", 3.0, 3.0)


def run(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.mark.parametrize(
    ("end_cap", "per_protocol", "variation", "extra", "expected"),
    [
        # none 68 <= 69 per protocol, half_slab 69.5 a variation: sensitive, the plan passes
        ("none", 69.0, 74.0, (), 16),
        # the same under --fail-on never: bit 16 stays (as 4 and 8 do)
        ("none", 69.0, 74.0, ("--fail-on", "never"), 16),
        # half_slab 69.5 > 69 a deviation, none 68 a variation: bits 1 and 16
        ("half_slab", 64.0, 69.0, (), 1 | 16),
        # every convention far under the limit: no flag (the bit comes from the flag)
        ("none", 80.0, 85.0, (), 0),
    ],
)
def test_exit_code_bit_16_says_a_grade_depends_on_the_end_cap(sphere, tmp_path, end_cap, per_protocol, variation,
                                                             extra, expected):  # fmt: skip
    res = run("check", sphere, "--protocol", _protocol(tmp_path, end_cap, per_protocol, variation), *extra)
    # + 8 in every case: without a clinical CSV the patient's eligibility is unknown
    assert res.exit_code == expected | 8, res.output
    assert ("Review: the grade of PTV_MAX depends on the DVH end-cap convention" in res.stdout) == bool(expected & 16)


def _finding_rows(page: str) -> list[tuple[str, str]]:
    """(finding row, the detail row right after it or '') of every finding of a plan page."""
    rows = re.findall(r"(<tr class='finding'.*?</tr>)(<tr class='detail'>.*?</tr>)?", page, flags=re.S)
    return [(a, b) for a, b in rows]


def test_the_html_plan_page_shows_the_review_line_and_each_conventions_value(sphere, tmp_path):
    page_path = tmp_path / "p.html"
    res = run("check", sphere, "--protocol", _protocol(tmp_path, "none", 69.0, 74.0), "--format", "html",
              "--output", page_path)  # fmt: skip
    assert res.exit_code == 16 | 8, res.output  # 8: eligibility unknown (no clinical CSV)
    page = page_path.read_text(encoding="utf-8")
    review = re.search(r"<p class='review' id='review'>(.*?)</p>", page)
    assert review and "PTV_MAX depends on the DVH end-cap convention" in review.group(1)
    # the head every printed page repeats says it too
    head = re.search(r"<div class='runhead'>(.*?)</div>", page, flags=re.S)
    assert head and "review: PTV_MAX" in head.group(1)
    (row, detail) = next((a, b) for a, b in _finding_rows(page) if "<td>PTV_MAX</td>" in a)
    assert "data-convention-sensitive='true'" in row and "convention-sensitive</span>" in row
    assert "PER PROTOCOL" in row  # graded with the protocol's convention, none
    # the per-convention values in a visible row (not only the hover title): none's 68 Gy and
    # half_slab's 69.5 Gy, each with its grade
    assert detail, "no detail row under a convention-sensitive finding"
    assert re.search(r"per protocol with none \(68\.\d\d Gy\)", detail)
    assert re.search(r"variation acceptable with half_slab \(69\.\d\d Gy\)", detail)
    # a finding graded alike under every convention has none of it
    plain = tmp_path / "plain.html"
    run("check", sphere, "--protocol", _protocol(tmp_path, "none", 80.0, 85.0), "--format", "html", "--output", plain)
    text = plain.read_text(encoding="utf-8")
    assert "id='review'" not in text and "data-convention-sensitive" not in text and "review:" not in text


def test_the_html_index_marks_the_plan_whose_grade_depends_on_the_end_cap(sphere, tmp_path):
    second = cases.write_phantom_case(str(tmp_path), "sphere20", "zgrad", 3.0, 3.0, tag="_b")  # another patient
    out = tmp_path / "html"
    res = run("check", sphere, second, "--protocol", _protocol(tmp_path, "none", 69.0, 74.0), "--format", "html",
              "--output", f"{out}/")  # fmt: skip
    assert res.exit_code == 16 | 8, res.output  # 8: eligibility unknown (no clinical CSV)
    index = (out / "index.html").read_text(encoding="utf-8")
    rows = re.findall(r"<tr data-grade=[^>]*>.*?</tr>", index, flags=re.S)
    assert len(rows) == 2
    for row in rows:
        assert "data-convention-sensitive='PTV_MAX'" in row and "⚑ depends on the end cap: PTV_MAX" in row
    assert "2 plan(s) marked ⚑ have a grade that depends on the DVH end-cap convention" in index
    text = run("check", sphere, second, "--protocol", _protocol(tmp_path, "none", 69.0, 74.0)).stdout
    summary = text[text.index("Summary:") :]
    assert summary.count("review: PTV_MAX depend(s) on the end cap") == 2


# -- ambiguous structures: the worst candidate under every convention ----------------------------
# STOMACH_MAX (<= 54 per protocol, <= 58 variation) on two candidate ROIs (5 and 4) graded
# under half_slab (the protocol's here) and none. dvh(40, hi) spreads 100 cc evenly over
# 40..hi Gy, so D0.03cc = hi - (hi - 40) * 0.03 / 100 (tests/test_eval_constraints.py):
# hi 50 -> 50.00 (per protocol), 55 -> 55.00 (variation), 56 -> 56.00 (variation),
# 60 -> 59.99 (deviation).

WHY = "2 ROIs match the one-ROI structure Stomach"


def _ambiguous(by_cap: dict[int, dict[EndCap, float]]):
    c = ctx({}, structure_rois={"Stomach": [5, 4]}, ambiguous={"Stomach": WHY})
    dvhs = {(roi,): {cap: dvh(40, hi) for cap, hi in caps.items()} for roi, caps in by_cap.items()}
    c.dvh_by_end_cap = lambda s, rois=(): dvhs[rois]
    (f,) = constraints.check(c, RULES["STOMACH_MAX"], {})
    return f, {e.end_cap: e for e in f.by_end_cap}


HS, NONE = EndCap.HALF_SLAB, EndCap.NONE


def test_a_tie_in_grade_keeps_the_other_candidates_convention_sensitivity():
    # both candidates per protocol under half_slab (a tie: worst() keeps the first, ROI 5, which
    # no convention changes); ROI 4 is a variation under none
    f, by = _ambiguous({5: {HS: 50, NONE: 50}, 4: {HS: 50, NONE: 56}})
    assert f.grade is Grade.PER_PROTOCOL and f.matched_roi == "STOMACH"
    assert by["half_slab"].grade is Grade.PER_PROTOCOL
    assert by["none"].grade is Grade.VARIATION_ACCEPTABLE and by["none"].value == pytest.approx(56.0, abs=0.01)
    assert f.convention_sensitive
    assert "variation acceptable with none (56.00 Gy)" in f.message
    assert f.message.endswith(f"({WHY}: STOMACH 50.00 Gy per protocol; Stomach 2 50.00 Gy per protocol)")


def test_a_candidate_worse_under_another_convention_flags_the_structure():
    # ROI 5 is worst under half_slab (a variation either way); ROI 4 passes under half_slab but
    # is a deviation under none: the worst grade depends on the convention
    f, by = _ambiguous({5: {HS: 55, NONE: 55}, 4: {HS: 50, NONE: 60}})
    assert f.grade is Grade.VARIATION_ACCEPTABLE and f.matched_roi == "STOMACH"
    assert (by["half_slab"].grade, by["none"].grade) == (Grade.VARIATION_ACCEPTABLE, Grade.DEVIATION_UNACCEPTABLE)
    assert f.convention_sensitive
    assert "convention-sensitive: variation acceptable with half_slab (55.00 Gy), deviation unacceptable with none " \
           "(59.99 Gy)" in f.message  # fmt: skip


def test_the_chosen_candidates_own_note_is_replaced_by_the_candidates_worst():
    # ROI 5 is itself sensitive (variation with half_slab, per protocol with none), but under none
    # ROI 4 is worse (a deviation): the message gives the worst of each convention, once
    f, by = _ambiguous({5: {HS: 55, NONE: 50}, 4: {HS: 50, NONE: 60}})
    assert by["none"].grade is Grade.DEVIATION_UNACCEPTABLE
    assert f.message.count("convention-sensitive") == 1
    assert "deviation unacceptable with none (59.99 Gy)" in f.message and "with none (50.00 Gy)" not in f.message


def test_candidates_that_differ_in_value_but_not_in_grade_are_not_flagged():
    # ROI 5 a variation under both (55.00, 55.50 Gy); ROI 4 per protocol under both
    f, by = _ambiguous({5: {HS: 55, NONE: 55.5}, 4: {HS: 50, NONE: 51}})
    assert not f.convention_sensitive and "convention-sensitive" not in f.message
    assert by["none"].value == pytest.approx(55.5 - 15.5 * 0.03 / 100, abs=0.01)  # ROI 5's, the worst there


# -- rtqa dvh: non-finite numbers are usage errors -------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "Infinity", "1e400"])
@pytest.mark.parametrize(("option", "expected"), [("--rx", "a prescription dose in Gy > 0"),
                                                  ("--alpha-beta", "an α/β in Gy > 0")])  # fmt: skip
def test_rtqa_dvh_refuses_non_finite_numbers(rsrd, option, expected, value):
    res = run("dvh", rsrd, option, value)
    assert res.exit_code == 2, res.output
    assert f"Invalid value for '{option}'" in res.output and f"expected {expected}, a finite number" in res.output


def test_a_memory_budget_beyond_a_float_is_a_usage_error_not_a_crash(rsrd):
    for command in (["dvh", rsrd], ["check", rsrd]):
        res = run(*command, "--max-memory", "9" * 400 + "G")
        assert res.exit_code == 2, res.output
        assert "Invalid value for '--max-memory'" in res.output and "is not a size" in res.output


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_rtqa_check_refuses_a_non_finite_time_budget(rsrd, value):
    res = run("check", rsrd, "--max-seconds", value)
    assert res.exit_code == 2 and "Invalid value for '--max-seconds'" in res.output


# -- rtqa dvh: why a dose pairs with no structure set ----------------------------------------------


def _unpaired(tmp_path: Path, edit) -> tuple[str, pydicom.Dataset, pydicom.Dataset]:
    """A structure set and a dose of the benchmark, the dose edited by ``edit``; returns the
    output of rtqa dvh and both datasets as written."""
    rs = nelms.write_structure(str(tmp_path), "Sphere", 2.0)
    rd = nelms.write_dose_grid(str(tmp_path), "2", "SI")
    ds = pydicom.dcmread(rd)
    edit(ds)
    ds.save_as(rd)
    res = run("dvh", str(tmp_path))
    assert res.exit_code == 4, res.output
    return res.output, ds, pydicom.dcmread(rs)


def _frame(rs: pydicom.Dataset) -> str:
    """A structure set's frame of reference, as written (its referenced frame)."""
    return str(rs.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID)


def test_a_dose_in_another_frame_of_reference_says_both_frames(tmp_path):
    def other_frame(ds):
        ds.FrameOfReferenceUID = "1.2.3.4.5"

    out, rd, rs = _unpaired(tmp_path, other_frame)
    assert "plan none" not in out and "it references no plan" in out
    assert f"the dose's PatientID {rd.PatientID!r} and FrameOfReferenceUID 1.2.3.4.5" in out
    assert f"RS_Sphere_2mm.dcm (PatientID {rs.PatientID!r}, FrameOfReferenceUID {_frame(rs)}: " \
           "another frame of reference)" in out  # fmt: skip


def test_a_dose_without_a_frame_of_reference_says_so(tmp_path):
    out, rd, rs = _unpaired(tmp_path, lambda ds: delattr(ds, "FrameOfReferenceUID"))
    assert "plan none" not in out
    assert f"the dose (PatientID {rd.PatientID!r}) has no FrameOfReferenceUID" in out
    assert f"FrameOfReferenceUID {_frame(rs)})" in out  # the structure set's, listed


def test_a_dose_of_another_patient_says_both_patient_ids(tmp_path):
    def other_patient(ds):
        ds.PatientID = "SOMEONE-ELSE"

    out, rd, rs = _unpaired(tmp_path, other_patient)
    assert "plan none" not in out
    assert f"the dose's PatientID 'SOMEONE-ELSE' and FrameOfReferenceUID {rd.FrameOfReferenceUID}" in out
    assert f"(PatientID {rs.PatientID!r}, FrameOfReferenceUID {_frame(rs)}: another patient)" in out
