"""The audit ledger: recording, idempotency, versions, reviews, reports, the hash chain, errors.

Every test that takes ``ledger_url`` runs on SQLite and on a real PostgreSQL server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import jsonschema
import pytest
from click.testing import CliRunner
from sqlalchemy import delete, text, update

from rtqa.cli import cli
from rtqa.ledger.db import open_ledger, reading, writing
from rtqa.ledger.errors import LedgerError
from rtqa.ledger.history import history
from rtqa.ledger.record import record_result
from rtqa.ledger.review import add_decision, view
from rtqa.ledger.schema import HEAD, decisions, findings, submissions
from rtqa.ledger.stats import compute_stats
from rtqa.ledger.verify import verify
from tests.ledger_cases import check, make_patients

SCHEMA = json.loads(resources.files("rtqa").joinpath("schemas/report-v1.schema.json").read_text())


@pytest.fixture(scope="module")
def results(liver_tree, tmp_path_factory):
    """P1 clean, then P1 again with a cord overdose (its next version); P2 clean."""
    root = tmp_path_factory.mktemp("ledger")
    tree, clinical = make_patients(
        liver_tree, root, [("P1", "liver_clean", "Centre A"), ("P2", "liver_clean", "Centre B")]
    )
    tree2, _ = make_patients(liver_tree, root / "v2", [("P1", "liver_cord_overdose", "Centre A")])
    return {
        "first": check([tree], clinical),
        "p1_cord": check([tree2], clinical),
        "tree": tree,
        "clinical": clinical,
    }


@pytest.fixture
def ledger(ledger_url):
    led = open_ledger(ledger_url, create=True)
    yield led
    led.dispose()


def test_same_inputs_are_one_submission_and_a_new_plan_is_the_next_version(ledger, results):
    first = record_result(ledger, results["first"], user="tester")
    assert [(r.patient_id, r.submission_id, r.version, r.new) for r in first] == [
        ("P1", 1, 1, True),
        ("P2", 2, 1, True),
    ]
    again = record_result(ledger, results["first"])
    assert [(r.submission_id, r.new) for r in again] == [(1, False), (2, False)]
    (v2,) = record_result(ledger, results["p1_cord"])
    assert (v2.submission_id, v2.version, v2.supersedes, v2.new) == (3, 2, 1, True)
    versions = history(ledger, "P1")
    assert [(v.id, v.version, v.superseded_by) for v in versions] == [(1, 1, 3), (3, 2, None)]
    assert [v.auto_grade for v in versions] == ["per_protocol", "deviation_unacceptable"]
    with reading(ledger) as conn:
        assert conn.execute(select_count(submissions)).scalar_one() == 3
        row = conn.execute(submissions.select().where(submissions.c.id == 1)).one()
    assert row.os_user == "tester" and row.institution == "Centre A" and row.protocol_id == "NCT03535259"
    # every input file and its checksum is kept, as the check report gave them
    stored = json.loads(row.report)["plan"]["inputs"]
    assert stored == results["first"].reports[0].as_json()["inputs"]
    assert verify(ledger).ok


def select_count(table):
    from sqlalchemy import func, select

    return select(func.count()).select_from(table)


def test_the_latest_decision_stands_and_the_trail_is_kept(ledger, results):
    record_result(ledger, results["first"])
    (cord,) = record_result(ledger, results["p1_cord"])
    sid = cord.submission_id
    add_decision(ledger, sid, action="grade", rule="CORD_MAX", grade="per_protocol", reason="first look", reviewer="A")
    add_decision(
        ledger, sid, action="grade", rule="CORD_MAX", grade="variation_acceptable", reason="PI: accepted", reviewer="B"
    )
    v = view(ledger, sid)
    (cord_max,) = [f for f in v.findings if f.finding["rule"] == "CORD_MAX"]
    assert cord_max.auto_grade == "deviation_unacceptable" and cord_max.grade == "variation_acceptable"
    assert [d.reviewer for d in cord_max.trail] == ["A", "B"]
    assert (v.auto_grade, v.final_grade, v.status) == ("deviation_unacceptable", "variation_acceptable", "pending")
    add_decision(ledger, sid, action="accept_plan", reason="all reviewed", reviewer="B")
    assert view(ledger, sid).status == "accepted"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"action": "grade", "rule": "CORD_MAX", "grade": "per_protocol", "reason": "  "}, "needs a reason"),
        (
            {"action": "grade", "rule": "NO_SUCH_RULE", "grade": "per_protocol", "reason": "x"},
            "no finding of rule NO_SUCH_RULE",
        ),
        ({"action": "grade", "rule": "CORD_MAX", "grade": "fine", "reason": "x"}, "unknown grade 'fine'"),
        ({"action": "grade", "rule": "PTV_D95", "roi": "PTVx", "grade": "per_protocol", "reason": "x"}, "on ROI PTVx"),
    ],
)
def test_a_decision_that_cannot_stand_is_refused(ledger, results, kwargs, message):
    record_result(ledger, results["first"])
    with pytest.raises(LedgerError, match=message):
        add_decision(ledger, 1, reviewer="A", **kwargs)
    with pytest.raises(LedgerError, match="no submission 99"):
        add_decision(ledger, 99, action="accept_plan", reason="x", reviewer="A")


def test_decisions_on_an_earlier_version_are_shown_to_confirm_not_applied(ledger, results):
    record_result(ledger, results["first"])
    add_decision(
        ledger, 1, action="grade", rule="PTV_D95", roi="PTVp", grade="variation_acceptable", reason="r", reviewer="A"
    )
    add_decision(ledger, 1, action="accept_plan", reason="ok", reviewer="A")
    (v2,) = record_result(ledger, results["p1_cord"])
    new = view(ledger, v2.submission_id)
    assert new.decisions == () and new.status == "pending"
    assert [(n, d.action, d.rule) for n, d in new.earlier] == [(1, "grade", "PTV_D95"), (1, "accept_plan", None)]
    assert all(f.grade == f.auto_grade for f in new.findings)
    out = CliRunner().invoke(cli, ["history", "P1", "--ledger", str(ledger_url_of(ledger))])
    assert out.exit_code == 0, out.output
    assert "to confirm, decided on version 1: PTV_D95@PTVp -> variation_acceptable by A" in out.output


def ledger_url_of(ledger):
    return ledger.engine.url.render_as_string(hide_password=False)


def test_report_from_the_ledger_is_the_json_contract_plus_review_objects(ledger, results):
    record_result(ledger, results["first"])
    add_decision(ledger, 1, action="grade", rule="CORD_MAX", grade="variation_acceptable", reason="r", reviewer="A")
    out = CliRunner().invoke(cli, ["report", "1", "--format", "json", "--ledger", ledger_url_of(ledger)])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    jsonschema.validate(data, SCHEMA)
    assert data["schema_version"] == 1
    (plan,) = data["plans"]
    original = results["first"].reports[0].as_json()
    # the recorded report is the check's report: every field kept, the review added beside it
    assert {k: v for k, v in plan.items() if k not in ("review", "findings")} == {
        k: v for k, v in original.items() if k != "findings"
    }
    assert [{k: v for k, v in f.items() if k != "review"} for f in plan["findings"]] == original["findings"]
    (cord,) = [f for f in plan["findings"] if f["rule"] == "CORD_MAX"]
    assert cord["review"]["automatic_grade"] == "per_protocol" and cord["review"]["grade"] == "variation_acceptable"
    assert plan["review"]["final_grade"] == "variation_acceptable" and plan["review"]["version"] == 1
    for fmt, marker in (("text", "Decision trail:"), ("html", "<table>")):
        out = CliRunner().invoke(cli, ["report", "1", "--format", fmt, "--ledger", ledger_url_of(ledger)])
        assert out.exit_code == 0 and marker in out.output


def test_verify_lists_every_edited_or_missing_row(ledger, results):
    record_result(ledger, results["first"])
    add_decision(ledger, 2, action="accept_plan", reason="fine", reviewer="A")
    record_result(ledger, results["p1_cord"])
    url = ledger_url_of(ledger)
    ok = CliRunner().invoke(cli, ["ledger", "verify", "--ledger", url])
    assert ok.exit_code == 0 and "3 submissions and 1 decisions, chain intact" in ok.output
    with writing(ledger, lock=False) as conn:  # hand edits, as someone with database access could make
        conn.execute(
            update(findings).where(findings.c.submission_id == 3, findings.c.rule == "CORD_MAX").values(value=40.0)
        )
        conn.execute(update(findings).where(findings.c.submission_id == 1, findings.c.idx == 0).values(grade="x"))
    bad = CliRunner().invoke(cli, ["ledger", "verify", "--ledger", url])
    assert bad.exit_code == 1
    assert "ledger BROKEN: 2 problems" in bad.output
    assert "submission 1: finding row 0 (" in bad.output and ") differs from the hashed report in grade" in bad.output
    assert (
        "submission 3: finding row" in bad.output and "(CORD_MAX) differs from the hashed report in value" in bad.output
    )
    with writing(ledger, lock=False) as conn:
        conn.execute(update(decisions).where(decisions.c.id == 1).values(reason="edited later"))
        conn.execute(update(submissions).where(submissions.c.id == 1).values(institution="Centre Z"))
    chain = [p for p in verify(ledger).problems if "finding row" not in p]
    # each edited row is named, in chain order; the rows after them still link to their stored hashes
    assert chain == [
        "submission 1 (chain position 1): its content does not match its hash (edited)",
        "decision 1 (chain position 3): its content does not match its hash (edited)",
    ]
    with writing(ledger, lock=False) as conn:
        conn.execute(delete(decisions))
    assert [p for p in verify(ledger).problems if "finding row" not in p] == [
        "submission 1 (chain position 1): its content does not match its hash (edited)",
        "chain position 3 is missing (next: submission 3 (chain position 4))",
    ]


def test_a_ledger_from_a_newer_rtqa_is_refused(ledger):
    with writing(ledger, lock=False) as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    out = CliRunner().invoke(cli, ["stats", "--ledger", ledger_url_of(ledger)])
    assert out.exit_code == 2
    assert f"written by a newer rtqa (schema revision 9999; this rtqa knows up to {HEAD}); upgrade rtqa" in out.output
    assert "Traceback" not in out.output


def test_an_older_ledger_is_upgraded_by_ledger_upgrade(ledger_url):
    from rtqa.ledger import db

    led = open_ledger(ledger_url, create=True)
    led.dispose()
    url = db.parse_url(ledger_url)
    engine = db.create_engine(url)
    with engine.begin() as conn:  # rebuild it at the first revision
        for name in ("findings", "decisions", "submissions", "ledger_lock", "alembic_version"):
            conn.execute(text(f"DROP TABLE {name}"))
        db._upgrade(conn, "0001")
    engine.dispose()
    refused = CliRunner().invoke(cli, ["stats", "--ledger", ledger_url])
    assert (
        refused.exit_code == 2
        and "revision 0001 is older" in refused.output
        and "rtqa ledger upgrade" in refused.output
    )
    up = CliRunner().invoke(cli, ["ledger", "upgrade", "--ledger", ledger_url])
    assert up.exit_code == 0 and f"upgraded from 0001 to revision {HEAD}" in up.output
    assert CliRunner().invoke(cli, ["stats", "--ledger", ledger_url]).exit_code == 0


def test_check_records_into_the_ledger_from_the_environment(results, tmp_path, monkeypatch):
    monkeypatch.setenv("RTQA_LEDGER", str(tmp_path / "office.db"))  # a bare path is a SQLite ledger
    args = ["check", str(results["tree"]), "--clinical", str(results["clinical"]), "--format", "json"]
    # with two worker processes: the plans are recorded once, by the coordinating process
    first = CliRunner().invoke(cli, [*args, "--workers", "2"])
    assert first.exit_code == 0, first.output
    assert "ledger: P1 (Centre A): recorded as submission 1, version 1" in first.stderr
    assert "ledger: P2 (Centre B): recorded as submission 2, version 1" in first.stderr
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0
    repeat = (
        "ledger: P1 (Centre A): same input files, protocol and verdict as submission 1 (version 1); not recorded again"
    )
    assert repeat in again.stderr
    # the report on stdout is unchanged by the ledger
    assert json.loads(first.stdout)["plans"] == json.loads(again.stdout)["plans"]


def test_review_command(results, tmp_path):
    url = f"sqlite:///{tmp_path / 'office.db'}"
    led = open_ledger(url, create=True)
    record_result(led, results["first"])
    led.dispose()
    runner = CliRunner()
    ok = runner.invoke(
        cli,
        [
            "review",
            "1",
            "--rule",
            "CORD_MAX",
            "--grade",
            "variation_acceptable",
            "--reason",
            "PI",
            "--reviewer",
            "Dr A",
            "--ledger",
            url,
        ],
    )
    assert ok.exit_code == 0 and "decision 1 on submission 1: CORD_MAX -> variation_acceptable by Dr A" in ok.output
    both = runner.invoke(
        cli, ["review", "1", "--accept-plan", "--reject-plan", "--reason", "x", "--reviewer", "A", "--ledger", url]
    )
    assert both.exit_code == 2 and "give one of" in both.output
    no_reason = runner.invoke(cli, ["review", "1", "--accept-plan", "--reviewer", "A", "--ledger", url])
    assert no_reason.exit_code == 2 and "--reason" in no_reason.output


def test_a_file_that_is_not_a_ledger_is_a_clear_error(tmp_path):
    junk = tmp_path / "audit.db"
    junk.write_bytes(b"this is not a database, just bytes" * 200)
    for args in (["stats"], ["ledger", "verify"], ["history", "P1"]):
        out = CliRunner().invoke(cli, [*args, "--ledger", str(junk)])
        assert out.exit_code == 2, out.output
        assert f"sqlite:///{junk}: file is not a database" in out.output and "Traceback" not in out.output
    missing = CliRunner().invoke(cli, ["stats", "--ledger", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no ledger there" in missing.output
    assert not (tmp_path / "none.db").exists()  # reading never creates a ledger


def test_passwords_in_urls_are_never_printed():
    # nothing listens on port 1: the connection fails, and the message names the ledger without the password
    out = CliRunner().invoke(cli, ["stats", "--ledger", "postgresql://qa:s3cr3t-pw@127.0.0.1:1/audit"])
    assert out.exit_code == 2
    assert "s3cr3t-pw" not in out.output and "postgresql+psycopg://qa:***@127.0.0.1:1/audit" in out.output


def test_rtqa_without_a_ledger_imports_no_database_layer():
    code = (
        "import sys, rtqa.cli\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'psycopg'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_migrations_build_the_schema_the_code_queries(ledger):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from rtqa.ledger import db
    from rtqa.ledger.schema import HEAD, metadata

    assert ScriptDirectory.from_config(db._config()).get_current_head() == HEAD
    with reading(ledger) as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


# -- found by the second independent review ---------------------------------------------------------


def test_same_files_with_other_clinical_facts_are_a_re_evaluation_never_a_new_version(ledger, results, tmp_path):
    record_result(ledger, results["first"])
    corrected = tmp_path / "crf.csv"  # the case-report form corrected: P1 is Child-Pugh C10 (ineligible)
    corrected.write_text("patient_id,child_pugh,dose_algorithm\nP1,C10,AAA\nP2,A5,AAA\n")
    again = record_result(ledger, check([results["tree"]], corrected))
    by_patient = {r.patient_id: r for r in again}
    p1 = by_patient["P1"]
    # the verdict changed: recorded (never dropped as a repeat), as a re-evaluation of version 1
    assert p1.new and p1.kind == "re-evaluation" and p1.version == 1 and p1.evaluates == 1 and p1.supersedes is None
    assert not by_patient["P2"].new  # same files, same facts, same verdict: a repeat
    views = history(ledger, "P1")
    assert [(v.id, v.version, v.kind, v.evaluates) for v in views] == [
        (1, 1, "version", None),
        (3, 1, "re-evaluation", 1),
    ]
    # the current state of the case is the re-evaluation; stats count one plan and no resubmission
    stats = compute_stats(ledger)
    assert stats.total.plans == 2 and stats.total.resubmissions == 0
    assert verify(ledger).ok


def test_an_incomplete_plan_cannot_be_accepted(ledger, results, tmp_path):
    partial = tmp_path / "crf.csv"  # no row for P2: its normal-liver rule depends on the unknown class
    partial.write_text("patient_id,child_pugh,dose_algorithm\nP1,A5,AAA\n")
    recorded = {r.patient_id: r for r in record_result(ledger, check([results["tree"]], partial))}
    with pytest.raises(LedgerError, match=r"incomplete .*cannot be accepted"):
        add_decision(ledger, recorded["P2"].submission_id, action="accept_plan", reason="looks fine", reviewer="A")
    add_decision(ledger, recorded["P1"].submission_id, action="accept_plan", reason="complete", reviewer="A")


def test_a_decision_on_a_rule_of_several_findings_must_name_the_roi(ledger, results):
    record_result(ledger, results["first"])
    with pytest.raises(LedgerError, match=r"PTV_D95 has 3 findings .*--roi"):
        add_decision(ledger, 1, action="grade", rule="PTV_D95", grade="variation_acceptable", reason="r", reviewer="A")


def test_the_html_report_of_an_unreadable_plan_says_why_and_lists_its_files(ledger, liver_tree, tmp_path):
    import os

    tree, clinical = make_patients(liver_tree, tmp_path, [("P9", "liver_clean", "Centre A")])
    dose = tree / "P9" / "RD_PLAN.dcm"
    with open(dose, "r+b") as fh:  # cut the dose in half: the plan cannot be checked
        fh.truncate(os.path.getsize(dose) // 2)
    (recorded,) = record_result(ledger, check([tree], clinical))
    page = CliRunner().invoke(cli, ["report", str(recorded.submission_id), "--format", "html", "--ledger",
                                    ledger_url_of(ledger)]).output  # fmt: skip
    assert "Why it could not be checked" in page and "no RT Dose file" in page
    assert "RTPLAN" in page and "RP.dcm" in page and page.count("<tr><td>RT") == 2  # plan and structure set
