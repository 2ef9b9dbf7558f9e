"""The ledger and treatment courses: cases keyed by institution + PatientID, versions, plans added
to a course, re-evaluations, ``--resubmission`` (rtqa/ledger/record.py).

Every test that takes ``ledger_url`` runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from fixtures import cases
from fixtures.batch import copy_case
from rtqa.cli import cli
from rtqa.ledger.db import open_ledger, reading
from rtqa.ledger.history import history
from rtqa.ledger.record import record_result
from rtqa.ledger.schema import submissions
from rtqa.ledger.stats import compute_stats
from rtqa.ledger.verify import verify
from tests.ledger_cases import check


@pytest.fixture
def ledger(ledger_url):
    led = open_ledger(ledger_url, create=True)
    yield led
    led.dispose()


def clinical_csv(root: Path, *patients: str) -> Path:
    path = root / "clinical.csv"
    path.write_text("patient_id,child_pugh,dose_algorithm\n" + "".join(f"{p},A5,AAA\n" for p in patients))
    return path


@pytest.fixture(scope="module")
def three_versions(liver_tree, tmp_path_factory):
    """Patient P of Centre A submitted three times, each a new plan: clean, cord overdose, clean
    again under a new plan (new UIDs: copied under another source name)."""
    root = tmp_path_factory.mktemp("three")
    out = []
    for i, source in enumerate(("liver_clean", "liver_cord_overdose", "liver_dose_per_fraction"), start=1):
        copy_case(str(liver_tree / source), str(root / f"v{i}" / "P"), "P", institution="Centre A")
        out.append(check([root / f"v{i}"], clinical_csv(root, "P")))
    return out


def test_three_versions_of_one_patient_are_numbered_and_chained_and_stats_use_the_latest(ledger, three_versions):
    recorded = [record_result(ledger, r)[0] for r in three_versions]
    assert [(r.version, r.kind, r.new) for r in recorded] == [(1, "version", True), (2, "version", True),
                                                                (3, "version", True)]  # fmt: skip
    ids = [r.submission_id for r in recorded]
    assert [r.supersedes for r in recorded] == [None, ids[0], ids[1]]
    views = history(ledger, "P")
    assert [(v.version, v.superseded_by) for v in views] == [(1, ids[1]), (2, ids[2]), (3, None)]
    stats = compute_stats(ledger)
    assert stats.total.plans == 1 and stats.total.submissions == 3 and stats.total.resubmissions == 2
    # the latest version (50 Gy in 20 fractions: a dose-per-fraction deviation) is the one counted,
    # not the first (per protocol) nor the second (the cord overdose)
    latest = three_versions[2].reports[0]
    assert latest.verdict == "deviation_unacceptable"
    assert stats.total.counts["deviation_unacceptable"] == 1 and stats.total.counts["per_protocol"] == 0
    (rule,) = [r for r in stats.rules if r.rule == "FX_DOSE_PER_FRACTION"]
    assert rule.deviation_unacceptable == 1
    assert not [r for r in stats.rules if r.rule == "CORD_MAX"]
    assert verify(ledger).ok


def test_the_same_patient_id_at_two_centres_is_two_cases(ledger, liver_tree, tmp_path):
    """Issue 18: versions keyed on PatientID alone let a patient of another centre supersede the
    first centre's case, whose deviation vanished from the statistics."""
    copy_case(str(liver_tree / "liver_cord_overdose"), str(tmp_path / "a" / "P"), "P", institution="Centre A")
    copy_case(str(liver_tree / "liver_clean"), str(tmp_path / "b" / "P"), "P", institution="Centre B")
    csv = clinical_csv(tmp_path, "P")
    (a,) = record_result(ledger, check([tmp_path / "a"], csv))
    (b,) = record_result(ledger, check([tmp_path / "b"], csv))
    assert (a.version, a.institution, b.version, b.supersedes, b.institution) == (1, "Centre A", 1, None, "Centre B")
    stats = compute_stats(ledger)
    assert stats.total.plans == 2 and stats.total.resubmissions == 0
    assert {g.key: g.counts["deviation_unacceptable"] for g in stats.groups} == {"Centre A": 1, "Centre B": 0}
    assert [v.institution for v in history(ledger, "P")] == ["Centre A", "Centre B"]
    assert [v.institution for v in history(ledger, "P", institution="Centre B")] == ["Centre B"]


