"""A ledger that cannot be quietly rewritten (issue 18 item 4), on SQLite and on PostgreSQL.

The attacks are the ones a person with write access to the database can make: edit a finding
and recompute the hash chain after it (the recipe is public: rtqa.ledger.chain), delete the
newest rows, strip or forge the HMACs without the key. Each is shown to pass the plain chain
check (so the test proves the attack is real) and to be caught by what is meant to catch it:
a kept anchor, or the key. Also here: the ledger written after the reports, one transaction per
run, unbounded text columns, in-memory databases refused, passwords masked.
"""

from __future__ import annotations

import json
import re
import uuid
import warnings
from pathlib import Path

import pydicom
import pytest
from click.testing import CliRunner
from sqlalchemy import delete, func, inspect, select, text, update

from rtqa.cli import cli
from rtqa.ledger.anchors import Head, parse_anchors
from rtqa.ledger.chain import GENESIS, canonical, row_hash, row_hmac
from rtqa.ledger.db import open_ledger, parse_url, reading, writing
from rtqa.ledger.errors import LedgerError
from rtqa.ledger.record import finding_row, record_result
from rtqa.ledger.review import add_decision
from rtqa.ledger.schema import HEAD, decisions, findings, metadata, submissions
from rtqa.ledger.verify import verify
from tests.ledger_cases import check, make_patients

KEY = "k" * 8 + "0123456789abcdef"  # 24 bytes
OTHER_KEY = "z" * 24


