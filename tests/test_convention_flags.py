"""A grade that depends on the DVH end-cap convention flags the plan also when it is the dose
grid's coverage of a structure (TARGET_COVERAGE), the volume of a GTV outside its PTV
(GTV_IN_PTV), or the grades a not-evaluable finding can still resolve to (an unknown clinical
fact, an interval), which differ between conventions while the grade is not evaluable under all."""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fixtures import cases, phantoms
from fixtures.writer import Patient, RoiSpec, uid, write_structure_set
from rtqa.cli import cli
from rtqa.discovery.grouping import discover
from rtqa.discovery.load import load_case
from rtqa.evaluation.evaluate import evaluate
from rtqa.protocol.limits import Grade
from rtqa.protocol.loader import load_protocol
from rtqa.report.model import CheckResult
from rtqa.report.render import as_json
from tests.test_end_caps_report import LOW_RING_MM2, cropped  # noqa: F401 (a fixture)

HEAD = """\
protocol: {{id: FLAGS, version: "1"}}
dvh: {{end_cap: {end_cap}}}
fractionation:
  dose_per_fraction: {{value: 2.0, tolerance_pct: 100, source: "test"}}
  total_dose: {{range: [1, 100], variation_pct: 5, source: "test"}}
"""


def _write(tmp_path: Path, name: str, end_cap: str, body: str) -> str:
    path = tmp_path / f"{name}_{end_cap}.yaml"
    path.write_text(HEAD.format(end_cap=end_cap) + textwrap.dedent(body), encoding="utf-8")
    return str(path)


def _by(report, rule):
    (f,) = [f for f in report.findings if f.rule == rule]
    return f, {e.end_cap: e for e in f.by_end_cap}


def _valid(report, protocol) -> dict:
    jsonschema = pytest.importorskip("jsonschema")
    doc = as_json(CheckResult(protocol, (report,), ()))
    schema = json.loads((Path(__file__).parents[1] / "rtqa/schemas/report-v1.schema.json").read_text())
    jsonschema.validate(doc, schema)
    return doc


# -- 1. the dose grid's coverage of a target ---------------------------------------------------


COVERAGE = """\
structures:
  PTV: {role: target, aliases: [sphere20]}
technical:
  - {id: TARGET_COVERAGE, check: target_coverage, source: "test"}
"""


def test_target_coverage_that_depends_on_the_end_cap_flags_the_plan(cropped, tmp_path):  # noqa: F811
    # the grid stops at z = -17.75 mm, the lowest contour is at -18 mm (tests/test_end_caps_report.py):
    # under none the sphere is covered; under half_slab its lowest 2 mm (of the 1.5 mm half slab
    # and the 0.25 mm below the grid, sampled in 1 mm sub-slabs) lie outside, 2 x 238.8 mm2
    protocol = load_protocol(_write(tmp_path, "cov", "none", COVERAGE))
    report = evaluate(cropped, protocol)
    f, by = _by(report, "TARGET_COVERAGE")
    assert f.grade is Grade.PER_PROTOCOL and f.value == 0.0  # graded with the protocol's none
    assert set(by) == {"half_slab", "none", "shape"}
    assert by["none"].grade is Grade.PER_PROTOCOL and by["none"].value == 0.0
    assert by["half_slab"].grade is Grade.NOT_EVALUABLE
    assert by["half_slab"].value == pytest.approx(2 * LOW_RING_MM2 / 1000, abs=0.011)
    assert by["shape"].grade is Grade.NOT_EVALUABLE and by["shape"].value > 0  # its end reaches below too
    assert f.convention_sensitive and "TARGET_COVERAGE" in report.convention_sensitive
    assert "convention-sensitive: per protocol with none (0.00 cc), not evaluable with half_slab" in f.message
    js = _valid(report, protocol)["plans"][0]
    assert "TARGET_COVERAGE" in js["convention_sensitive"]
    # the same grid graded with half_slab: not evaluable (resubmit), none per protocol beside it
    report = evaluate(cropped, load_protocol(_write(tmp_path, "cov", "half_slab", COVERAGE)))
    f, by = _by(report, "TARGET_COVERAGE")
    assert (f.grade, f.category) == (Grade.NOT_EVALUABLE, "resubmit") and by["none"].grade is Grade.PER_PROTOCOL
    assert f.convention_sensitive


# -- 2. possible grades of a finding not evaluable under every convention ----------------------------
# sphere20 on 3 mm planes in 50 Gy + 1 Gy/mm along z (fixtures/phantoms.py): its top contour is at
# z = 18 mm, so Max is 68 Gy under none and 69.5 Gy half a slab beyond under half_slab
# (tests/test_review19.py)

