"""rtqa check and rtqa rules through click's CliRunner: formats, options and every exit-code bit."""

from __future__ import annotations

import csv
import io
import json
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from rtqa.cli import cli
from rtqa.protocol.loader import load_protocol
from tests.conftest import case

SCHEMA = json.loads(resources.files("rtqa").joinpath("schemas/report-v1.schema.json").read_text())


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def clinical(tmp_path_factory, liver_tree) -> str:
    path = tmp_path_factory.mktemp("clinical") / "clinical.csv"
    rows = ["patient_id,child_pugh,dose_algorithm", "HCC-CLEAN,A5,AAA", "HCC-CORD,A6,Acuros XB", "HCC-NAMES,B7,AAA"]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_clean_complete_plan_exits_0(liver_tree, clinical):
    result = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical)
    assert result.exit_code == 0, result.output
    assert "Grade: PER PROTOCOL   complete" in result.output
    assert "Eligibility: eligible" in result.output


def test_deviation_exits_1_and_fail_on_never_0(liver_tree, clinical):
    folder = case(liver_tree, "liver_cord_overdose")
    result = run("check", folder, "--clinical", clinical)
    assert result.exit_code == 1
    line = next(s for s in result.output.splitlines() if s.strip().startswith("CORD_MAX"))
    assert "DEVIATION UNACCEPTABLE" in line and "SpinalCord" in line
    assert run("check", folder, "--clinical", clinical, "--fail-on", "never").exit_code == 0


def test_incomplete_exits_4_and_with_deviation_5(liver_tree):
    # no clinical facts: child_pugh missing, so the liver rule is not evaluable (4) and the
    # eligibility unknown (8)
    clean = run("check", case(liver_tree, "liver_clean"))
    assert clean.exit_code == 4 | 8 and "child-pugh, unknown" in clean.output
    both = run("check", case(liver_tree, "liver_cord_overdose"))
    assert both.exit_code == 1 | 4 | 8
    assert run("check", case(liver_tree, "liver_cord_overdose"), "--fail-on", "never").exit_code == 4 | 8


def test_fail_on_variation_with_a_stricter_protocol(liver_tree, clinical, tmp_path):
    text = Path(load_protocol().path).read_text(encoding="utf-8")
    strict = text.replace(
        'per_protocol: "<= 45",\n     variation_acceptable: "<= 50"',
        'per_protocol: "<= 5",\n     variation_acceptable: "<= 50"',
    )
    assert strict != text
    (tmp_path / "tg263_aliases.yaml").write_text(
        (Path(load_protocol().path).parent / "tg263_aliases.yaml").read_text(encoding="utf-8"),
        encoding="utf-8",
    )
    proto = tmp_path / "strict.yaml"
    proto.write_text(strict, encoding="utf-8")
    folder = case(liver_tree, "liver_clean")
    assert run("check", folder, "--clinical", clinical, "--protocol", str(proto)).exit_code == 0
    result = run("check", folder, "--clinical", clinical, "--protocol", str(proto), "--fail-on", "variation")
    assert result.exit_code == 1 and "VARIATION ACCEPTABLE" in result.output


def test_json_report_validates_against_the_shipped_schema(liver_tree, clinical):
    result = run(
        "check",
        case(liver_tree, "liver_clean"),
        case(liver_tree, "liver_nonstandard_names"),
        case(liver_tree, "liver_truncated_dose"),
        case(liver_tree, "liver_verification"),
        "--clinical",
        clinical,
        "--format",
        "json",
    )
    # the truncated dose file is unassigned and its plan not evaluable (4); HCC-TRUNC and HCC-VERIF
    # have no row in the clinical CSV, so their eligibility is unknown (8)
    assert result.exit_code == 4 | 8
    data = json.loads(result.stdout)
    jsonschema.validate(data, SCHEMA)
    assert [p["patient_id"] for p in data["plans"]] == ["HCC-CLEAN", "HCC-NAMES", "HCC-TRUNC", "HCC-VERIF"]
    assert data["plans"][3]["findings"][0]["rule"] == "PLAN_INTENT"  # the only plan is a verification plan
    clean = data["plans"][0]
    assert clean["grade"] == "per_protocol" and clean["complete"] is True
    assert "patient_name" not in clean
    assert all(len(i["sha256"]) == 64 for i in clean["inputs"])
    d95 = next(f for f in clean["findings"] if f["rule"] == "PTV_D95")
    assert d95["reference"] == {"dose_gy": 50.0, "target": "PTVp, dose reference"}
    assert d95["limits"]["per_protocol"] == {"op": ">=", "value": 100.0, "unit": "%"}
    assert data["unassigned_files"][0]["file"].endswith("RD_PLAN.dcm")
    assert data["not_graded"][0]["reason"].startswith("VERIFICATION plan")
    assert "NaN" not in result.stdout and "Infinity" not in result.stdout


