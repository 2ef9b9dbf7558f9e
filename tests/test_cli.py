"""The command line, through click's CliRunner."""

from __future__ import annotations

import json
import os
from pathlib import Path

from click.testing import CliRunner

from rtqa import __version__
from rtqa.cli import cli
from tests.conftest import case


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_version():
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_dvh_text_on_the_clean_case(liver_tree):
    result = run("dvh", case(liver_tree, "liver_clean"), "--derived", "Liver-GTV=Liver - (GTVp | GTVv | GTVn)")
    assert result.exit_code == 0, result.output
    assert "prescription: HCC IMRT: 50.00 Gy (2.00 Gy x 25) from dose_reference" in result.output
    assert "end cap half_slab" in result.output
    line = next(s for s in result.output.splitlines() if s.strip().startswith("Liver-GTV"))
    truth = json.loads(Path(case(liver_tree, "liver_clean") + ".truth.json").read_text())["structures"]["Liver-GTV"]
    # volume column against the generator's exact polygon-area truth (within the 0.5 % tolerance)
    assert abs(float(line.split()[1]) - truth["volume_cc"]) <= 0.005 * truth["volume_cc"]


def test_dvh_json_follows_the_contract(liver_tree):
    result = run(
        "dvh", case(liver_tree, "liver_clean"), "--structure", "PTVp", "--structure", "Liver", "--format", "json"
    )
    assert result.exit_code == 0
    data = json.loads(result.output)
    (plan,) = data["plans"]
    assert plan["patient_id"] == "HCC-CLEAN" and plan["plan_uid"]
    ptv = plan["structures"]["PTVp"]
    assert set(ptv) >= {"roi", "volume_cc", "uncovered_cc", "min_gy", "mean_gy", "max_gy", "d_gy", "curve"}
    assert set(ptv["d_gy"]) == {"D98%", "D95%", "D50%", "D2%", "D2cc", "D0.03cc"}
    assert len(ptv["curve"]["dose_gy"]) == len(ptv["curve"]["volume_cc"])
    assert list(plan["structures"]) == ["PTVp", "Liver"]


def test_dvh_csv_to_a_file(liver_tree, tmp_path):
    out = tmp_path / "dvh.csv"
    result = run("dvh", case(liver_tree, "liver_clean"), "--structure", "GTVp", "--format", "csv", "--output", str(out))
    assert result.exit_code == 0 and result.output == ""
    rows = out.read_text().splitlines()
    assert rows[0].startswith("patient_id,plan_uid,structure") and rows[1].split(",")[2] == "GTVp"


def test_not_evaluable_case_gives_exit_4_and_names_the_file(liver_tree):
    result = run("dvh", case(liver_tree, "liver_truncated_dose"))
    assert result.exit_code == 4
    assert "RD_PLAN.dcm" in result.output and "truncated" in result.output


def test_missing_structure_is_reported_and_exit_4(liver_tree):
    result = run("dvh", case(liver_tree, "liver_missing_structure"), "--structure", "SpinalCord")
    assert result.exit_code == 4
    assert "missing: no ROI named 'SpinalCord'" in result.output


def test_no_plan_found(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    result = run("dvh", str(tmp_path))
    assert result.exit_code == 4 and "no plan found" in result.output


def test_usage_errors_exit_2(tmp_path):
    assert run("dvh").exit_code == 2
    assert run("dvh", str(tmp_path / "absent")).exit_code == 2
    bad = run("dvh", str(tmp_path), "--derived", "nonsense")
    assert bad.exit_code == 2 and "NAME=EXPRESSION" in bad.output


def test_input_files_are_never_written(liver_tree):
    folder = case(liver_tree, "liver_clean")
    before = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}
    run("dvh", folder)
    assert before == {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}


def test_dvh_with_a_protocol_uses_its_names_and_derived_structures(liver_tree):
    result = run(
        "dvh",
        case(liver_tree, "liver_nonstandard_names"),
        "--protocol",
        "nct03535259",
        "--structure",
        "Liver",
        "--structure",
        "Liver-GTV",
        "--structure",
        "PTV",
        "--format",
        "json",
    )
    assert result.exit_code == 0, result.output
    structures = json.loads(result.output)["plans"][0]["structures"]
    assert structures["Liver"]["roi"] == "肝脏"  # matched through the alias table
    assert structures["PTV"]["roi"] == "PTV_5000 | PTVv | PTVn"  # a many-ROI structure: their union
    truth = json.loads(Path(case(liver_tree, "liver_nonstandard_names") + ".truth.json").read_text())
    normal = truth["structures"]["Liver-GTV"]
    assert abs(structures["Liver-GTV"]["volume_cc"] - normal["volume_cc"]) <= 0.005 * normal["volume_cc"]