BY_CLASS = """\
structures:
  PTV: {{role: target, aliases: [sphere20]}}
constraints:
  - id: PTV_MAX
    structure: PTV
    metric: "Max[Gy]"
    source: "test"
    limits_by:
      child_pugh:
        "A5, A6": {{per_protocol: "<= {a_pp}", variation_acceptable: "<= {a_va}", source: "test A"}}
        "B7, B8": {{per_protocol: "<= {b_pp}", variation_acceptable: "<= {b_va}", source: "test B"}}
"""


@pytest.fixture(scope="module")
def sphere(tmp_path_factory):
    return cases.write_phantom_case(str(tmp_path_factory.mktemp("flags")), "sphere20", "zgrad", 3.0, 3.0)


def _load(folder: str):
    (plan_set,) = [p for p in discover([folder]).plan_sets if p.plans]
    return load_case(plan_set)


def test_possible_grades_that_differ_between_conventions_flag_the_plan(sphere, tmp_path):
    # child-pugh unknown (no clinical CSV). none 68 Gy: A per protocol (<= 69), B a variation
    # (<= 69.2); half_slab 69.5 Gy: A a variation (<= 74), B a deviation (> 69.2). Not evaluable
    # under both, but the best case is per protocol under none and a variation under half_slab
    path = _write(tmp_path, "class", "none", BY_CLASS.format(a_pp=69, a_va=74, b_pp=60, b_va=69.2))
    protocol = load_protocol(path)
    report = evaluate(_load(sphere), protocol)
    f, by = _by(report, "PTV_MAX")
    assert {e.grade for e in by.values()} == {Grade.NOT_EVALUABLE}
    assert {g for g, _ in by["none"].possible} == {Grade.PER_PROTOCOL, Grade.VARIATION_ACCEPTABLE}
    assert {g for g, _ in by["half_slab"].possible} == {Grade.VARIATION_ACCEPTABLE, Grade.DEVIATION_UNACCEPTABLE}
    assert by["none"].possible == f.possible_grades  # the protocol's convention's are the finding's
    assert f.convention_sensitive and "PTV_MAX" in report.convention_sensitive
    assert (
        "convention-sensitive: not evaluable (per protocol or variation acceptable) with none (68.00 Gy), "
        "not evaluable (variation acceptable or deviation unacceptable) with half_slab (69.50 Gy)"
    ) in f.message
    entry = _valid(report, protocol)["plans"][0]["findings"]
    (js,) = [e for e in entry if e["rule"] == "PTV_MAX"]
    assert {p["grade"] for p in js["by_end_cap"]["half_slab"]["possible_grades"]} == {
        "variation_acceptable",
        "deviation_unacceptable",
    }
    res = CliRunner().invoke(cli, ["check", sphere, "--protocol", path])
    assert res.exit_code & 16, res.output


def test_the_same_possible_grades_under_every_convention_are_not_flagged(sphere, tmp_path):
    # A per protocol (<= 75) and B a variation (<= 60, <= 75) at 68, 69.5 and about 70 Gy alike
    path = _write(tmp_path, "same", "none", BY_CLASS.format(a_pp=75, a_va=80, b_pp=60, b_va=75))
    report = evaluate(_load(sphere), load_protocol(path))
    f, by = _by(report, "PTV_MAX")
    assert f.grade is Grade.NOT_EVALUABLE and {e.grade for e in by.values()} == {Grade.NOT_EVALUABLE}
    assert all(e.possible for e in by.values())
    assert not f.convention_sensitive and "convention-sensitive" not in f.message


V30_BY_CLASS = """\
structures:
  PTV: {{role: target, aliases: [sphere20]}}
constraints:
  - id: PTV_V30
    structure: PTV
    metric: "V30Gy[cc]"
    source: "test"
    limits_by:
      child_pugh:
        "A5, A6": {{per_protocol: ">= {a_pp}", variation_acceptable: ">= {a_va}", source: "test A"}}
        "B7, B8": {{per_protocol: ">= 1", source: "test B"}}
"""


