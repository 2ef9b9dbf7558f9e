"""The whole QA-office flow on generated patients, on SQLite and on PostgreSQL.

20 patients from 3 institutions are checked and recorded; the reviewer overrides two findings
and accepts or rejects some plans; 3 patients resubmit: one fixes a deviation, one makes it
worse, one sends identical files. History, diff and stats must give the numbers that follow from
the scenario (each source case's defect is what the generator puts in it, see fixtures/cases.py).
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from fixtures import cases
from rtqa.cli import cli
from rtqa.ledger.db import open_ledger
from rtqa.ledger.record import record_result
from rtqa.ledger.review import add_decision
from tests.ledger_cases import check, make_patients, sha256_files

CENTRES = ("Centre A", "Centre B", "Centre C")
# the defect of each patient's first submission; every other patient is the clean case
SOURCES = {
    "P02": "liver_cord_overdose",  # CORD_MAX deviation (55 Gy hot spot)
    "P04": "liver_high_liver_mean",  # NORMAL_LIVER_MEAN deviation (33 Gy floor in the liver)
    "P05": "liver_cord_overdose",
    "P07": "liver_cord_variation",  # CORD_MAX variation (48 Gy hot spot: between 45 and 50 Gy)
    "P09": "liver_cord_overdose",
    "P12": "liver_missing_structure",  # no spinal cord: incomplete
}
BATCH_AT = "2026-01-05T09:00:00.000000+00:00"
RESUBMITTED_AT = "2026-01-19T09:00:00.000000+00:00"


def day(d: int) -> str:
    return f"2026-01-{d:02d}T09:00:00.000000+00:00"


@pytest.fixture(scope="module")
def office(liver_tree, tmp_path_factory):
    root = tmp_path_factory.mktemp("office")
    base = cases.liver_variants()[0]
    gen = root / "generated"  # not in the shared liver_tree: other tests count its cases
    cases.write_liver_case(
        str(gen), replace(base, name="liver_cord_variation", patient_id="HCC-CORDVA", cord_hot_gy=48.0, truth=False)
    )
    sources = {**SOURCES, "P07": str(gen / "liver_cord_variation")}  # an absolute path wins over liver_tree
    patients = [(f"P{i:02d}", sources.get(f"P{i:02d}", "liver_clean"), CENTRES[(i - 1) % 3]) for i in range(1, 21)]
    tree, clinical = make_patients(liver_tree, root / "batch", patients)
    resub, _ = make_patients(
        liver_tree, root / "resub", [("P02", "liver_clean", "Centre B"), ("P07", "liver_cord_overdose", "Centre A")]
    )
    return {
        "batch": check([tree], clinical),
        # P05 sends the very same files again
        "resubmission": check([resub / "P02", resub / "P07", tree / "P05"], clinical),
        "tree": tree,
        "resub": resub,
    }


def _cord(result, pid):
    (report,) = [r for r in result.reports if r.patient_id == pid]
    (f,) = [f for f in report.findings if f.rule == "CORD_MAX"]
    return f.as_json()["value"]


def test_office_flow(office, ledger_url):
    ledger = open_ledger(ledger_url, create=True)
    try:
        batch = {r.patient_id: r for r in record_result(ledger, office["batch"], submitted_at=BATCH_AT)}
        assert len(batch) == 20 and all(r.new and r.version == 1 for r in batch.values())
        runner = CliRunner(env={"RTQA_LEDGER": ledger_url})
        for pid, rule in (("P04", "NORMAL_LIVER_MEAN"), ("P02", "CORD_MAX")):
            out = runner.invoke(
                cli,
                ["review", str(batch[pid].submission_id), "--rule", rule, "--grade", "variation_acceptable",
                 "--reason", "accepted by the PI after clinical review", "--reviewer", "Dr Reviewer"],
            )  # fmt: skip
            assert out.exit_code == 0, out.output
        add_decision(
            ledger, batch["P01"].submission_id, action="accept_plan", reason="ok", reviewer="R", decided_at=day(7)
        )
        add_decision(
            ledger, batch["P03"].submission_id, action="accept_plan", reason="ok", reviewer="R", decided_at=day(9)
        )
        resub = {r.patient_id: r for r in record_result(ledger, office["resubmission"], submitted_at=RESUBMITTED_AT)}
        assert (resub["P02"].new, resub["P02"].version, resub["P02"].supersedes) == (
            True,
            2,
            batch["P02"].submission_id,
        )
        assert (resub["P07"].new, resub["P07"].version) == (True, 2)
        assert (resub["P05"].new, resub["P05"].submission_id) == (False, batch["P05"].submission_id)
        add_decision(
            ledger, resub["P02"].submission_id, action="accept_plan", reason="fixed", reviewer="R", decided_at=day(21)
        )
        add_decision(
            ledger, resub["P07"].submission_id, action="reject_plan", reason="cord", reviewer="R", decided_at=day(20)
        )
    finally:
        ledger.dispose()

    hist = runner.invoke(cli, ["history", "P02", "--format", "json"])
    assert hist.exit_code == 0, hist.output
    versions = [v["plans"][0]["review"] for v in json.loads(hist.output)]
    assert [(v["version"], v["automatic_grade"], v["final_grade"], v["plan_decision"]) for v in versions] == [
        (1, "deviation_unacceptable", "variation_acceptable", "pending"),
        (2, "per_protocol", "per_protocol", "accepted"),
    ]
    assert [(e["version"], e["rule"], e["grade"]) for e in versions[1]["earlier_decisions"]] == [
        (1, "CORD_MAX", "variation_acceptable")
    ]
    text = runner.invoke(cli, ["history", "P02"]).output
    assert "to confirm, decided on version 1: CORD_MAX -> variation_acceptable by Dr Reviewer" in text

    fixed = json.loads(
        runner.invoke(
            cli, ["diff", str(batch["P02"].submission_id), str(resub["P02"].submission_id), "--format", "json"]
        ).output
    )
    assert [c["rule"] for c in fixed["fixed"]] == ["CORD_MAX"]
    assert fixed["new"] == fixed["worse"] == fixed["better"] == fixed["evaluability"] == []
    cord_a, cord_b = _cord(office["batch"], "P02"), _cord(office["resubmission"], "P02")
    assert fixed["fixed"][0]["delta"] == pytest.approx(cord_b - cord_a)
    assert {i["sha256"] for i in fixed["inputs_removed"]} == sha256_files(office["tree"] / "P02")
    assert {i["sha256"] for i in fixed["inputs_added"]} == sha256_files(office["resub"] / "P02")

    worse = json.loads(
        runner.invoke(
            cli, ["diff", str(batch["P07"].submission_id), str(resub["P07"].submission_id), "--format", "json"]
        ).output
    )
    assert [(c["rule"], c["grade_a"], c["grade_b"]) for c in worse["worse"]] == [
        ("CORD_MAX", "variation_acceptable", "deviation_unacceptable")
    ]
    assert worse["fixed"] == worse["new"] == worse["better"] == []
    assert worse["worse"][0]["delta"] == pytest.approx(
        _cord(office["resubmission"], "P07") - _cord(office["batch"], "P07")
    )

    stats = json.loads(runner.invoke(cli, ["stats", "--format", "json"]).output)
    # 20 current plans: P04 reviewed to a variation; P05, P07 (v2) and P09 deviations; P12 incomplete
    # (counted apart although its automatic grade is per protocol); the other 15 per protocol.
    # 22 submissions: P02 and P07 twice, P05's identical files once. Accepted: P01 after 2 days,
    # P03 after 4, P02 after 16 (from its first submission): median 4.
    total = stats["total"]
    assert {k: total[k] for k in ("plans", "submissions", "resubmissions", "per_protocol", "variation_acceptable",
                                  "deviation_unacceptable", "incomplete", "accepted", "rejected", "pending",
                                  "median_days_to_acceptance")} == {
        "plans": 20, "submissions": 22, "resubmissions": 2, "per_protocol": 15, "variation_acceptable": 1,
        "deviation_unacceptable": 3, "incomplete": 1, "accepted": 3, "rejected": 1, "pending": 16,
        "median_days_to_acceptance": 4.0,
    }  # fmt: skip
    groups = {g["key"]: g for g in stats["groups"]}
    expected = {  # plans, submissions, PP, VA, DU, incomplete, accepted, median days
        "Centre A": (7, 8, 5, 1, 1, 0, 1, 2.0),  # P01 P04 P07 P10 P13 P16 P19
        "Centre B": (7, 8, 6, 0, 1, 0, 1, 16.0),  # P02 P05 P08 P11 P14 P17 P20
        "Centre C": (6, 6, 4, 0, 1, 1, 1, 4.0),  # P03 P06 P09 P12 P15 P18
    }
    keys = ("plans", "submissions", "per_protocol", "variation_acceptable", "deviation_unacceptable", "incomplete",
            "accepted", "median_days_to_acceptance")  # fmt: skip
    assert {k: tuple(g[c] for c in keys) for k, g in groups.items()} == expected
    rules = {r["rule"]: r for r in stats["rules"]}
    assert stats["rules"][0]["rule"] == "CORD_MAX"
    assert rules["CORD_MAX"] == {
        "rule": "CORD_MAX",
        "deviation_unacceptable": 3,
        "variation_acceptable": 0,
        "not_evaluable": 1,
    }
    assert rules["NORMAL_LIVER_MEAN"]["deviation_unacceptable"] == 0  # overridden on P04
    assert rules["NORMAL_LIVER_MEAN"]["variation_acceptable"] == 1

    month = json.loads(runner.invoke(cli, ["stats", "--by", "month", "--format", "json"]).output)
    assert [(g["key"], g["plans"]) for g in month["groups"]] == [("2026-01", 20)]
    since = json.loads(runner.invoke(cli, ["stats", "--since", "2026-01-10", "--format", "json"]).output)
    assert (since["total"]["plans"], since["total"]["submissions"]) == (2, 2)  # the two new versions
    html = runner.invoke(cli, ["stats", "--format", "html"]).output
    assert html.count("<svg") == 4  # a bar per institution and one for all
    csv = runner.invoke(cli, ["stats", "--format", "csv"]).output.splitlines()
    assert csv[0].startswith("institution,plans,submissions") and len(csv) == 5
    assert runner.invoke(cli, ["ledger", "verify"]).exit_code == 0