@pytest.fixture(autouse=True)
def no_key_in_the_environment(monkeypatch):
    """Each test gives the key it means; a key set in the developer's shell must not leak in."""
    for name in ("RTQA_LEDGER_KEY", "RTQA_LEDGER_KEY_FILE", "RTQA_LEDGER"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def results(liver_tree, tmp_path_factory):
    """P1 clean and P2 with a cord overdose (a deviation an attacker would like to erase)."""
    root = tmp_path_factory.mktemp("trust")
    tree, clinical = make_patients(
        liver_tree, root, [("P1", "liver_clean", "Centre A"), ("P2", "liver_cord_overdose", "Centre B")]
    )
    return {"both": check([tree], clinical), "tree": tree, "clinical": clinical}


def url_of(ledger) -> str:
    return ledger.engine.url.render_as_string(hide_password=False)


def fill(url: str, results, key: str | None = None) -> None:
    """P1 and P2 recorded, P1 accepted: chain positions 1 (P1), 2 (P2), 3 (decision)."""
    led = open_ledger(url, create=True, key=key.encode() if key else None)
    try:
        record_result(led, results["both"])
        add_decision(led, 1, action="accept_plan", reason="fine", reviewer="A")
    finally:
        led.dispose()


def erase_deviation(conn) -> None:
    """The hostile edit: P2's cord overdose becomes per protocol, in the report and in its row."""
    row = conn.execute(select(submissions).where(submissions.c.patient_id == "P2")).one()
    report = json.loads(row.report)
    (idx,) = [i for i, f in enumerate(report["plan"]["findings"]) if f["rule"] == "CORD_MAX"]
    report["plan"]["findings"][idx]["grade"] = "per_protocol"
    report["plan"]["grade"] = "per_protocol"
    conn.execute(
        update(submissions).where(submissions.c.id == row.id).values(report=canonical(report), grade="per_protocol")
    )
    new = finding_row(row.id, idx, report["plan"]["findings"][idx])
    conn.execute(
        update(findings)
        .where(findings.c.submission_id == row.id, findings.c.idx == idx)
        .values(grade=new["grade"], finding=new["finding"])
    )


def recompute_chain(conn, key: bytes | None = None) -> None:
    """Recompute every prev_hash and hash in chain order, and, given a key, the HMAC of every row
    whose hash changed (the rows before the edit are left as they were)."""
    rows = sorted(
        [(submissions, r) for r in conn.execute(select(submissions))]
        + [(decisions, r) for r in conn.execute(select(decisions))],
        key=lambda x: x[1].seq,
    )
    previous = GENESIS
    for table, r in rows:
        content = {**r._mapping, "prev_hash": previous}
        digest = row_hash(table, content)
        mac = row_hmac(key, digest) if key and digest != r.hash else r.hmac
        conn.execute(update(table).where(table.c.id == r.id).values(prev_hash=previous, hash=digest, hmac=mac))
        previous = digest


def verified(url: str, key: str | None = None):
    led = open_ledger(url, key=key.encode() if key else None)
    try:
        return verify(led)
    finally:
        led.dispose()


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(cli, list(args), env=env)


# -- the head and anchors ---------------------------------------------------------------------------


def test_verify_prints_the_head_and_anchor_keeps_it(ledger_url, results, tmp_path):
    fill(ledger_url, results)
    led = open_ledger(ledger_url)
    with reading(led) as conn:  # the head, read independently of verify: the last row of the chain
        last = conn.execute(select(decisions.c.seq, decisions.c.hash)).one()
    led.dispose()
    out = invoke("ledger", "verify", "--ledger", ledger_url)
    assert out.exit_code == 0, out.output
    assert f"head: rows={last.seq} hash={last.hash}" in out.output and last.seq == 3
    kept = tmp_path / "anchors.txt"
    first = invoke("ledger", "anchor", "--append", str(kept), "--ledger", ledger_url)
    assert first.exit_code == 0, first.output
    assert first.stdout.strip().endswith(f"rows=3 hash={last.hash}")
    assert kept.read_text() == first.stdout  # the line printed is the line kept
    (a,) = parse_anchors(kept.read_text(), str(kept))
    assert a.head == Head(3, last.hash)
    with_anchor = invoke("ledger", "verify", "--anchor", str(kept), "--ledger", ledger_url)
    assert with_anchor.exit_code == 0
    assert f"anchors: 1 kept head in {kept}, each still a prefix of the chain" in with_anchor.output
    # the chain grows: the old anchor is still a prefix, and a second one is appended after checking it
    led = open_ledger(ledger_url)
    add_decision(led, 2, action="reject_plan", reason="cord", reviewer="A")
    led.dispose()
    second = invoke("ledger", "anchor", "--append", str(kept), "--ledger", ledger_url)
    assert second.exit_code == 0 and "its 1 earlier heads still a prefix" in second.stderr
    assert [x.head.rows for x in parse_anchors(kept.read_text(), str(kept))] == [3, 4]


def test_a_recomputed_chain_passes_the_chain_check_but_not_a_kept_anchor(ledger_url, results, tmp_path):
    fill(ledger_url, results)
    kept = tmp_path / "anchors.txt"
    assert invoke("ledger", "anchor", "--append", str(kept), "--ledger", ledger_url).exit_code == 0
    before = invoke("ledger", "verify", "--ledger", ledger_url).output
    led = open_ledger(ledger_url)
    with writing(led, lock=False) as conn:
        erase_deviation(conn)
        recompute_chain(conn)
    led.dispose()
    plain = invoke("ledger", "verify", "--ledger", ledger_url)
    # the attack is real: without an anchor the rewritten ledger verifies, only the head moved
    assert plain.exit_code == 0 and "chain intact" in plain.output
    assert plain.output.splitlines()[0] == before.splitlines()[0]
    assert plain.output.splitlines()[1] != before.splitlines()[1]
    caught = invoke("ledger", "verify", "--anchor", str(kept), "--ledger", ledger_url)
    assert caught.exit_code == 1
    assert re.search(
        rf"anchor {re.escape(str(kept))}:1 \(3 rows taken \S+\): "
        r"decision 1 \(chain position 3\) has hash [0-9a-f]{16}\.\.\., the anchor kept [0-9a-f]{16}\.\.\.: "
        r"the chain was rewritten at or before position 3",
        caught.output,
    ), caught.output
    # and no new anchor is taken over the rewritten chain: the file is left as it was
    kept_text = kept.read_text()
    refused = invoke("ledger", "anchor", "--append", str(kept), "--ledger", ledger_url)
    assert refused.exit_code == 1 and "no anchor taken" in refused.stderr
    assert kept.read_text() == kept_text


def test_removed_newest_rows_are_caught_by_a_kept_anchor_not_by_the_chain_or_the_key(ledger_url, results, tmp_path):
    fill(ledger_url, results, key=KEY)
    env = {"RTQA_LEDGER_KEY": KEY}
    kept = tmp_path / "anchors.txt"
    assert invoke("ledger", "anchor", "--append", str(kept), "--ledger", ledger_url, env=env).exit_code == 0
    led = open_ledger(ledger_url)
    with writing(led, lock=False) as conn:  # the decision (the newest row) deleted
        conn.execute(delete(decisions))
    led.dispose()
    plain = invoke("ledger", "verify", "--ledger", ledger_url, env=env)
    assert plain.exit_code == 0 and "key: every row's HMAC matches the ledger key (2 rows)" in plain.output
    caught = invoke("ledger", "verify", "--anchor", str(kept), "--ledger", ledger_url, env=env)
    assert caught.exit_code == 1
    assert "the chain now ends at position 2: the rows after it up to position 3 were removed" in caught.output


def test_an_anchor_file_that_holds_no_head_is_an_error_not_a_pass(ledger_url, results, tmp_path):
    fill(ledger_url, results)
    empty, junk = tmp_path / "empty.txt", tmp_path / "junk.txt"
    empty.write_text("# nothing yet\n\n")
    junk.write_text(f"2026-01-01T00:00:00+00:00 rows=3 hash={GENESIS}\nrows=three hash=abc\n")
    for path, message in ((empty, "no anchor in this file"), (junk, f"{junk}:2: not an anchor line")):
        out = invoke("ledger", "verify", "--anchor", str(path), "--ledger", ledger_url)
        assert out.exit_code == 2 and message in out.output, out.output
    missing = invoke("ledger", "verify", "--anchor", str(tmp_path / "none.txt"), "--ledger", ledger_url)
    assert missing.exit_code == 2 and "cannot read it" in missing.output


# -- the key ----------------------------------------------------------------------------------------


def test_with_the_key_a_chain_rewritten_without_it_is_caught_row_by_row(ledger_url, results):
    fill(ledger_url, results, key=KEY)
    env = {"RTQA_LEDGER_KEY": KEY}
    ok = invoke("ledger", "verify", "--ledger", ledger_url, env=env)
    assert ok.exit_code == 0 and "key: every row's HMAC matches the ledger key (3 rows)" in ok.output
    unchecked = invoke("ledger", "verify", "--ledger", ledger_url)  # not checked is not a pass
    assert unchecked.exit_code == 4 and "key: NOT CHECKED: 3 rows carry an HMAC" in unchecked.output
    led = open_ledger(ledger_url)
    with writing(led, lock=False) as conn:  # the attacker recomputes hashes and signs with a key of their own
        erase_deviation(conn)
        recompute_chain(conn, OTHER_KEY.encode())
    led.dispose()
    fooled = invoke("ledger", "verify", "--ledger", ledger_url)  # the chain alone is fooled
    assert fooled.exit_code == 4 and "chain intact" in fooled.output
    caught = invoke("ledger", "verify", "--ledger", ledger_url, env=env)
    assert caught.exit_code == 1 and "ledger BROKEN: 2 problems" in caught.output
    for name in ("submission 2 (chain position 2)", "decision 1 (chain position 3)"):
        assert f"{name}: its HMAC does not match its hash under the ledger key" in caught.output
    led = open_ledger(ledger_url)
    with writing(led, lock=False) as conn:  # or strips every HMAC, as if the ledger had never been keyed
        conn.execute(update(submissions).values(hmac=None))
        conn.execute(update(decisions).values(hmac=None))
    led.dispose()
    stripped = invoke("ledger", "verify", "--ledger", ledger_url, env=env)
    assert stripped.exit_code == 1 and stripped.output.count("no HMAC (written without the ledger key)") == 3


def test_a_keyed_ledger_takes_rows_only_with_its_key(ledger_url, results, tmp_path):
    fill(ledger_url, results, key=KEY)

    def count() -> int:
        led = open_ledger(ledger_url)
        with reading(led) as conn:
            n = conn.execute(select(func.count()).select_from(decisions)).scalar_one()
        led.dispose()
        return int(n)

    decide = ["review", "2", "--reject-plan", "--reason", "cord", "--reviewer", "B", "--ledger", ledger_url]
    for env, message in (
        ({}, "this ledger is keyed (its rows carry an HMAC): writing to it needs its key"),
        ({"RTQA_LEDGER_KEY": OTHER_KEY}, "the ledger key given is not this ledger's key"),
    ):
        out = invoke(*decide, env=env)
        assert out.exit_code == 2 and message in out.output, out.output
    assert count() == 1
    key_file = tmp_path / "ledger.key"
    key_file.write_text(KEY + "\n")  # as `openssl rand -hex 32 > ledger.key` leaves it: with a newline
    ok = invoke(*decide, "--ledger-key-file", str(key_file))
    assert ok.exit_code == 0, ok.output
    assert count() == 2
    assert verified(ledger_url, KEY).ok


def test_a_key_is_refused_on_a_ledger_started_without_one_and_short_or_double_keys(ledger_url, results, tmp_path):
    fill(ledger_url, results)
    decide = ["review", "2", "--reject-plan", "--reason", "cord", "--reviewer", "B", "--ledger", ledger_url]
    late = invoke(*decide, env={"RTQA_LEDGER_KEY": KEY})
    assert late.exit_code == 2 and "this ledger was started without a key, and a key was given" in late.output
    short = invoke(*decide, env={"RTQA_LEDGER_KEY": "secret"})
    assert short.exit_code == 2 and "the ledger key has 6 bytes; expected at least 16" in short.output
    key_file = tmp_path / "ledger.key"
    key_file.write_text(KEY)
    twice = invoke(*decide, "--ledger-key-file", str(key_file), env={"RTQA_LEDGER_KEY": KEY})
    assert twice.exit_code == 2 and "given twice" in twice.output
    assert verified(ledger_url).decisions == 1


# -- the ledger after the reports, one transaction per run ------------------------------------------


def _refuse_p2(conn, dialect: str) -> None:
    """A database that refuses the second plan of the run (a trigger: the database's own refusal)."""
    if dialect == "sqlite":
        conn.execute(
            text(
                "CREATE TRIGGER refuse_p2 BEFORE INSERT ON submissions WHEN NEW.patient_id = 'P2' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            )
        )
    else:
        conn.execute(
            text(
                "CREATE FUNCTION refuse_p2() RETURNS trigger AS $$ BEGIN IF NEW.patient_id = 'P2' THEN "
                "RAISE EXCEPTION 'refused by the test trigger'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        conn.execute(
            text("CREATE TRIGGER refuse_p2 BEFORE INSERT ON submissions FOR EACH ROW EXECUTE FUNCTION refuse_p2()")
        )


def test_a_refused_plan_records_nothing_of_the_run_and_the_reports_are_kept(ledger_url, results, tmp_path):
    led = open_ledger(ledger_url, create=True)
    with writing(led, lock=False) as conn:
        _refuse_p2(conn, led.engine.dialect.name)
    report = tmp_path / "report.json"
    args = ["check", str(results["tree"]), "--clinical", str(results["clinical"]), "--format", "json", "--workers", "2"]
    out = invoke(*args, "--output", str(report), "--ledger", ledger_url)
    assert out.exit_code == 2, out.output
    assert "refused by the test trigger" in out.stderr
    assert "the reports were written; nothing of this run was recorded in the ledger" in out.stderr
    assert sorted(p["patient_id"] for p in json.loads(report.read_text())["plans"]) == ["P1", "P2"]
    with reading(led) as conn:  # P1 was inserted before P2 was refused, and rolled back with it
        assert conn.execute(select(func.count()).select_from(submissions)).scalar_one() == 0
        assert conn.execute(select(func.count()).select_from(findings)).scalar_one() == 0
    with writing(led, lock=False) as conn:
        on = "" if led.engine.dialect.name == "sqlite" else " ON submissions"
        conn.execute(text("DROP TRIGGER refuse_p2" + on))
    try:  # the same run once the database takes it: recorded from the first id on, nothing consumed
        assert [(r.patient_id, r.submission_id, r.new) for r in record_result(led, results["both"])] == [
            ("P1", 1, True),
            ("P2", 2, True),
        ]
    finally:
        led.dispose()


def _read_only_url(url: str, dialect: str, pg_server) -> str:
    """The same ledger reached read-only: SQLite's mode=ro, a PostgreSQL role that may only SELECT."""
    if dialect == "sqlite":
        return "sqlite:///file:" + parse_url(url).database + "?mode=ro&uri=true"
    import psycopg

    role = "reader_" + uuid.uuid4().hex[:8]
    dbname = parse_url(url).database
    with psycopg.connect(f"host=127.0.0.1 port={pg_server.port} user=rtqa dbname={dbname}", autocommit=True) as c:
        c.execute(f"CREATE ROLE {role} LOGIN")
        c.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
    return f"postgresql://{role}@127.0.0.1:{pg_server.port}/{dbname}"


def test_a_read_only_ledger_fails_after_the_reports_are_written(ledger_url, results, tmp_path, request):
    led = open_ledger(ledger_url, create=True)
    dialect = led.engine.dialect.name
    led.dispose()
    pg = request.getfixturevalue("pg_server") if dialect != "sqlite" else None
    read_only = _read_only_url(ledger_url, dialect, pg)
    out_dir = tmp_path / "csv"
    args = ["check", str(results["tree"]), "--clinical", str(results["clinical"]), "--format", "csv", "--workers", "2"]
    out = invoke(*args, "--output", str(out_dir), "--ledger", read_only)
    assert out.exit_code == 2, out.output
    reason = "readonly database" if dialect == "sqlite" else "permission denied for table"
    assert reason in out.stderr and "the reports were written" in out.stderr
    plans = (out_dir / "plans.csv").read_text(encoding="utf-8-sig").splitlines()
    assert len(plans) == 3 and (out_dir / "findings.csv").is_file()  # a header and a line per plan
    assert verified(ledger_url).submissions == 0


# -- what the columns hold --------------------------------------------------------------------------

LONG_ID = "HCC-" + "0123456789" * 6 + "-A-001"  # 70 characters (DICOM LO allows 64)
LONG_ROI = "SpinalCord_" + "as_contoured_by_the_centre_" * 5 + "x" * 12  # 158 characters


def test_a_70_character_patient_id_and_a_158_character_roi_name_are_recorded(ledger_url, liver_tree, tmp_path):
    assert (len(LONG_ID), len(LONG_ROI)) == (70, 158)
    with warnings.catch_warnings():  # pydicom warns that the ID, the name and the ROI name exceed 64 characters
        warnings.filterwarnings("ignore", message=".*exceeds the maximum", category=UserWarning)
        tree, clinical = make_patients(liver_tree, tmp_path, [(LONG_ID, "liver_clean", "Centre A")])
        (rs,) = (tree / LONG_ID).glob("RS*.dcm")
        ds = pydicom.dcmread(rs)
        (cord,) = [r for r in ds.StructureSetROISequence if r.ROIName == "SpinalCord"]
        cord.ROIName = LONG_ROI
        ds.save_as(rs)
    # a protocol whose SpinalCord takes the long name as an alias (the shipped one, with one line added)
    rules = Path(__file__).resolve().parents[1] / "rules"
    protocol = tmp_path / "protocol.yaml"
    cord_line = "  SpinalCord: {role: oar, required: true}"
    shipped = (rules / "nct03535259.yaml").read_text()
    assert cord_line in shipped
    protocol.write_text(shipped.replace(cord_line, cord_line[:-1] + f", aliases: [{LONG_ROI}]}}"))
    (tmp_path / "tg263_aliases.yaml").write_text((rules / "tg263_aliases.yaml").read_text())
    args = ["check", str(tree), "--clinical", str(clinical), "--protocol", str(protocol), "--format", "json"]
    out = invoke(*args, "--ledger", ledger_url)
    assert out.exit_code == 0, out.output
    assert f"ledger: {LONG_ID} (Centre A): recorded as submission 1, version 1" in out.stderr
    led = open_ledger(ledger_url)
    with reading(led) as conn:
        assert conn.execute(select(submissions.c.patient_id)).scalar_one() == LONG_ID
        rois = set(conn.execute(select(findings.c.matched_roi).where(findings.c.rule == "CORD_MAX")).scalars())
    led.dispose()
    assert rois == {LONG_ROI}
    assert invoke("ledger", "verify", "--ledger", ledger_url).exit_code == 0


# the only bounded columns: values rtqa makes itself, of a fixed form (never text from an input)
BOUNDED = {
    ("submissions", "protocol_sha256"),  # SHA-256 hex
    ("submissions", "input_key"),
    ("submissions", "prev_hash"),
    ("submissions", "hash"),
    ("submissions", "hmac"),
    ("submissions", "grade"),  # a Grade value
    ("submissions", "submitted_at"),  # ISO 8601 UTC
    ("submissions", "kind"),  # version / addition / re-evaluation
    ("decisions", "action"),  # grade / accept_plan / reject_plan
    ("decisions", "grade"),  # validated Grade value
    ("decisions", "decided_at"),
    ("decisions", "prev_hash"),
    ("decisions", "hash"),
    ("decisions", "hmac"),
    ("findings", "grade"),
}


def test_every_text_column_from_an_input_is_unbounded_in_the_database(ledger_url):
    led = open_ledger(ledger_url, create=True)
    try:
        insp = inspect(led.engine)
        reflected = {
            (t, c["name"]): getattr(c["type"], "length", None)
            for t in ("submissions", "findings", "decisions")
            for c in insp.get_columns(t)
        }
    finally:
        led.dispose()
    bounded = {k for k, length in reflected.items() if length is not None}
    assert bounded == BOUNDED
    declared = {(t.name, c.name) for t in metadata.sorted_tables for c in t.columns if getattr(c.type, "length", None)}
    assert declared == BOUNDED


def test_an_older_ledger_with_rows_upgrades_and_still_verifies(ledger_url, results):
    from alembic import command

    from rtqa.ledger import db

    fill(ledger_url, results)
    engine = db.create_engine(parse_url(ledger_url))
    with engine.begin() as conn:  # back to revision 0002 (bounded columns, no hmac), rows kept
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("PRAGMA foreign_keys = OFF")
        cfg = db._config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002")
        assert "hmac" not in {c["name"] for c in inspect(conn).get_columns("submissions")}
    engine.dispose()
    up = invoke("ledger", "upgrade", "--ledger", ledger_url)
    assert up.exit_code == 0 and f"upgraded from 0002 to revision {HEAD}" in up.output, up.output
    out = invoke("ledger", "verify", "--ledger", ledger_url)
    assert out.exit_code == 0 and "2 submissions and 1 decisions, chain intact" in out.output, out.output


# -- URLs -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///:memory:",
        "sqlite://",
        ":memory:",
        "sqlite:///file::memory:?uri=true",
        "sqlite:///file:office?mode=memory&cache=shared&uri=true",
    ],
)
def test_an_in_memory_ledger_is_refused_before_any_work(url, results, tmp_path):
    out = invoke("check", str(results["tree"]), "--clinical", str(results["clinical"]), "--ledger", url)
    assert out.exit_code == 2
    assert "an in-memory database keeps nothing once rtqa exits" in out.output
    assert "PER PROTOCOL" not in out.output and "ledger: P1" not in out.output  # refused before checking
    assert invoke("stats", "--ledger", url).exit_code == 2
    with pytest.raises(LedgerError, match="in-memory"):
        open_ledger(url, create=True)


@pytest.mark.postgres
def test_every_form_of_password_is_masked_in_every_message(results, pg_server):
    secrets = ("s3cr3t-pw", "query-pw", "ssl-pw", "p@ss/w0rd")
    unreachable = "postgresql://qa:s3cr3t-pw@127.0.0.1:1/audit?password=query-pw&sslpassword=ssl-pw"
    for args in (
        ["stats", "--ledger", unreachable],
        ["ledger", "verify", "--ledger", unreachable],
        ["ledger", "upgrade", "--ledger", unreachable],
        ["check", str(results["tree"]), "--clinical", str(results["clinical"]), "--ledger", unreachable],
        ["stats", "--ledger", "postgresql://qa:p%40ss%2Fw0rd@127.0.0.1:1/audit"],
        ["stats", "--ledger", "postgresql://qa:s3cr3t-pw@127.0.0.1:port/audit"],  # not even a URL
        ["stats", "--ledger", "mysql://qa:s3cr3t-pw@127.0.0.1/audit"],
    ):
        out = invoke(*args)
        assert out.exit_code == 2, out.output
        assert not [s for s in (*secrets, "p%40ss%2Fw0rd") if s in out.output], out.output
        assert "***" in out.output
    # a database error whose text carries the password (trust authentication lets the URL connect)
    db = pg_server.new_database().rsplit("/", 1)[1]
    led = open_ledger(f"postgresql://rtqa:s3cr3t-pw@127.0.0.1:{pg_server.port}/{db}?sslpassword=ssl-pw", create=True)
    try:
        assert led.shown_url.endswith(f"127.0.0.1:{pg_server.port}/{db}?sslpassword=***")
        with pytest.raises(LedgerError) as err, reading(led) as conn:
            conn.execute(text("SELECT CAST('s3cr3t-pw and ssl-pw' AS integer)"))
        assert "invalid input syntax for type integer" in str(err.value)
        assert "s3cr3t-pw" not in str(err.value) and "ssl-pw" not in str(err.value)
    finally:
        led.dispose()