def test_an_interval_not_evaluable_everywhere_whose_outcomes_differ_flags_the_plan(cropped, tmp_path):  # noqa: F811
    # the cropped sphere: V30Gy is a number under none (covered) and an interval under half_slab
    # (its lowest 2 mm outside the grid count at the high end only; tests/test_end_caps_report.py)
    plain = V30_BY_CLASS.format(a_pp=1, a_va=1)
    _, by = _by(evaluate(cropped, load_protocol(_write(tmp_path, "v30", "half_slab", plain))), "PTV_V30")
    none, (lo, hi) = by["none"].value, by["half_slab"].interval
    assert none < lo < hi
    # class A: per protocol from the middle of half_slab's interval, a variation from between none
    # and its low end. none: A a deviation, B per protocol; half_slab: A a variation at the low
    # end and per protocol at the high end, B per protocol: not evaluable under both, with
    # different grades to resolve to
    a_pp, a_va = round((lo + hi) / 2, 3), round((none + lo) / 2, 3)
    protocol = load_protocol(_write(tmp_path, "v30", "half_slab", V30_BY_CLASS.format(a_pp=a_pp, a_va=a_va)))
    report = evaluate(cropped, protocol)
    f, by = _by(report, "PTV_V30")
    assert by["none"].grade is Grade.NOT_EVALUABLE and by["half_slab"].grade is Grade.NOT_EVALUABLE
    assert {g for g, _ in by["none"].possible} == {Grade.DEVIATION_UNACCEPTABLE, Grade.PER_PROTOCOL}
    assert {g for g, _ in by["half_slab"].possible} == {Grade.VARIATION_ACCEPTABLE, Grade.PER_PROTOCOL}
    assert f.convention_sensitive and "PTV_V30" in report.convention_sensitive
    _valid(report, protocol)


# -- 3. a GTV outside its PTV only under one convention ------------------------------------------


GTV_IN_PTV = """\
structures:
  PTV: {role: target, aliases: [cylinder25]}
  GTV: {role: target, aliases: [sphere20]}
technical:
  - {id: GTV_IN_PTV, check: gtv_outside_ptv, structure: GTV, within: PTV, per_protocol: "<= 0.01", source: "test"}
"""


@pytest.fixture(scope="module")
def dome_in_cylinder(tmp_path_factory):
    """sphere20 (the GTV) inside a cylinder of radius 25 mm (the PTV) contoured on the same 3 mm
    planes, -18 to 18 mm. none: both end at the outer contours, the GTV inside; half_slab: both
    reach 1.5 mm beyond with their outer outlines, the GTV's (radius 8.7 mm) inside the PTV's;
    shape: the PTV's flat end stays at 1.5 mm beyond, the GTV's dome closes at its pole, 2 mm
    beyond (README, "DVH at structure ends"): the caps of the sphere from 19.5 to 20 mm lie
    outside, 2 x pi h^2 (3R - h) / 3 with h = 0.5, R = 20: 31.2 mm3."""
    folder = cases.write_phantom_case(str(tmp_path_factory.mktemp("dome")), "sphere20", "zgrad", 3.0, 3.0)
    name = os.path.basename(folder)
    ptv = phantoms.Shape("cylinder25", "cylinder", 25.0, 36.0)
    rois = []
    for number, shape in ((1, phantoms.SHAPES["sphere20"]), (2, ptv)):
        contours = [
            ("CLOSED_PLANAR", np.column_stack([ring, np.full(len(ring), z)]))
            for z, rings in phantoms.shape_contours(shape, 3.0)
            for ring in rings
        ]
        rois.append(RoiSpec(number, shape.name, "PTV" if number == 2 else "GTV", (255, 0, 0), contours))
    patient = Patient.make(name.upper()[:64], name="Phantom^sphere20")
    write_structure_set(os.path.join(folder, "RS.dcm"), patient, rois, sop_uid=uid(name, "ss"))
    return _load(folder)


def test_a_gtv_outside_its_ptv_only_under_shape_flags_the_plan(dome_in_cylinder, tmp_path):
    protocol = load_protocol(_write(tmp_path, "gtv", "half_slab", GTV_IN_PTV))
    report = evaluate(dome_in_cylinder, protocol)
    f, by = _by(report, "GTV_IN_PTV")
    caps_mm3 = 2 * math.pi * 0.5**2 * (3 * 20.0 - 0.5) / 3
    assert f.grade is Grade.PER_PROTOCOL and f.value == 0.0  # graded with half_slab
    assert by["none"].value == 0.0 and by["none"].grade is Grade.PER_PROTOCOL
    # the shape end is cut in sub-slabs of about 0.6 mm, each with one outline: the stepped pole
    # holds a little more than the true dome beyond 19.5 mm (0.036 against 0.031 cc; rounded 0.04)
    assert by["shape"].value == pytest.approx(caps_mm3 / 1000, abs=0.011)
    assert by["shape"].grade is Grade.DEVIATION_UNACCEPTABLE
    assert f.convention_sensitive and "GTV_IN_PTV" in report.convention_sensitive
    assert f"deviation unacceptable with shape ({by['shape'].value:.2f} cc)" in f.message
    _valid(report, protocol)
