"""Issue 19, the rest: findings graded over an interval (volume outside the dose grid) and on an
equivalent dose carry their value and grade under every end-cap convention; the CSV reports say
which grades depend on it; ``rtqa dvh`` gives relative values (% of Rx) or says why not."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fixtures import cases, nelms, phantoms
from fixtures.writer import Patient, uid, write_dose
from rtqa.cli import cli
from rtqa.discovery.grouping import discover
from rtqa.discovery.load import load_case
from rtqa.evaluation.evaluate import evaluate
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from rtqa.report.model import CheckResult
from rtqa.report.render import as_json, findings_csv, plans_csv
from tests.end_cap_protocols import SPHERE_PTV, write_protocol

# sphere20 (radius 20 mm) on 3 mm planes: the lowest contour is at z = -18 mm, its circle of
# area pi (20^2 - 18^2) = 238.8 mm2; the dose is 50 Gy + 1 Gy/mm along z (fixtures/phantoms.py)
LOW_RING_MM2 = math.pi * (20.0**2 - 18.0**2)
LOWEST_NODE_MM = -17.25  # the dose grid starts here, 1 mm apart in z: it covers down to -17.75 mm


@pytest.fixture(scope="module")
def cropped(tmp_path_factory):
    """The sphere with its dose grid cut at z = -17.75 mm. The lowest contour's slab is cut into
    sub-slabs no thicker than the dose's 1 mm, each covered when its middle is
    (rtqa/dvh/engine.py): ``none`` stops at the -18 mm contour (sub-slabs -18..-17.25..-16.5,
    middles -17.625 and -16.875: covered); ``half_slab`` reaches -19.5 mm (sub-slabs of 1 mm,
    middles -19, -18 and -17: 2 mm x 238.8 mm2 = 0.478 cc outside the grid); ``shape`` reaches
    further down than none, partly outside too."""
    out = str(tmp_path_factory.mktemp("crop"))
    folder = cases.write_phantom_case(out, "sphere20", "zgrad", 3.0, 3.0)
    name = os.path.basename(folder)
    patient = Patient.make(name.upper()[:64], name="Phantom^sphere20")
    x = np.arange(-29 + 0.37 * 3, 29, 3.0)
    y = np.arange(-29 + 0.21 * 3, 29, 3.0)
    z = np.arange(LOWEST_NODE_MM, 30.0, 1.0)
    zz, yy, xx = np.meshgrid(z, y, x, indexing="ij")
    write_dose(
        os.path.join(folder, "RD.dcm"), patient, sop_uid=uid(name, "dose"),
        dose_gy=phantoms.evaluate_dose("zgrad", xx, yy, zz), x_mm=x, y_mm=y, z_mm=z, plan_uids=[uid(name, "plan")],
    )  # fmt: skip
    (plan_set,) = [p for p in discover([folder]).plan_sets if p.plans]
    return load_case(plan_set)


def _protocol(tmp_path: Path, end_cap: str) -> str:
    return write_protocol(
        tmp_path,
        "crop",
        end_cap,
        SPHERE_PTV
        + """\
constraints:
  - {id: PTV_V30, structure: PTV, metric: "V30Gy[cc]", per_protocol: ">= 33",
     variation_acceptable: ">= 30", source: "test"}
  - {id: PTV_V30_EQD2, structure: PTV, metric: "V30Gy[cc]", per_protocol: ">= 33",
     variation_acceptable: ">= 30", dose: {eqd2: {alpha_beta: 10, source: "test"}}, source: "test"}
  - {id: PTV_MIN, structure: PTV, metric: "Min[Gy]", per_protocol: ">= 20",
     variation_acceptable: ">= 0", source: "test"}
  - {id: PTV_MEAN, structure: PTV, metric: "Mean[Gy]", per_protocol: "<= 80", source: "test"}