@pytest.fixture(scope="module")
def boost_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("boost")
    return Path(cases.write_unlinked_boost(str(root), name="course", patient_id="HCC-COURSE"))


def test_a_boost_added_to_the_course_is_not_a_new_version(ledger, boost_tree, tmp_path):
    """The primary is recorded first; the boost arrives later, unlinked, and the course (both
    plans) is checked: the boost is added to version 1's course, it does not supersede it."""
    csv = clinical_csv(tmp_path, "HCC-COURSE")
    primary = check([boost_tree / "RP.dcm", boost_tree / "RS.dcm", boost_tree / "RD_PLAN.dcm"], csv)
    course = check([boost_tree], csv)
    assert primary.reports[0].verdict == "per_protocol" and course.reports[0].verdict == "deviation_unacceptable"
    (first,) = record_result(ledger, primary)
    (added,) = record_result(ledger, course)
    assert (first.version, first.kind) == (1, "version")
    assert (added.version, added.kind, added.supersedes, added.evaluates) == (1, "addition", None, first.submission_id)
    stats = compute_stats(ledger)
    # one case, one version, its current record the course with the duodenum deviation
    assert stats.total.plans == 1 and stats.total.resubmissions == 0
    assert stats.total.counts["deviation_unacceptable"] == 1
    assert [r.rule for r in stats.rules if r.deviation_unacceptable] == ["DUODENUM_MAX"]
    out = CliRunner().invoke(cli, ["history", "HCC-COURSE", "--ledger", _url(ledger)])
    assert out.exit_code == 0, out.output
    assert "1 version(s), 2 record(s)" in out.output
    assert f"addition of {first.submission_id}" in out.output
    assert "course: HCC IMRT (50 Gy / 25 fx) + HCC boost (10 Gy / 5 fx)" in out.output
    assert verify(ledger).ok


def test_resubmission_forces_a_new_version(ledger_url, boost_tree, tmp_path):
    csv = clinical_csv(tmp_path, "HCC-COURSE")
    runner = CliRunner()
    base = ["check", "--clinical", str(csv), "--ledger", ledger_url, "--format", "json"]
    first = runner.invoke(cli, [*base, str(boost_tree / "RP.dcm"), str(boost_tree / "RS.dcm"),
                                str(boost_tree / "RD_PLAN.dcm")])  # fmt: skip
    assert "recorded as submission 1, version 1" in first.stderr
    forced = runner.invoke(cli, [*base, "--resubmission", str(boost_tree)])
    assert "recorded as submission 2, version 2 (supersedes submission 1)" in forced.stderr, forced.stderr
    led = open_ledger(ledger_url)
    try:
        with reading(led) as conn:
            rows = conn.execute(select(submissions.c.version, submissions.c.kind).order_by(submissions.c.id)).all()
    finally:
        led.dispose()
    assert [tuple(r) for r in rows] == [(1, "version"), (2, "version")]
    refused = runner.invoke(cli, ["check", "--resubmission", str(boost_tree)])
    assert refused.exit_code == 2 and "--resubmission" in refused.output


def _url(ledger) -> str:
    return ledger.engine.url.render_as_string(hide_password=False)


def test_making_a_version_an_addition_breaks_the_chain(ledger, three_versions):
    """The record kind is hashed whenever it says more than an older row would (a version): turning
    the second version into an addition (it would vanish from the resubmission count) is named."""
    from sqlalchemy import update

    from rtqa.ledger.db import writing

    ids = [record_result(ledger, r)[0].submission_id for r in three_versions[:2]]
    assert verify(ledger).ok
    with writing(ledger, lock=False) as conn:
        conn.execute(update(submissions).where(submissions.c.id == ids[1]).values(kind="addition"))
    assert not verify(ledger).ok