def test_include_names(liver_tree, clinical):
    data = json.loads(
        run(
            "check", case(liver_tree, "liver_clean"), "--clinical", clinical, "--format", "json", "--include-names"
        ).stdout
    )
    assert data["plans"][0]["patient_name"] == "HCC^HCC-CLEAN"


def test_csv_to_a_folder_and_to_stdout(liver_tree, clinical, tmp_path):
    out = tmp_path / "csv"
    result = run(
        "check",
        case(liver_tree, "liver_cord_overdose"),
        "--clinical",
        clinical,
        "--format",
        "csv",
        "--output",
        str(out),
    )
    assert result.exit_code == 1
    plans = list(csv.DictReader(io.StringIO((out / "plans.csv").read_text(encoding="utf-8-sig"))))
    findings = list(csv.DictReader(io.StringIO((out / "findings.csv").read_text(encoding="utf-8-sig"))))
    assert plans[0]["grade"] == "deviation_unacceptable" and plans[0]["patient_id"] == "HCC-CORD"
    cord = next(f for f in findings if f["rule"] == "CORD_MAX")
    assert cord["grade"] == "deviation_unacceptable" and float(cord["value"]) > 50
    stdout = run("check", case(liver_tree, "liver_cord_overdose"), "--clinical", clinical, "--format", "csv")
    assert next(iter(csv.DictReader(io.StringIO(stdout.stdout))))["rule"] == "FX_DOSE_PER_FRACTION"


def test_text_to_a_file(liver_tree, clinical, tmp_path):
    out = tmp_path / "report.txt"
    result = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, "--output", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert "Patient HCC-CLEAN" in out.read_text()


def test_usage_and_protocol_errors_exit_2(tmp_path, liver_tree):
    assert run("check").exit_code == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocol: {id: X}\n")
    result = run("check", case(liver_tree, "liver_clean"), "--protocol", str(bad))
    assert result.exit_code == 2 and "bad.yaml" in result.output
    clin = tmp_path / "c.csv"
    clin.write_text("name\nx\n")
    result = run("check", case(liver_tree, "liver_clean"), "--clinical", str(clin))
    assert result.exit_code == 2 and "patient_id" in result.output
    assert run("check", case(liver_tree, "liver_clean"), "--fail-on", "sometimes").exit_code == 2


def test_internal_error_exits_70_with_traceback_only_on_debug(tmp_path, monkeypatch):
    def broken(paths):
        raise RuntimeError("boom")

    monkeypatch.setattr("rtqa.discovery.grouping.discover", broken)  # imported by the command when it runs
    result = run("check", str(tmp_path))
    assert result.exit_code == 70 and "internal error (RuntimeError: boom)" in result.output
    assert "Traceback" not in result.output
    debug = run("check", str(tmp_path), "--debug")
    assert debug.exit_code == 70 and "Traceback" in debug.output


def test_no_plan_found_exits_4(tmp_path):
    result = run("check", str(tmp_path))
    assert result.exit_code == 4 and "no plan found" in result.output


def test_rules_validate_and_show(tmp_path):
    shipped = load_protocol().path
    ok = run("rules", "validate", shipped)
    assert ok.exit_code == 0 and "valid - NCT03535259" in ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocol: {id: X, version: '1'}\nstructures: {}\nfractionation: {}\n")
    result = run("rules", "validate", shipped, str(bad))
    assert result.exit_code == 2 and "bad.yaml:2" in result.output
    show = run("rules", "show")
    assert show.exit_code == 0
    line = next(s for s in show.output.splitlines() if s.startswith("NORMAL_LIVER_MEAN"))
    assert "<= 28 Gy" in line and "QUANTEC (Dawson 2010)" in line and "†" in line and "child_pugh" in line
    assert "Liver-GTV" in show.output and "aliases:" in show.output
