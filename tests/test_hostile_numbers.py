"""Issue 9, numbers that are not numbers: NaN, infinities, negative doses, 400-digit integers,
unsafe patterns and foreign encodings are clear input errors naming the file and attribute.

Each plan edit is checked beside an intact second patient: the JSON report is written, the
broken plan carries an error naming the file and attribute, the other plan is graded, and the
exit code is 4 (not evaluable), never 70.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from hostile_edits import DEMO_CLINICAL, DEMO_PATIENT, NUMBER_EDITS, demo_copy, edit, reidentify

from rtqa.cli import cli
from rtqa.errors import InputError
from rtqa.protocol.clinical import read_clinical_csv, read_clinical_table
from rtqa.protocol.loader import RULES_DIR, pattern_problem

INTACT_PATIENT = "HCC-INTACT"


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second, untouched patient (the demo plan under new UIDs)."""
    return reidentify(demo_copy(tmp_path_factory.mktemp("intact") / "intact"), INTACT_PATIENT)


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code != 70, result.output
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("name", sorted(NUMBER_EDITS))
def test_a_number_that_is_not_one_is_an_input_error_and_the_batch_goes_on(tmp_path, intact, name):
    which, change, attribute = NUMBER_EDITS[name]
    case = demo_copy(tmp_path / "case")
    path = edit(case, which, change)
    code, out, _ = run("check", str(case), str(intact), "--format", "json")
    assert code == 4 | 8  # not evaluable; no clinical CSV, so eligibility unknown
    plans = {p["patient_id"]: p for p in json.loads(out)["plans"]}
    broken, other = plans[DEMO_PATIENT], plans[INTACT_PATIENT]
    (error,) = broken["errors"]
    assert error["type"] in ("InputError", "DoseGridError")
    assert str(path) in error["message"] and attribute in error["message"]
    assert broken["grade"] == "not_evaluable"
    assert other["errors"] == [] and other["grade"] != "not_evaluable"


@pytest.mark.parametrize("name", ["DoseGridScaling NaN", "ContourData NaN", "TargetPrescriptionDose Inf"])
def test_rtqa_dvh_reports_the_same_errors(tmp_path, intact, name):
    which, change, attribute = NUMBER_EDITS[name]
    case = demo_copy(tmp_path / "case")
    edit(case, which, change)
    code, out, _ = run("dvh", str(case), "--format", "json", "--structure", "Liver")
    assert code == 4
    (plan,) = json.loads(out)["plans"]
    assert attribute in plan["error"]


# ----------------------------------------------------------------------------------------------
# protocols

HUGE = "1" + "0" * 400


@pytest.mark.parametrize(
    ("old", "new", "line", "problem"),
    [
        ("tolerance_pct: 1,", f"tolerance_pct: {HUGE},", 24, "positive number"),
        ("value: 2.0,", "value: .nan,", 24, "positive number"),
        ("variation_pct: 5 ", "variation_pct: .inf ", 26, "variation_pct"),
        ("range: [40, 60]", "range: [.nan, 60]", 26, "low <= high"),
        ('per_protocol: ">= 100"', f'per_protocol: ">= {HUGE}"', 68, "too large to be a limit"),
        (
            r"patterns: ['PTV[ _]?\d{2,4}(Gy|cGy)?', 'PTV[ _]?[pvn]\d?']",
            "patterns: ['(a|a)*b']",
            37,
            "alternation inside a repeated group",
        ),
    ],
)
def test_protocols_with_numbers_that_are_not_numbers_or_unsafe_patterns_are_invalid(tmp_path, old, new, line, problem):
    for name in ("nct03535259.yaml", "tg263_aliases.yaml"):
        shutil.copy(Path(RULES_DIR) / name, tmp_path / name)
    path = tmp_path / "nct03535259.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    code, _, err = run("rules", "validate", str(path))
    assert code == 2
    assert f"nct03535259.yaml:{line}:" in err and problem in err
    assert len(err) < 2000  # the 400 digits are not echoed whole


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(a+)+b", "quantifier inside a repeated group"),
        ("(a?)*b", "quantifier inside a repeated group"),
        (".*PTV.*", "2 unbounded quantifiers"),
        (r"(\w)\1", "backreference"),
        ("(?!x)PTV", "lookahead"),
        ("a{0,9}" * 4, "combinations"),
        ("P" * 201, "201 characters"),
    ],
)
def test_backtracking_prone_patterns_are_refused(pattern, problem):
    assert problem in (pattern_problem(pattern) or "")


@pytest.mark.parametrize("pattern", [r"PTV[ _]?\d{2,4}(Gy|cGy)?", r"GTV[ _]?[pvn]\d?", "PTV.*", "(ab)*c", r"z?PTV_\d+"])
def test_patterns_of_the_safe_subset_are_accepted(pattern):
    assert pattern_problem(pattern) is None


# ----------------------------------------------------------------------------------------------
# clinical facts

ROWS = "patient_id,child_pugh,dose_algorithm,motion_management,rx_PTVp\nHCC-CLEAN,A5,AAA,{motion},50\n"


def test_a_utf16_clinical_csv_with_bom_is_read_as_its_utf8_twin(tmp_path):
    text = ROWS.format(motion="compresión abdominal")
    (tmp_path / "u8.csv").write_text(text, encoding="utf-8")
    (tmp_path / "u16.csv").write_text(text, encoding="utf-16")  # Python writes the BOM
    assert read_clinical_csv(tmp_path / "u16.csv") == read_clinical_csv(tmp_path / "u8.csv")
    assert read_clinical_csv(tmp_path / "u16.csv")["HCC-CLEAN"].motion_management == "compresión abdominal"


@pytest.mark.parametrize(("encoding", "motion"), [("gb18030", "腹部压迫"), ("cp1252", "compresión abdominal")])
def test_a_clinical_csv_in_another_encoding_is_refused_with_exit_2(tmp_path, encoding, motion):
    clinical = tmp_path / "clinical.csv"
    clinical.write_bytes(ROWS.format(motion=motion).encode(encoding))
    with pytest.raises(InputError, match=r"line 2: byte 0x[0-9A-F]{2} at offset \d+ is not UTF-8"):
        read_clinical_csv(clinical)
    code, _, err = run("check", str(tmp_path), "--clinical", str(clinical))
    assert code == 2
    assert "is not UTF-8" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-50"])
def test_clinical_prescriptions_that_are_not_positive_finite_numbers_are_refused(tmp_path, value):
    # a bad cell never stops the run (issue 17): the value is never used, and a warning names it
    clinical = tmp_path / "clinical.csv"
    clinical.write_text(ROWS.format(motion="none").replace(",50\n", f",{value}\n"), encoding="utf-8")
    table = read_clinical_table(clinical)
    assert all(f.prescriptions_gy == {} for f in table.facts.values())
    assert any(
        w.startswith(f"clinical.csv, row 2, column rx_PTVp: '{value}' is not allowed (a positive dose in Gy)")
        for w in table.warnings
    ), table.warnings


def test_the_demo_clinical_csv_still_reads():
    assert read_clinical_csv(DEMO_CLINICAL)["HCC-CLEAN"].child_pugh == "A5"
