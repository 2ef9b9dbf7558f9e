"""Evaluation of the liver variants against the NCT03535259 protocol.

Each variant of fixtures/cases.py breaks one thing by design (its description says what);
the expected findings below follow from that design, e.g. 50 Gy in 20 fractions is 2.5 Gy per
fraction, outside 2.00 Gy ± 1 %.
"""

from __future__ import annotations

import pytest

from rtqa.discovery.batch import Job, run_job
from rtqa.discovery.grouping import discover
from rtqa.discovery.load import load_case
from rtqa.errors import InputError
from rtqa.evaluation.evaluate import evaluate
from rtqa.protocol.clinical import ClinicalFacts, read_clinical_csv, read_clinical_table
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from tests.conftest import case
from tests.shared_reports import evaluated

PROTOCOL = load_protocol()


def report(tree, name, child_pugh="A5", algorithm="AAA", **facts):
    # evaluated once per run and shared with the other tests that ask for the same report
    return evaluated(case(tree, name), dict(child_pugh=child_pugh, dose_algorithm=algorithm, **facts))


def off_protocol(r):
    return {(f.rule, f.grade) for f in r.findings if f.grade is not Grade.PER_PROTOCOL}


CLEAN = [
    "liver_clean",
    "liver_beam_doses",
    "liver_plan_and_beams",
    "liver_headerless",
    "liver_fractions_as_text",
    "liver_sequential_boost",
    "liver_orient_FFS",
    "liver_orient_HFP",
    "liver_orient_FFP",
    "liver_orient_DECUB_A",
]


@pytest.mark.parametrize("name", CLEAN)
def test_clean_cases_are_per_protocol_on_every_rule_and_complete(liver_tree, name):
    r = report(liver_tree, name)
    assert off_protocol(r) == set(), [f.message for f in r.findings if f.grade is not Grade.PER_PROTOCOL]
    assert r.grade is Grade.PER_PROTOCOL and r.complete and r.eligibility_status == "eligible"
    # every rule has a finding, but those of optional structures the case does not contour (not applicable)
    expected = {r.id for r in PROTOCOL.rules} - {"PERITONEAL_V45", "PERICARDIUM_MEAN"}
    assert {f.rule for f in r.findings} == expected


DEVIATIONS = {
    "liver_dose_per_fraction": {("FX_DOSE_PER_FRACTION", Grade.DEVIATION_UNACCEPTABLE)},
    "liver_total_dose_low": {("FX_TOTAL_DOSE", Grade.DEVIATION_UNACCEPTABLE)},
    "liver_high_liver_mean": {("NORMAL_LIVER_MEAN", Grade.DEVIATION_UNACCEPTABLE)},
    "liver_cord_overdose": {("CORD_MAX", Grade.DEVIATION_UNACCEPTABLE)},
    # 60 Gy / 25 = 2.4 Gy to PTVp. PTVv - PTVp receives the boost's spill (over 110 % of its own 50 Gy), but
    # within the protocol's 5 mm transition ring: PTVv - (PTVp + 5mm) is per protocol (tests/test_margins.py)
    "liver_sib": {("FX_DOSE_PER_FRACTION", Grade.DEVIATION_UNACCEPTABLE)},
    "liver_missing_structure": {("STRUCTURE:SpinalCord", Grade.NOT_EVALUABLE), ("CORD_MAX", Grade.NOT_EVALUABLE)},
    "liver_empty_roi": {("STRUCTURE:Stomach", Grade.NOT_EVALUABLE), ("STOMACH_MAX", Grade.NOT_EVALUABLE)},
}


@pytest.mark.parametrize("name", sorted(DEVIATIONS))
def test_each_variant_yields_exactly_its_findings(liver_tree, name):
    r = report(liver_tree, name)
    assert off_protocol(r) == DEVIATIONS[name]
    worst = max(
        (g for _, g in DEVIATIONS[name] if g is not Grade.NOT_EVALUABLE),
        key=lambda g: g.severity,
        default=Grade.PER_PROTOCOL,
    )
    assert r.grade is worst
    assert r.complete == all(g is not Grade.NOT_EVALUABLE for _, g in DEVIATIONS[name])


def test_under_coverage_fails_target_rules_only(liver_tree):
    r = report(liver_tree, "liver_under_coverage")
    rules = {rule for rule, _ in off_protocol(r)}
    assert rules == {"PTV_D95", "PTV_D99", "GTV_D98"}
    ptvp = next(f for f in r.findings if f.rule == "PTV_D95" and f.matched_roi == "PTVp")
    assert ptvp.grade is Grade.DEVIATION_UNACCEPTABLE and ptvp.value < 95
    assert ptvp.reference_gy == 50.0 and ptvp.unit == "%"


def test_dose_grid_short_of_the_liver(liver_tree):
    r = report(liver_tree, "liver_dose_not_covering")
    assert off_protocol(r) == {("OAR_COVERAGE", Grade.NOT_EVALUABLE)} and not r.complete
    liver = next(f for f in r.findings if f.rule == "NORMAL_LIVER_MEAN")
    assert "outside the dose grid" in liver.message and liver.interval is not None


