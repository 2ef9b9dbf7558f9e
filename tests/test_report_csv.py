"""CSV reports: formula injection neutralised (OWASP), a byte-order mark for Excel, and the
columns of plans.csv a QA office asked for (deviation and variation ids, protocol identity,
approval, time of the check)."""

from __future__ import annotations

import csv
import datetime
import io
import json
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from fixtures import cases
from rtqa.cli import cli
from rtqa.protocol.loader import load_protocol
from rtqa.report.csv_cells import safe_cell
from tests.conftest import case

HOSTILE_ID = "@SUM(1+1)"
HOSTILE_ROI = '=HYPERLINK("http://x","y")'
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def hostile_case(tmp_path_factory) -> str:
    """The clean liver case with a formula as its PatientID and as the name of its stomach ROI."""
    out = tmp_path_factory.mktemp("hostile")
    spec = replace(
        cases.LiverSpec(name="liver_hostile", patient_id=HOSTILE_ID),
        renames=(("Stomach", HOSTILE_ROI),),
        with_ct=False,
    )
    return cases.write_liver_case(str(out), spec)


def read_csv(path: Path) -> list[dict[str, str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "Excel needs the UTF-8 byte-order mark"
    return list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))


def assert_no_live_formula(rows: list[dict[str, str]]) -> None:
    """OWASP: no text cell may start with a formula character; a number may be negative."""
    for row in rows:
        for column, cell in row.items():
            if cell.startswith(FORMULA_START):
                float(cell)  # raises for text: only numbers may start with '-' or '+'
                assert column not in ("patient_id", "structure", "roi", "matched_roi", "plan_label", "message")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("=1+2", "'=1+2"),
        ("+1", "'+1"),
        ("-cmd|' /C calc'!A0", "'-cmd|' /C calc'!A0"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("Liver-GTV", "Liver-GTV"),  # a '-' inside text is harmless
        (-0.5, -0.5),
        (0, 0),
        (None, ""),
        (True, "true"),
    ],
)
def test_safe_cell_follows_owasp(value, expected):
    # expected values: the OWASP "CSV Injection" page (prefix a single quote to cells starting
    # with = + - @ tab or carriage return); numbers are not text and pass unchanged
    assert safe_cell(value) == expected


def test_check_csv_neutralises_dicom_text_and_has_a_bom(hostile_case, tmp_path):
    out = tmp_path / "csv"
    result = run("check", hostile_case, "--format", "csv", "--output", str(out))
    assert result.exit_code not in (2, 70), result.output
    plans, findings = read_csv(out / "plans.csv"), read_csv(out / "findings.csv")
    assert plans[0]["patient_id"] == "'" + HOSTILE_ID
    assert {f["patient_id"] for f in findings} == {"'" + HOSTILE_ID}
    assert_no_live_formula(plans)
    assert_no_live_formula(findings)
    # numbers stay numbers: every value with a unit parses as a float (text values such as the
    # heterogeneity setting have no unit; intervals are written low–high)
    assert all(
        float(f["value"]) == float(f["value"]) for f in findings if f["value"] and f["unit"] and "–" not in f["value"]
    )
    # stdout (a pipe) gets the same neutralised cells and no byte-order mark
    piped = run("check", hostile_case, "--format", "csv")
    assert not piped.stdout.startswith("\ufeff")
    assert_no_live_formula(list(csv.DictReader(io.StringIO(piped.stdout))))


def test_dvh_csv_neutralises_roi_names(hostile_case):
    result = run("dvh", hostile_case, "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    names = {r["structure"] for r in rows}
    assert "'" + HOSTILE_ROI in names and HOSTILE_ROI not in names
    assert_no_live_formula(rows)
    stomach = next(r for r in rows if r["structure"] == "'" + HOSTILE_ROI)
    assert float(stomach["volume_cc"]) > 0  # statistics are numbers, not quoted text


def test_plans_csv_lists_deviations_protocol_and_time(liver_tree, tmp_path):
    out = tmp_path / "csv"
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    result = run("check", case(liver_tree, "liver_cord_overdose"), "--format", "csv", "--output", str(out))
    assert result.exit_code == 1 | 4 | 8, result.output  # the cord deviation; no clinical CSV
    (plan,) = read_csv(out / "plans.csv")
    report = json.loads(run("check", case(liver_tree, "liver_cord_overdose"), "--format", "json").stdout)["plans"][0]
    graded = {f["rule"]: f["grade"] for f in report["findings"]}
    deviations = [r for r, g in graded.items() if g == "deviation_unacceptable"]
    variations = [r for r, g in graded.items() if g == "variation_acceptable"]
    assert "CORD_MAX" in deviations  # the variant's 55 Gy cord hot spot (fixtures/cases.py)
    assert int(plan["deviations"]) == len(deviations) and plan["deviation_rules"].split(";") == deviations
    assert int(plan["variations"]) == len(variations)
    assert plan["variation_rules"] == ";".join(variations)
    protocol = load_protocol()
    assert (plan["protocol_id"], plan["protocol_version"], plan["protocol_sha256"]) == (
        protocol.id,
        protocol.version,
        protocol.sha256,
    )
    assert plan["approval_status"] == report["approval_status"] and plan["plan_date"] == report["plan_date"]
    checked = datetime.datetime.fromisoformat(plan["checked_at"])
    assert checked.tzinfo is not None and checked >= before