""",
        protocol_id="CROP",
    )


def _by(report, rule):
    (f,) = [f for f in report.findings if f.rule == rule]
    return f, {e.end_cap: e for e in f.by_end_cap}


@pytest.mark.parametrize("rule", ["PTV_V30", "PTV_V30_EQD2"])
def test_an_interval_graded_finding_carries_every_convention_and_says_when_its_grade_depends_on_it(
    cropped, tmp_path, rule
):
    # every voxel gets at least 32.75 Gy (the lowest node, the nearest face below it), and at
    # 2 Gy x 25 its EQD2 (alpha/beta 10) at least 32.75 (1.31 + 10) / 12 = 30.9 Gy: V30Gy is the
    # covered volume, and the volume outside the grid counts only at the interval's high end
    report = evaluate(cropped, load_protocol(_protocol(tmp_path, "half_slab")))
    f, by = _by(report, rule)
    ring_cc = LOW_RING_MM2 / 1000  # per mm of the lowest contour's slab
    assert f.value is None and f.interval is not None
    lo, hi = f.interval
    assert hi - lo == pytest.approx(2 * ring_cc, rel=0.02)  # the 2 mm outside the grid
    assert by["half_slab"].interval == f.interval and by["half_slab"].value is None
    assert f.grade is Grade.PER_PROTOCOL and by["half_slab"].grade is Grade.PER_PROTOCOL  # 33.07-33.55 >= 33
    # none drops both half slabs (top and bottom, the same ring): 3 mm x 238.8 mm2 less, 32.84 cc
    assert by["none"].interval is None
    assert hi - by["none"].value == pytest.approx(3 * ring_cc, rel=0.02)
    assert by["none"].grade is Grade.VARIATION_ACCEPTABLE
    assert by["shape"].interval is not None  # its end reaches below the grid too
    assert f.convention_sensitive and rule in report.convention_sensitive
    assert "convention-sensitive: per protocol with half_slab (" in f.message
    assert f"variation acceptable with none ({by['none'].value:.2f} cc)" in f.message
    js = f.as_json()["by_end_cap"]
    assert js["half_slab"]["value"] is None and js["half_slab"]["grade"] == "per_protocol"
    assert (js["half_slab"]["interval"]["low"], js["half_slab"]["interval"]["high"]) == (lo, hi)
    assert js["none"]["interval"] is None and js["none"]["value"] == by["none"].value


def test_a_value_under_the_protocols_convention_shows_the_others_intervals(cropped, tmp_path):
    report = evaluate(cropped, load_protocol(_protocol(tmp_path, "none")))
    f, by = _by(report, "PTV_MIN")
    # none: covered, Min is the dose of the lowest node (32.75 Gy), per protocol; half_slab: its
    # slab outside the grid may receive 0 Gy, so Min lies in 0-32.75 Gy and the grade is open
    assert f.value == pytest.approx(50.0 + LOWEST_NODE_MM, abs=0.01) and f.grade is Grade.PER_PROTOCOL
    assert by["half_slab"].value is None and by["half_slab"].interval == pytest.approx((0.0, 50.0 + LOWEST_NODE_MM))
    assert by["half_slab"].grade is Grade.NOT_EVALUABLE
    assert f.convention_sensitive
    # not evaluable there, with the grades it resolves to: a variation at 0 Gy, per protocol at 32.75 Gy
    assert "not evaluable (variation acceptable or per protocol) with half_slab (0.00–32.75 Gy)" in f.message
    # a limit far from every convention's value: no flag, yet every convention is given
    mean, by_mean = _by(report, "PTV_MEAN")
    assert set(by_mean) == {"half_slab", "none", "shape"} and not mean.convention_sensitive


def test_the_report_with_interval_entries_follows_the_schema(cropped, tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    protocol = load_protocol(_protocol(tmp_path, "half_slab"))
    doc = as_json(CheckResult(protocol, (evaluate(cropped, protocol),), ()))
    schema = json.loads((Path(__file__).parents[1] / "rtqa/schemas/report-v1.schema.json").read_text())
    jsonschema.validate(doc, schema)
    entries = [e for f in doc["plans"][0]["findings"] for e in f.get("by_end_cap", {}).values()]
    assert any(e["interval"] is not None for e in entries) and any(e["interval"] is None for e in entries)


# the columns scripts read before issue 19, in their order: new ones are only appended
FINDING_COLUMNS_BEFORE = (
    "patient_id,plan_uid,rule,structure,matched_roi,match,metric,value,unit,reference_gy,per_protocol,"
    "variation_acceptable,grade,category,unconfirmed,location_mm,source,message"
).split(",")
PLAN_COLUMNS_BEFORE = (
    "patient_id,plan_uid,plan_label,plan_date,approval_status,institution,verdict,grade,complete,resubmit,"
    "deviations,deviation_rules,variations,variation_rules,not_evaluable,eligibility,total_gy,fractions,"
    "per_fraction_gy,prescription_source,dose_source,protocol_id,protocol_version,protocol_sha256,checked_at,"
    "errors,warnings"
).split(",")


def test_the_csv_reports_say_which_grades_depend_on_the_convention(cropped, tmp_path):
    protocol = load_protocol(_protocol(tmp_path, "none"))
    report = evaluate(cropped, protocol)
    result = CheckResult(protocol, (report,), ())
    rows = list(csv.DictReader(io.StringIO(findings_csv(result))))
    header = list(rows[0])
    assert header[: len(FINDING_COLUMNS_BEFORE)] == FINDING_COLUMNS_BEFORE
    assert header[len(FINDING_COLUMNS_BEFORE) :] == ["convention_sensitive", "by_end_cap"]
    by_rule = {r["rule"]: r for r in rows}
    v30, _ = _by(report, "PTV_V30")
    assert v30.convention_sensitive and by_rule["PTV_V30"]["convention_sensitive"] == "true"
    cells = dict(part.split(" ", 1) for part in by_rule["PTV_V30"]["by_end_cap"].split("; "))
    assert cells["none"] == f"{v30.value:.2f} cc variation_acceptable"
    assert cells["half_slab"].endswith(" cc per_protocol") and "–" in cells["half_slab"]
    assert by_rule["PTV_MEAN"]["convention_sensitive"] == "false"
    assert by_rule["PTV_MEAN"]["by_end_cap"].count("per_protocol") == 3
    # a finding that is not a DVH value has no conventions to compare
    fractions = [r for r in rows if r["rule"] not in by_rule or not r["rule"].startswith("PTV_")]
    assert fractions and all(r["by_end_cap"] == "" and r["convention_sensitive"] == "false" for r in fractions)
    (plan,) = list(csv.DictReader(io.StringIO(plans_csv(result))))
    assert list(plan)[: len(PLAN_COLUMNS_BEFORE)] == PLAN_COLUMNS_BEFORE
    assert list(plan)[-1] == "convention_sensitive"
    assert set(plan["convention_sensitive"].split(";")) == set(report.convention_sensitive)
    assert {"PTV_V30", "PTV_V30_EQD2", "PTV_MIN"} <= set(report.convention_sensitive)
    assert "PTV_MEAN" not in report.convention_sensitive


# -- rtqa dvh on a structure set and a dose: relative values ---------------------------------

DVH_COLUMNS_BEFORE = (
    "patient_id,plan_uid,structure,roi,volume_cc,uncovered_cc,min_gy,mean_gy,max_gy,D98%_gy,D95%_gy,D50%_gy,"
    "D2%_gy,D2cc_gy,D0.03cc_gy,problem"
).split(",")


def test_rtqa_dvh_without_a_plan_gives_percent_of_rx_given_with_rx(rsrd):
    truth = nelms.truth("Sphere", "SI")  # the analytic truth on the true sphere
    res = CliRunner().invoke(cli, ["dvh", rsrd, "--rx", "20", "--format", "json"])
    assert res.exit_code == 0, res.output
    (plan,) = json.loads(res.stdout)["plans"]
    assert plan["relative"]["rx_gy"] == 20.0 and plan["relative"]["basis"] == "--rx"
    s = plan["structures"]["Sphere"]
    pct = s["pct_rx"]
    assert set(pct) == {"Min", "Mean", "Max", "D98%", "D95%", "D2%", "D0.03cc"}
    # the sphere's mean is its centre's dose, 14.5 Gy (closed form): 72.5 % of 20 Gy; the
    # contour stack's mean agrees to 0.05 Gy on this grid (test_end_caps, bench/README)
    assert pct["Mean"] == pytest.approx(100 * truth.mean_gy / 20, abs=0.3)
    # D95 of the true sphere, 5.75 Gy (quadrature, fixtures/nelms.py); the stack on 2 mm planes
    # with half slabs is off by up to 3 % of the dose range, as the benchmark measures
    assert pct["D95%"] == pytest.approx(100 * truth.D95 / 20, abs=100 * 0.03 * 24 / 20)
    for name, gy in (("Max", s["max_gy"]), ("D98%", s["d_gy"]["D98%"]), ("D0.03cc", s["d_gy"]["D0.03cc"])):
        assert pct[name] == pytest.approx(100 * gy / 20, abs=0.06)  # both rounded: 0.005 Gy of 20 Gy
    text = CliRunner().invoke(cli, ["dvh", rsrd, "--rx", "20"]).stdout
    assert "% of Rx (20.00 Gy from --rx):" in text
    row = next(line.split() for line in text.splitlines()[text.splitlines().index("  % of Rx (20.00 Gy from --rx):") :]
               if line.strip().startswith("Sphere"))  # fmt: skip
    assert float(row[2]) == pct["Mean"] and float(row[5]) == pct["D95%"]
    out = CliRunner().invoke(cli, ["dvh", rsrd, "--rx", "20", "--format", "csv"]).stdout
    (r,) = list(csv.DictReader(io.StringIO(out)))
    assert float(r["rx_gy"]) == 20.0 and float(r["Mean_pct_rx"]) == pct["Mean"]
    assert r["relative"] == "20.00 Gy from --rx"
    assert list(r)[: len(DVH_COLUMNS_BEFORE)] == DVH_COLUMNS_BEFORE  # the columns before stay first


def test_rtqa_dvh_without_a_plan_or_rx_says_the_relative_values_are_unavailable(rsrd):
    why = "unavailable: no prescription (no RT Plan): give --rx GY"
    res = CliRunner().invoke(cli, ["dvh", rsrd, "--format", "json"])
    assert res.exit_code == 0, res.output
    (plan,) = json.loads(res.stdout)["plans"]
    assert plan["relative"] == {"rx_gy": None, "basis": "no prescription (no RT Plan): give --rx GY", "text": why}
    assert plan["structures"]["Sphere"]["pct_rx"] is None
    assert f"  % of Rx: {why}" in CliRunner().invoke(cli, ["dvh", rsrd]).stdout
    (r,) = list(csv.DictReader(io.StringIO(CliRunner().invoke(cli, ["dvh", rsrd, "--format", "csv"]).stdout)))
    assert r["relative"] == why and r["rx_gy"] == "" and all(r[k] == "" for k in r if k.endswith("_pct_rx"))
    assert r["mean_gy"] != ""  # the absolute values are there


def test_rtqa_dvh_with_a_plan_gives_percent_of_its_prescription(tmp_path):
    folder = cases.write_phantom_case(str(tmp_path), "sphere20", "zgrad", 3.0, 3.0)
    res = CliRunner().invoke(cli, ["dvh", folder, "--format", "json"])
    assert res.exit_code == 0, res.output
    (plan,) = json.loads(res.stdout)["plans"]
    assert plan["relative"]["rx_gy"] == phantoms.REFERENCE_DOSE_GY
    assert "plan's prescription" in plan["relative"]["basis"]
    # the sphere's mean in a dose linear in z is the dose at its centre, 50 Gy: 100 % of Rx
    assert plan["structures"]["sphere20"]["pct_rx"]["Mean"] == pytest.approx(100.0, abs=0.1)
    res = CliRunner().invoke(cli, ["dvh", folder, "--rx", "40", "--format", "json"])
    (plan,) = json.loads(res.stdout)["plans"]
    assert plan["relative"]["rx_gy"] == 40.0 and "the plan says sphere20 50.00 Gy" in plan["relative"]["basis"]
    assert plan["structures"]["sphere20"]["pct_rx"]["Mean"] == pytest.approx(125.0, abs=0.1)