def test_integrated_boost_grades_each_ptv_against_its_own_prescription(liver_tree):
    r = report(liver_tree, "liver_sib")
    d95 = {f.matched_roi: f for f in r.findings if f.rule == "PTV_D95"}
    assert d95["PTVp"].reference_gy == 60.0 and d95["PTVv"].reference_gy == 50.0
    assert all(f.grade is Grade.PER_PROTOCOL for f in d95.values())
    hot = next(f for f in r.findings if f.rule == "PTV_D2")
    assert hot.reference_gy == 60.0  # the hot spot of the union against the highest prescription


def test_nonstandard_names_match_through_aliases_and_report_the_mapping(liver_tree):
    r = report(liver_tree, "liver_nonstandard_names", child_pugh="A6")
    assert off_protocol(r) == set() and r.complete
    by_rule = {f.rule: f for f in r.findings}
    assert (by_rule["CORD_MAX"].matched_roi, by_rule["CORD_MAX"].match) == ("Spinal Cord", "exact")
    # "Small Bowel" is a name of the TG-263 alias table (rules/tg263_aliases.yaml), not of the protocol
    assert (by_rule["SMALL_BOWEL_MAX"].matched_roi, by_rule["SMALL_BOWEL_MAX"].match) == ("Small Bowel", "tg263")
    assert r.structures["Liver"].roi == "肝脏"
    d95 = next(f for f in r.findings if f.rule == "PTV_D95" and f.matched_roi == "PTV_5000")
    assert d95.match == "pattern"
    assert by_rule["NORMAL_LIVER_MEAN"].unconfirmed and by_rule["NORMAL_LIVER_MEAN"].per_protocol.value == 28.0


def test_missing_clinical_fact_is_not_evaluable_and_named(liver_tree):
    r = evaluated(case(liver_tree, "liver_clean"), None)
    mean = next(f for f in r.findings if f.rule == "NORMAL_LIVER_MEAN")
    assert mean.grade is Grade.NOT_EVALUABLE and "child-pugh, unknown" in mean.message
    assert set(r.not_evaluable) == {"NORMAL_LIVER_MEAN", "DOSE_ALGORITHM"}
    assert r.eligibility_status == "unknown" and r.grade is Grade.PER_PROTOCOL


def test_child_pugh_c_is_ineligible_and_liver_rule_not_applicable(liver_tree):
    r = report(liver_tree, "liver_clean", child_pugh="C10")
    assert r.eligibility_status == "ineligible"
    assert not any(f.rule == "NORMAL_LIVER_MEAN" for f in r.findings)


def test_structure_set_only_gives_eligibility(liver_tree, tmp_path):
    import shutil

    shutil.copy(case(liver_tree, "liver_clean") + "/RS.dcm", tmp_path / "RS.dcm")
    (ps,) = discover([tmp_path]).plan_sets
    assert not ps.plans
    r = run_job(Job(ps, PROTOCOL.path, ClinicalFacts(ps.patient_id, "A6")))
    vol = next(f for f in r.eligibility if f.rule == "NORMAL_LIVER_VOLUME")
    assert vol.grade is Grade.PER_PROTOCOL and vol.value > 700
    assert r.eligibility_status == "eligible" and not r.complete


def test_unreadable_plans_are_reports_with_their_error(liver_tree):
    for name, text in (
        ("liver_for_mismatch", "FrameOfReferenceUID"),
        ("liver_beam_doses_incomplete", "beam(s) [7]"),
        ("liver_truncated_dose", "no RT Dose file"),
    ):
        r = report(liver_tree, name)
        assert r.grade is Grade.NOT_EVALUABLE and not r.complete
        assert text in r.errors[0]["message"]


def test_evaluation_is_deterministic(liver_tree):
    (ps,) = [p for p in discover([case(liver_tree, "liver_cord_overdose")]).plan_sets if p.plans]
    loaded = load_case(ps)
    facts = ClinicalFacts(ps.patient_id, "A5", "AAA")
    assert evaluate(loaded, PROTOCOL, clinical=facts).as_json() == evaluate(loaded, PROTOCOL, clinical=facts).as_json()


def test_clinical_csv(tmp_path):
    good = tmp_path / "c.csv"
    good.write_text("patient_id,child_pugh,dose_algorithm,rx_PTVp\nP1,a5,AAA,50\nP2,,,\n")
    facts = read_clinical_csv(good)
    assert facts["P1"].child_pugh == "A5" and facts["P1"].prescriptions_gy == {"PTVp": 50.0}
    assert facts["P2"].child_pugh is None
    bad = tmp_path / "bad.csv"
    bad.write_text("id,child_pugh\n1,A5\n")  # the file as a whole cannot be read: an error
    with pytest.raises(InputError, match=r"line 1: expected a header with a 'patient_id'"):
        read_clinical_csv(bad)
    # a bad cell is a warning and an unknown fact, never an error (tests/test_verdict_eligibility.py)
    for text, warning in (
        ("patient_id,child_pugh\nP1,D7\n", "bad.csv, row 2, column child_pugh: 'D7' is not allowed"),
        ("patient_id,rx_PTV\nP1,fifty\n", "bad.csv, row 2, column rx_PTV: 'fifty' is not allowed"),
        ("patient_id\nP1\nP1\n", "bad.csv, row 3, column patient_id: patient 'P1' appears again"),
    ):
        bad.write_text(text)
        table = read_clinical_table(bad)
        assert any(w.startswith(warning) for w in table.warnings), table.warnings
        assert table.facts["P1"].child_pugh is None and table.facts["P1"].prescriptions_gy == {}
