"""Issue 17, items 4, 5, 7 and 8: eligibility in the verdict, absent is never per protocol, a bad
clinical CSV cell never aborts a run, and what the index lists.

The cases come from the fixtures generator: ``liver_clean`` (HCC-CLEAN) is a plan the protocol
grades PER PROTOCOL and complete with Child-Pugh A5 and a known dose algorithm (tests/test_verdicts.py
relies on it too); ``liver_missing_structure`` (HCC-NOCORD) lacks the spinal cord, so it is
incomplete. What each test changes is one thing a centre or a careless export does: a Child-Pugh
score outside the protocol's list (CHILD_PUGH allows A5, A6, B7, B8), an attribute left out of a
DICOM file, a bad cell in the clinical CSV. The expected verdicts follow from the protocol file
(rules/nct03535259.yaml) and from DESIGN.md ("How a verdict is reached").
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from importlib import resources
from pathlib import Path

import jsonschema
import pydicom
import pytest
from click.testing import CliRunner

from rtqa.cli import cli
from rtqa.discovery.batch import Job, run_job
from rtqa.discovery.grouping import discover
from rtqa.evaluation.checks import narrowed, run_rule
from rtqa.protocol.clinical import read_clinical_table
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from tests.conftest import case

PROTOCOL = load_protocol()
RULES = {r.id: r for r in PROTOCOL.all_rules()}
SCHEMA = json.loads(resources.files("rtqa").joinpath("schemas/report-v1.schema.json").read_text())
CLEAN, NOCORD = "HCC-CLEAN", "HCC-NOCORD"


def run(*args, env=None):
    return CliRunner(env=env).invoke(cli, [str(a) for a in args])


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def copy_case(liver_tree, name: str, dest: Path) -> Path:
    """A copy of a generated case without its CT (the checks here need no images)."""
    shutil.copytree(case(liver_tree, name), dest, ignore=shutil.ignore_patterns("CT"))
    return dest


def edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


# -- item 4: eligibility in the verdict ----------------------------------------------------------


@pytest.fixture(scope="module")
def ineligible_run(liver_tree, tmp_path_factory):
    """HCC-CLEAN with Child-Pugh C10 (not in A5, A6, B7, B8) beside the incomplete HCC-NOCORD
    (A5), checked once in every format."""
    root = tmp_path_factory.mktemp("ineligible")
    clinical = write_csv(
        root / "c.csv",
        f"patient_id,child_pugh,dose_algorithm,institution\n{CLEAN},C10,AAA,Centre A\n{NOCORD},A5,AAA,Centre A\n",
    )
    folders = [case(liver_tree, "liver_clean"), case(liver_tree, "liver_missing_structure")]
    out = {"text": run("check", *folders, "--clinical", clinical)}
    out["json"] = run("check", *folders, "--clinical", clinical, "--format", "json")
    run("check", *folders, "--clinical", clinical, "--format", "csv", "--output", root / "csv")
    run("check", *folders, "--clinical", clinical, "--format", "html", "--output", root / "html")
    out["root"] = root
    return out


def test_child_pugh_c10_heads_the_text_report_as_ineligible(ineligible_run):
    text = ineligible_run["text"]
    assert text.exit_code == 8 | 4, text.output  # ineligible (8) and one plan incomplete (4)
    lines = text.output.splitlines()
    start = lines.index(next(s for s in lines if s.startswith(f"Patient {CLEAN}")))
    # the verdict first, then the plan's own grade, which stays PER PROTOCOL and complete
    assert lines[start + 1] == "  Grade: INELIGIBLE (CHILD_PUGH): a protocol violation; plan: PER PROTOCOL   complete"
    assert lines[start + 2] == "  Eligibility: ineligible"
    # the failed eligibility rule is the first row of the findings table
    first_row = next(s for s in lines[start:] if s.strip().startswith(("CHILD_PUGH", "FX_", "STRUCTURE")))
    assert first_row.strip().startswith("CHILD_PUGH") and "[ineligible]" in first_row
    summary = next(s for s in lines if s.startswith("Summary:"))
    assert summary == (
        "Summary: 2 plan(s): 1 ineligible, 0 per protocol, 0 variation acceptable, 0 deviation unacceptable, "
        "1 incomplete, 0 not evaluable"
    )
    assert any(s.split()[:3] == [CLEAN, "HCC", "IMRT"] and "INELIGIBLE" in s for s in lines[lines.index(summary) :])


def test_child_pugh_c10_is_ineligible_in_json_and_never_per_protocol(ineligible_run):
    data = json.loads(ineligible_run["json"].stdout)
    jsonschema.validate(data, SCHEMA)
    plans = {p["patient_id"]: p for p in data["plans"]}
    clean = plans[CLEAN]
    assert (clean["verdict"], clean["grade"], clean["complete"]) == ("ineligible", "per_protocol", True)
    assert clean["eligibility"]["status"] == "ineligible"
    (cp,) = [f for f in clean["eligibility"]["items"] if f["rule"] == "CHILD_PUGH"]
    assert (cp["grade"], cp["value_text"]) == ("deviation_unacceptable", "C10")
    assert list(clean).index("verdict") < list(clean).index("grade")  # shown first
    assert data["summary"]["ineligible"] == 1 and data["summary"]["per_protocol"] == 0
    assert sum(data["summary"].values()) == 2  # each plan counted once


def test_child_pugh_c10_is_ineligible_in_plans_csv_and_listed_first_in_findings_csv(ineligible_run):
    folder = ineligible_run["root"] / "csv"
    plans = list(csv.DictReader(io.StringIO((folder / "plans.csv").read_text(encoding="utf-8-sig"))))
    rows = {r["patient_id"]: r for r in plans}
    assert (rows[CLEAN]["verdict"], rows[CLEAN]["grade"], rows[CLEAN]["eligibility"]) == (
        "ineligible",
        "per_protocol",
        "ineligible",
    )
    assert list(plans[0]).index("verdict") < list(plans[0]).index("grade")
    findings = list(csv.DictReader(io.StringIO((folder / "findings.csv").read_text(encoding="utf-8-sig"))))
    first = next(r for r in findings if r["patient_id"] == CLEAN)
    assert (first["rule"], first["category"], first["grade"]) == ("CHILD_PUGH", "eligibility", "deviation_unacceptable")


def test_child_pugh_c10_is_ineligible_in_the_html_index_and_page(ineligible_run):
    folder = ineligible_run["root"] / "html"
    index = (folder / "index.html").read_text(encoding="utf-8")
    # per institution: the columns follow the verdicts, ineligible first; Centre A has 1 ineligible,
    # 0 per protocol, 0 variation, 0 deviation, 1 incomplete, 0 not evaluable
    assert "<th>ineligible</th><th>per protocol</th>" in index
    assert "<tr><td>Centre A</td>" + "".join(f"<td class='num'>{n}</td>" for n in (1, 0, 0, 0, 1, 0)) in index
    row = next(s for s in index.split("<tr ") if f">{CLEAN}</a>" in s)
    assert "data-grade='ineligible'" in row and "INELIGIBLE" in row and "CHILD_PUGH" in row
    page = next(p for p in folder.iterdir() if CLEAN in p.name).read_text(encoding="utf-8")
    head = page[page.index("<div class='runhead'>") : page.index("</div>", page.index("<div class='runhead'>"))]
    assert "INELIGIBLE" in head and head.index("INELIGIBLE") < head.index("PER PROTOCOL")
    table = page[page.index("<h2>Findings</h2>") :]
    assert table.index("CHILD_PUGH") < table.index("FX_DOSE_PER_FRACTION")  # listed before the plan's rules


def test_the_index_lists_the_not_evaluable_rules_of_an_incomplete_plan(ineligible_run):
    index = (ineligible_run["root"] / "html" / "index.html").read_text(encoding="utf-8")
    row = next(s for s in index.split("<tr ") if f">{NOCORD}</a>" in s)
    failed = row[row.index("<td class='failed'>") :]
    failed = failed[: failed.index("</td>")]
    # no spinal cord: its presence and the cord limit could not be evaluated
    assert "STRUCTURE:SpinalCord" in failed and "CORD_MAX" in failed and "NOT EVALUABLE" in failed


def test_eligibility_unknown_stays_distinct_from_ineligible(liver_tree, tmp_path):
    data = json.loads(run("check", case(liver_tree, "liver_clean"), "--format", "json").stdout)
    (plan,) = data["plans"]
    assert plan["eligibility"]["status"] == "unknown" and plan["verdict"] != "ineligible"
    assert data["summary"]["ineligible"] == 0


def test_an_unreadable_plan_takes_its_institution_from_the_csv(liver_tree, tmp_path):
    folder = copy_case(liver_tree, "liver_clean", tmp_path / "case")
    edit(folder / "RD_PLAN.dcm", lambda ds: setattr(ds, "DoseUnits", "RELATIVE"))  # the dose is refused
    clinical = write_csv(tmp_path / "c.csv", f"patient_id,child_pugh,institution\n{CLEAN},A5,Centre Z\n")
    data = json.loads(run("check", folder, "--clinical", clinical, "--format", "json").stdout)
    (plan,) = data["plans"]
    assert plan["errors"] and "DoseUnits" in plan["errors"][0]["message"]
    assert plan["institution"] == "Centre Z"
    run("check", folder, "--clinical", clinical, "--format", "html", "--output", f"{tmp_path / 'html'}/")
    index = (tmp_path / "html" / "index.html").read_text(encoding="utf-8")
    assert "<tr><td>Centre Z</td>" in index and "(unreadable)" in index


# -- item 4 in the ledger: stats and review (SQLite and PostgreSQL) ---------------------------------


def test_ledger_counts_an_ineligible_patient_apart_and_review_needs_an_override(liver_tree, tmp_path, ledger_url):
    clinical = write_csv(tmp_path / "c.csv", f"patient_id,child_pugh,dose_algorithm,institution\n{CLEAN},C10,AAA,A\n")
    env = {"RTQA_LEDGER": ledger_url}
    checked = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, env=env)
    assert checked.exit_code == 8, checked.output
    stats = json.loads(run("stats", "--format", "json", env=env).stdout)
    total = stats["total"]
    assert (total["plans"], total["ineligible"], total["per_protocol"], total["incomplete"]) == (1, 1, 0, 0)
    assert (total["eligible"], total["eligibility_unknown"]) == (0, 0)
    text = run("stats", env=env).stdout
    assert "INEL" in text.splitlines()[1] and "elig. ?" in text.splitlines()[1]
    row = next(s for s in text.splitlines() if s.strip().startswith("all "))
    # plans subm. resub. INEL PP VA DU incompl. elig.? accepted rejected
    assert row.split()[1:12] == ["1", "1", "0", "1", "0", "0", "0", "0", "0", "0", "0"]
    csv_rows = list(csv.DictReader(io.StringIO(run("stats", "--format", "csv", env=env).stdout)))
    assert csv_rows[-1]["ineligible"] == "1" and csv_rows[-1]["per_protocol"] == "0"
    assert "INELIGIBLE" in run("stats", "--format", "html", env=env).stdout

    refused = run("review", "1", "--accept-plan", "--reason", "fine", "--reviewer", "J. Smith", env=env)
    assert refused.exit_code == 2
    assert "INELIGIBLE (CHILD_PUGH)" in refused.output and "--override-eligibility" in refused.output
    misuse = run("review", "1", "--reject-plan", "--override-eligibility", "--reason", "x", "--reviewer", "J", env=env)
    assert misuse.exit_code == 2 and "--override-eligibility goes with --accept-plan" in misuse.output
    accepted = run(
        "review", "1", "--accept-plan", "--override-eligibility", "--reason", "waiver signed by the PI",
        "--reviewer", "J. Smith", env=env,
    )  # fmt: skip
    assert accepted.exit_code == 0, accepted.output
    assert "plan accepted, eligibility overridden by J. Smith" in accepted.output
    report = run("report", "1", env=env).stdout
    assert "Final grade: INELIGIBLE (plan: PER PROTOCOL)" in report
    assert "Eligibility: ineligible (CHILD_PUGH: a protocol violation)" in report
    total = json.loads(run("stats", "--format", "json", env=env).stdout)["total"]
    assert (total["accepted"], total["ineligible"], total["per_protocol"]) == (1, 1, 0)  # still ineligible
    assert run("ledger", "verify", env=env).exit_code == 0


def test_override_is_refused_when_there_is_nothing_to_override(liver_tree, tmp_path, ledger_url):
    clinical = write_csv(tmp_path / "c.csv", f"patient_id,child_pugh,dose_algorithm\n{CLEAN},A5,AAA\n")
    env = {"RTQA_LEDGER": ledger_url}
    assert run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, env=env).exit_code == 0
    out = run("review", "1", "--accept-plan", "--override-eligibility", "--reason", "x", "--reviewer", "J", env=env)
    assert out.exit_code == 2 and "eligibility is eligible, not ineligible" in out.output
    stats = json.loads(run("stats", "--format", "json", env=env).stdout)["total"]
    assert (stats["per_protocol"], stats["ineligible"], stats["eligible"]) == (1, 0, 1)


# -- item 5: absent is never per protocol ----------------------------------------------------------


def _drop_beam_attribute(name):
    def change(ds):
        for beam in ds.BeamSequence:
            holder = beam if name != "NominalBeamEnergy" else beam.ControlPointSequence[0]
            del holder[name]

    return change


def _drop_fractions(ds):
    del ds.FractionGroupSequence[0].NumberOfFractionsPlanned


ABSENT = [
    # (file, what is removed, rule, the attribute the finding names)
    ("RD_PLAN.dcm", lambda ds: delattr(ds, "TissueHeterogeneityCorrection"), "HETEROGENEITY",
     "TissueHeterogeneityCorrection (3004,0014) is absent"),
    ("RP.dcm", _drop_beam_attribute("RadiationType"), "BEAM_RADIATION", "RadiationType (300A,00C6) is absent"),
    ("RP.dcm", _drop_beam_attribute("NominalBeamEnergy"), "BEAM_ENERGY", "NominalBeamEnergy (300A,0114)"),
    ("RP.dcm", lambda ds: delattr(ds, "ApprovalStatus"), "APPROVAL", "ApprovalStatus (300E,0002) is absent"),
    ("RP.dcm", _drop_fractions, "FX_DOSE_PER_FRACTION", "NumberOfFractionsPlanned (300A,0078) is absent"),
]  # fmt: skip


@pytest.mark.parametrize(("file", "change", "rule", "named"), ABSENT, ids=[a[2] for a in ABSENT])
def test_an_absent_attribute_is_a_query_never_a_pass(liver_tree, tmp_path, file, change, rule, named):
    folder = copy_case(liver_tree, "liver_clean", tmp_path / "case")
    edit(folder / file, change)
    (ps,) = [p for p in discover([str(folder)]).plan_sets if p.plans]
    from rtqa.protocol.clinical import ClinicalFacts

    r = run_job(Job(ps, PROTOCOL.path, ClinicalFacts(CLEAN, "A5", "AAA")))
    hits = [f for f in r.findings if f.rule == rule]
    assert hits and all(f.grade is Grade.NOT_EVALUABLE and f.category == "query" for f in hits)
    assert any(named in f.message for f in hits), [f.message for f in hits]
    # the plan is incomplete, never per protocol; the unedited case is complete (test_verdicts.py)
    assert not r.complete and r.verdict == "incomplete" and rule in r.not_evaluable


def test_absent_heterogeneity_through_the_cli_is_incomplete_with_exit_4(liver_tree, tmp_path):
    folder = copy_case(liver_tree, "liver_clean", tmp_path / "case")
    edit(folder / "RD_PLAN.dcm", lambda ds: delattr(ds, "TissueHeterogeneityCorrection"))
    clinical = write_csv(tmp_path / "c.csv", f"patient_id,child_pugh,dose_algorithm\n{CLEAN},A5,AAA\n")
    out = run("check", folder, "--clinical", clinical)
    assert out.exit_code == 4, out.output
    assert "Grade: INCOMPLETE (best case PER PROTOCOL): not evaluable HETEROGENEITY" in out.output
    line = next(s for s in out.output.splitlines() if s.strip().startswith("HETEROGENEITY"))
    assert "NOT EVALUABLE" in line and "[query]" in line


def test_an_undefined_heterogeneity_term_is_a_query(liver_tree, tmp_path):
    folder = copy_case(liver_tree, "liver_clean", tmp_path / "case")
    edit(folder / "RD_PLAN.dcm", lambda ds: setattr(ds, "TissueHeterogeneityCorrection", "MAYBE"))
    (ps,) = [p for p in discover([str(folder)]).plan_sets if p.plans]
    from rtqa.protocol.clinical import ClinicalFacts

    r = run_job(Job(ps, PROTOCOL.path, ClinicalFacts(CLEAN, "A5", "AAA")))
    (f,) = [f for f in r.findings if f.rule == "HETEROGENEITY"]
    assert (f.grade, f.category, f.value_text) == (Grade.NOT_EVALUABLE, "query", "MAYBE")
    assert "'MAYBE' is not a defined term" in f.message


def test_an_absent_dose_type_refuses_the_dose_naming_it(liver_tree, tmp_path):
    # DoseType is Type 1: a dose whose type is unknown could be an ERROR (difference) dose
    folder = copy_case(liver_tree, "liver_clean", tmp_path / "case")
    edit(folder / "RD_PLAN.dcm", lambda ds: delattr(ds, "DoseType"))
    data = json.loads(run("check", folder, "--format", "json").stdout)
    (plan,) = data["plans"]
    assert plan["verdict"] == "not_evaluable" and not plan["complete"]
    assert "DoseType (3004,0004)" in plan["errors"][0]["message"]


def test_an_unknown_dose_algorithm_is_a_query(liver_tree):
    (ps,) = [p for p in discover([case(liver_tree, "liver_clean")]).plan_sets if p.plans]
    from rtqa.protocol.clinical import ClinicalFacts

    r = run_job(Job(ps, PROTOCOL.path, ClinicalFacts(CLEAN, "A5", None)))
    (f,) = [f for f in r.findings if f.rule == "DOSE_ALGORITHM"]
    assert (f.grade, f.category) == (Grade.NOT_EVALUABLE, "query") and "dose_algorithm unknown" in f.message
    assert r.verdict == "incomplete"


# -- item 7: a bad CSV cell never aborts a run -----------------------------------------------------


def test_a_class_without_its_score_completes_the_run_graded_over_its_scores(liver_tree, tmp_path):
    clinical = write_csv(tmp_path / "c.csv", f"patient_id,child_pugh,dose_algorithm\n{CLEAN},B,AAA\n")
    out = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, "--format", "json")
    assert out.exit_code != 2, out.output
    data = json.loads(out.stdout)
    assert any(
        w.startswith("c.csv, row 2, column child_pugh: 'B' is a class without its score") and "(B7, B8, B9)" in w
        for w in data["warnings"]
    ), data["warnings"]
    (plan,) = data["plans"]
    cp = next(i for i in plan["eligibility"]["items"] if i["rule"] == "CHILD_PUGH")
    # B7 and B8 are eligible, B9 is not: eligibility unknown, not ineligible
    assert cp["grade"] == "not_evaluable" and "eligible if B7, B8, not eligible if B9" in cp["message"]
    assert plan["eligibility"]["status"] == "unknown" and plan["verdict"] != "ineligible"
    (mean,) = [f for f in plan["findings"] if f["rule"] == "NORMAL_LIVER_MEAN"]
    # graded under the B limits only (B7, B8 list 15/18 Gy; B9 has none: the rule does not apply to it)
    assert "B7, B8" in mean["message"] and "A5" not in mean["message"]


def test_a_class_whose_every_score_is_outside_the_list_is_ineligible(liver_tree, tmp_path):
    clinical = write_csv(tmp_path / "c.csv", f"patient_id,child_pugh,dose_algorithm\n{CLEAN},c,AAA\n")
    out = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical, "--format", "json")
    (plan,) = json.loads(out.stdout)["plans"]
    assert plan["verdict"] == "ineligible" and out.exit_code == 8


def test_a_rule_for_class_a_does_not_apply_to_class_b_without_a_score():
    rule = RULES["NORMAL_LIVER_MEAN"]
    only_a = type(rule)(**{**rule.__dict__, "limits_by": {"child_pugh": {
        k: v for k, v in rule.limits_by["child_pugh"].items() if k.startswith("A")}}})  # fmt: skip
    _, why = narrowed(only_a, {"child_pugh": ("B7", "B8", "B9")})
    assert why == "child-pugh one of B7, B8, B9 (known in part): the rule applies to A5, A6 only"
    kept, why = narrowed(rule, {"child_pugh": ("B7", "B8", "B9")})
    assert why is None and tuple(kept.facts()["child_pugh"]) == ("B7", "B8")
    assert run_rule is not None  # the runner applies narrowed() before every check


@pytest.mark.parametrize("cell", ["Z9", "A12", "5", "B 7", "C16", "A7"])
def test_a_garbage_child_pugh_cell_is_a_warning_and_an_unknown_fact(tmp_path, cell):
    path = write_csv(tmp_path / "facts.csv", f"patient_id,child_pugh,dose_algorithm\nP0,A5,AAA\nP1,{cell},AAA\n")
    table = read_clinical_table(path)
    assert table.facts["P1"].child_pugh is None and table.facts["P1"].possible == {}
    assert table.facts["P1"].dose_algorithm == "AAA" and table.facts["P0"].child_pugh == "A5"  # the rest stands
    (warning,) = table.warnings
    assert warning.startswith(f"facts.csv, row 3, column child_pugh: {cell!r} is not allowed (one of A5, A6, B7")
    assert "C15, a class alone (A, B or C)" in warning and "patient 'P1'" in warning


def test_empty_cells_are_unknown_and_counted_in_one_warning(tmp_path):
    path = write_csv(tmp_path / "facts.csv", "patient_id,child_pugh\nP1,\nP2,A5\nP3, \n")
    table = read_clinical_table(path)
    assert [table.facts[p].child_pugh for p in ("P1", "P2", "P3")] == [None, "A5", None]
    assert table.warnings == (
        "facts.csv: column child_pugh is empty on 2 row(s) (2, 4): those patients' child_pugh is unknown",
    )


def test_a_bad_prescription_cell_drops_every_csv_prescription_of_that_patient(tmp_path):
    # keeping rx_PTVv alone would grade the plan against 50 Gy instead of 60 Gy
    path = write_csv(tmp_path / "facts.csv", "patient_id,rx_PTVp,rx_PTVv\nP1,sixty,50\nP2,60,50\n")
    table = read_clinical_table(path)
    assert table.facts["P1"].prescriptions_gy == {} and table.facts["P2"].prescriptions_gy == {"PTVp": 60, "PTVv": 50}
    (warning,) = table.warnings
    assert warning.startswith("facts.csv, row 2, column rx_PTVp: 'sixty' is not allowed (a positive dose in Gy)")


def test_a_patient_on_two_rows_keeps_what_agrees(tmp_path):
    path = write_csv(tmp_path / "facts.csv", "patient_id,child_pugh,dose_algorithm\nP1,A5,AAA\nP1,B7,AAA\n")
    table = read_clinical_table(path)
    assert (table.facts["P1"].child_pugh, table.facts["P1"].dose_algorithm) == (None, "AAA")
    said = "row 3, column child_pugh: patient 'P1' has 'A5' and 'B7'; taken as unknown"
    assert any(said in w for w in table.warnings)


def test_a_garbage_cell_through_the_cli_completes_the_run(liver_tree, tmp_path):
    clinical = write_csv(tmp_path / "c.csv", f"patient_id,child_pugh,dose_algorithm\n{CLEAN},Z9,AAA\n")
    out = run("check", case(liver_tree, "liver_clean"), "--clinical", clinical)
    # the run completes: eligibility unknown (8), and NORMAL_LIVER_MEAN (16.10 Gy) not evaluable with
    # the class unknown (per protocol for A, variation for B), so the plan is incomplete (4)
    assert out.exit_code == 8 | 4, out.output
    assert "warning: c.csv, row 2, column child_pugh: 'Z9' is not allowed" in out.output
    assert "  Eligibility: unknown" in out.output


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b"DICM\x00\x01\x02binary\x00", "NUL characters"),
        (b"\x89PNG\r\n\x1a\n\xff\xfe\xfa", "is not UTF-8"),
        (b"", "expected a header with a 'patient_id' column"),
        (b"just some notes about patients\nnothing tabular\n", "expected a header with a 'patient_id' column"),
    ],
    ids=["binary", "not-text", "empty", "no-header"],
)
def test_a_file_that_is_not_a_csv_stops_the_run_with_exit_2(liver_tree, tmp_path, content, said):
    bad = tmp_path / "c.csv"
    bad.write_bytes(content)
    out = run("check", case(liver_tree, "liver_clean"), "--clinical", bad)
    assert out.exit_code == 2 and said in out.output, out.output
