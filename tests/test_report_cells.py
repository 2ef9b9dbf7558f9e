"""Report cells other than the grade, in every format: what a planted bug in a renderer would change.

Each expected value comes from the model the renderers share (the in-process PlanReport and its
findings), from the shipped protocol YAML, or from arithmetic stated beside it; never from a
renderer's own output.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shutil

import pydicom

from rtqa.protocol.limits import Grade
from tests.conftest import case
from tests.test_verdicts import PROTOCOL, finding, report, run


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))


def test_a_certain_deviation_in_an_incomplete_plan_is_counted_and_headed_as_a_deviation(liver_tree):
    """HCC-LIVERMEAN without a clinical CSV: normal-liver mean above every class's variation
    limit (a certain deviation), the dose algorithm unknown (not evaluable)."""
    folder = case(liver_tree, "liver_high_liver_mean")
    r = report(folder, child_pugh=None, algorithm=None)
    assert r.grade is Grade.DEVIATION_UNACCEPTABLE and not r.complete
    assert "DOSE_ALGORITHM" in r.not_evaluable
    data = json.loads(run("check", folder, "--format", "json").stdout)
    (plan,) = data["plans"]
    assert plan["verdict"] == "deviation_unacceptable" and plan["complete"] is False
    assert data["summary"]["deviation_unacceptable"] == 1 and data["summary"]["incomplete"] == 0
    text = run("check", folder).output
    assert f"Grade: DEVIATION UNACCEPTABLE   INCOMPLETE: not evaluable {', '.join(r.not_evaluable)}" in text
    assert "best case" not in text


def test_an_interval_shows_both_ends_in_json_csv_and_text(liver_tree):
    folder = case(liver_tree, "liver_dose_not_covering_hot")
    f = finding(report(folder, "A5"), "NORMAL_LIVER_MEAN")
    assert f.interval is not None
    low, high = round(f.interval[0], 2), round(f.interval[1], 2)
    assert high > low  # the part outside the grid may receive up to the boundary's dose
    (plan,) = json.loads(run("check", folder, "--format", "json").stdout)["plans"]
    j = next(x for x in plan["findings"] if x["rule"] == "NORMAL_LIVER_MEAN")
    assert j["interval"] == {"low": low, "high": high, "unit": "Gy"}
    (row,) = [x for x in csv_rows(run("check", folder, "--format", "csv").stdout) if x["rule"] == "NORMAL_LIVER_MEAN"]
    assert row["value"] == f"{low:.2f}–{high:.2f}"
    assert f"{low:.2f}–{high:.2f} Gy" in run("check", folder).output


def test_findings_csv_shows_both_limits_of_the_protocol(liver_tree, tmp_path):
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,child_pugh,dose_algorithm\nHCC-CLEAN,A5,AAA\n")
    rows = csv_rows(run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, "--format", "csv").stdout)
    (row,) = [x for x in rows if x["rule"] == "NORMAL_LIVER_MEAN"]
    # rules/nct03535259.yaml, Child-Pugh A5/A6: per protocol <= 28 Gy, variation acceptable <= 30 Gy
    rule = next(r for r in PROTOCOL.rules if r.id == "NORMAL_LIVER_MEAN")
    a5 = next(v for k, v in rule.limits_by["child_pugh"].items() if "A5" in k)
    assert (row["per_protocol"], row["variation_acceptable"]) == (a5.per_protocol.text(), a5.variation.text())
    assert (row["per_protocol"], row["variation_acceptable"]) == ("<= 28", "<= 30")


def test_rules_that_do_not_apply_are_listed_in_csv_and_html(liver_tree, tmp_path):
    folder = case(liver_tree, "liver_clean")
    r = report(folder, "A5")
    assert r.not_applicable  # optional structures the generator does not contour
    rows = csv_rows(run("check", folder, "--format", "csv").stdout)
    listed = {(x["rule"], x["message"]) for x in rows if x["grade"] == "not_applicable"}
    assert listed == {(n.rule, n.reason) for n in r.not_applicable}
    out = tmp_path / "html"
    run("check", folder, "--format", "html", "--output", f"{out}/")  # one plan: "/" asks for a folder
    (page,) = [p for p in out.rglob("*.html") if p.name != "index.html"]
    html = page.read_text(encoding="utf-8")
    table = html[html.index("id='not-applicable'") :]
    for n in r.not_applicable:
        assert f"<td>{n.rule}</td>" in table


def test_the_html_index_counts_each_institution_by_verdict(liver_tree, tmp_path):
    """One complete plan per protocol and one incomplete plan (no spinal cord) of one centre."""
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,child_pugh,dose_algorithm\nHCC-CLEAN,A5,AAA\nHCC-NOCORD,A5,AAA\n")
    folders = [case(liver_tree, "liver_clean"), case(liver_tree, "liver_missing_structure")]
    out = tmp_path / "html"
    run("check", *folders, "--clinical", clinical, "--format", "html", "--output", out)
    index = (out / "index.html").read_text(encoding="utf-8")
    table = index[index.index('id="institutions"') :]
    heads = re.findall(r"<th>([^<]*)</th>", table[: table.index("</tr>")])[1:]
    first = table[table.index("</tr>") :]
    cells = re.findall(r"<td class='num'>(\d+)</td>", first[: first.index("</tr>", 5)])
    counts = dict(zip(heads, map(int, cells), strict=True))
    assert counts["per protocol"] == 1 and counts["incomplete"] == 1 and sum(counts.values()) == 2


def test_patient_ids_in_the_clinical_csv_are_matched_without_surrounding_spaces(liver_tree, tmp_path):
    clinical = tmp_path / "c.csv"
    clinical.write_text("patient_id,child_pugh,dose_algorithm\n HCC-CLEAN ,A5,AAA\n")
    result = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, "--format", "json")
    assert result.exit_code == 0, result.output
    (plan,) = json.loads(result.stdout)["plans"]
    assert plan["verdict"] == "per_protocol" and plan["complete"] is True


def test_the_dose_per_fraction_is_reported_to_the_hundredth(liver_tree, tmp_path):
    folder = tmp_path / "28fx"
    shutil.copytree(case(liver_tree, "liver_clean"), folder, ignore=shutil.ignore_patterns("CT"))
    ds = pydicom.dcmread(folder / "RP.dcm")
    ds.FractionGroupSequence[0].NumberOfFractionsPlanned = 28
    ds.save_as(folder / "RP.dcm")
    (plan,) = json.loads(run("check", folder, "--format", "json").stdout)["plans"]
    assert plan["prescription"]["per_fraction_gy"] == 1.79  # 50 Gy / 28 = 1.7857
    assert "1.79 Gy" in run("check", folder).output
