"""Opening a ledger by URL: the engine, SQLite's WAL mode, the schema revision check, migrations.

A URL is ``sqlite:///audit.db`` (the embedded default), a bare path (the same), or
``postgresql://user:password@host/db`` (driven by psycopg 3). An in-memory SQLite database is
refused: it would say "recorded" and keep nothing. Passwords never appear in a message, in any
form a URL can carry them (``user:password@``, ``?password=``, ``?sslpassword=``, percent-encoded
or not): every message names the ledger by :attr:`Ledger.shown_url`, and database errors are
rewritten with every secret of the URL masked.

Schema creation and migrations are serialised: SQLite's ``BEGIN IMMEDIATE`` on SQLite, a
transaction-level advisory lock (``pg_advisory_xact_lock``) on PostgreSQL, taken before the
schema revision is read, so that several first writers to an empty database create it once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, create_engine, event, inspect, select, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from rtqa.ledger.errors import LedgerError
from rtqa.ledger.schema import HEAD, ledger_lock

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).parent / "migrations"
# Alembic's own bookkeeping table, read directly so that a check run need not import Alembic
# (it is imported only to migrate, or to tell an older schema from a newer one)
_alembic_version = Table("alembic_version", MetaData(), Column("version_num", String(32), primary_key=True))
# long enough for a queue of writers each appending a batch; a writer waits, it does not fail
BUSY_TIMEOUT_S = 60.0
# the key of PostgreSQL's advisory lock on schema creation and migration ("rtqa" in ASCII)
SCHEMA_LOCK_KEY = 0x72747161
MASK = "***"
_MASKED_VALUE = "rtqa-masked-secret"  # stands for *** while SQLAlchemy renders (it would encode the stars)
# query parameters of a URL that carry a secret (libpq: password, sslpassword)
_SECRET_PARAM = re.compile(r"(?i)\b([a-z_]*password)=([^&;\s'\"]*)")


@dataclass(frozen=True)
class Ledger:
    """An open ledger: the engine and the URL as it may be shown (password masked)."""

    engine: Engine
    shown_url: str
    secrets: tuple[str, ...] = ()
    key: bytes | None = None

    def dispose(self) -> None:
        self.engine.dispose()

    def mask(self, text: str) -> str:
        """``text`` with every secret of the ledger's URL replaced by ***."""
        return mask_secrets(text, self.secrets)


def parse_url(text: str) -> URL:
    """The SQLAlchemy URL of a ledger given as a URL or a bare path.

    Raises
    ------
    LedgerError
        Text that is neither a database URL nor a path, another database than SQLite or
        PostgreSQL, or an in-memory SQLite database.
    """
    if "://" not in text:
        if text.strip() in ("", ":memory:"):
            raise LedgerError(f"{text!r}: {_NOT_IN_MEMORY}")
        return URL.create("sqlite", database=os.path.abspath(text))
    try:
        url = make_url(text)
        if url.drivername == "postgresql":  # psycopg 3 is the driver we ship with the ledger extra
            url = url.set(drivername="postgresql+psycopg")
        _ = url.port  # a port that is not a number fails here, not later in a traceback
    except (ArgumentError, ValueError):
        raise LedgerError(
            f"{mask_secrets(text, ())}: not a ledger URL; expected sqlite:///FILE, a path or postgresql://USER@HOST/DB"
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(f"{shown_url(url)}: unsupported ledger database (expected sqlite or postgresql)")
    if url.get_backend_name() == "sqlite" and _in_memory(url):
        raise LedgerError(f"{mask_secrets(text, url_secrets(url))}: {_NOT_IN_MEMORY}")
    return url


_NOT_IN_MEMORY = (
    "an in-memory database keeps nothing once rtqa exits, so nothing would be recorded; give a ledger file "
    "(sqlite:///audit.db or a path) or a PostgreSQL URL"
)


def _in_memory(url: URL) -> bool:
    """Every form of SQLite's in-memory database: no file, ``:memory:``, ``file::memory:``, ``mode=memory``."""
    database = (url.database or "").strip()
    modes = [str(v).lower() for k, vs in url.query.items() if k.lower() == "mode" for v in _values(vs)]
    return (
        database in ("", ":memory:")
        or database.startswith(("file::memory:", ":memory:?"))
        or "mode=memory" in database.lower()
        or "memory" in modes
    )


def _values(v: str | tuple[str, ...]) -> tuple[str, ...]:
    return (v,) if isinstance(v, str) else tuple(v)


def shown_url(url: URL) -> str:
    """The URL as it may be shown: the password and every password-like query parameter masked."""
    secret = {k: _MASKED_VALUE for k in url.query if "password" in k.lower()}
    shown = (url.update_query_dict(secret) if secret else url).render_as_string(hide_password=True)
    return shown.replace(_MASKED_VALUE, MASK)


def url_secrets(url: URL) -> tuple[str, ...]:
    """Every secret of ``url`` in every spelling it may take in a message (raw and percent-encoded)."""
    values = [url.password] if isinstance(url.password, str) else []
    values += [v for k, vs in url.query.items() if "password" in k.lower() for v in _values(vs)]
    spelled = {form for v in values if v for form in (v, quote(v, safe=""), quote_plus(v))}
    return tuple(sorted(spelled, key=len, reverse=True))  # longest first: no secret left half-masked


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with the given secrets, ``user:password@`` in a URL and ``password=...`` masked."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    text = re.sub(r"(://[^/@\s:]*):[^@\s/]*@", rf"\1:{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m.group(1)}={MASK}" if m.group(2) else m.group(0), text)


def open_ledger(text: str, *, create: bool = False, key: bytes | None = None) -> Ledger:
    """Open the ledger at ``text``, refusing a schema from another rtqa.

    Parameters
    ----------
    text
        The ledger URL or path.
    create
        Create the schema in an empty database (``rtqa check --ledger``); readers pass False.
    key
        The ledger key (:func:`rtqa.ledger.chain.ledger_key`): writers sign each row with it,
        ``verify`` checks every row's HMAC with it.

    Raises
    ------
    LedgerError
        No ledger there (reading), a file that is not a database, a database that cannot be
        reached, a schema written by a newer rtqa, or an older one that needs ``rtqa ledger upgrade``.
    """
    url = parse_url(text)
    ledger = Ledger(_engine(url), shown_url(url), url_secrets(url), key)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if (not create and not os.path.exists(path)) or os.path.isdir(path):
            ledger.dispose()
            if os.path.isdir(path):
                raise LedgerError(f"{ledger.shown_url}: is a folder; expected a ledger file")
            raise LedgerError(f"{ledger.shown_url}: no ledger there (rtqa check --ledger creates one)")
    try:
        with errors(ledger):
            revision = current_revision(ledger)
            if revision is None and create:
                with writing(ledger, lock=False, schema=True) as conn:
                    # checked again under the schema lock: another writer may have created it
                    if _revision(conn) is None:
                        _upgrade(conn)
                revision = HEAD
        require_current(ledger, revision)
    except BaseException:
        ledger.dispose()
        raise
    return ledger


def _engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
    _sqlite_setup(engine)
    return engine


def require_current(ledger: Ledger, revision: str | None) -> None:
    """Refuse a ledger whose schema is not the one this rtqa writes."""
    if revision is None:
        raise LedgerError(f"{ledger.shown_url}: not an rtqa ledger (no ledger schema in this database)")
    if revision == HEAD:
        return
    if revision not in known_revisions():
        raise LedgerError(
            f"{ledger.shown_url}: this ledger was written by a newer rtqa (schema revision {revision}; this rtqa "
            f"knows up to {HEAD}); upgrade rtqa to use it"
        )
    raise LedgerError(
        f"{ledger.shown_url}: ledger schema revision {revision} is older than this rtqa's ({HEAD}); back up the "
        "ledger, then run rtqa ledger upgrade"
    )


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {s.revision for s in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(ledger: Ledger) -> str | None:
    with reading(ledger) as conn:
        return _revision(conn)


def _revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(select(_alembic_version.c.version_num)).scalar()


def upgrade(text: str) -> tuple[str | None, str]:
    """Run the migrations up to this rtqa's schema; returns (revision before, revision after).

    Raises
    ------
    LedgerError
        As :func:`open_ledger`, and a ledger from a newer rtqa (never downgraded).
    """
    url = parse_url(text)
    ledger = Ledger(_engine(url), shown_url(url), url_secrets(url))
    try:
        with errors(ledger), writing(ledger, lock=False, schema=True) as conn:
            before = _revision(conn)
            if before is not None and before not in known_revisions():
                require_current(ledger, before)
            _upgrade(conn)
        return before, HEAD
    finally:
        ledger.dispose()


def _config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def _upgrade(conn: Connection, target: str = "head") -> None:
    from alembic import command

    cfg = _config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, target)


def _sqlite_setup(engine: Engine) -> None:
    """WAL (readers never block the writer), a busy timeout, and BEGIN IMMEDIATE for writers.

    pysqlite's own transaction handling is switched off so that the BEGIN we emit is the one
    used: a writer takes SQLite's write lock when it begins, before it reads the chain's tail,
    which is what serialises chain appends on SQLite (the SQLAlchemy documentation's recipe).
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("rtqa_write") else "BEGIN")


@contextmanager
def reading(ledger: Ledger) -> Iterator[Connection]:
    """A connection for reading; its transaction ends (rolled back: nothing written) on exit."""
    with errors(ledger), ledger.engine.connect() as conn:
        yield conn


@contextmanager
def writing(ledger: Ledger, *, lock: bool = True, schema: bool = False) -> Iterator[Connection]:
    """A write transaction holding the append lock; committed on a clean exit, else rolled back.

    ``schema=True`` is for creating or migrating the schema: on PostgreSQL the transaction first
    takes the schema advisory lock (DDL there is transactional, so a second writer waits, then
    finds the schema made); on SQLite, where ``BEGIN IMMEDIATE`` already serialises, foreign keys
    are switched off for the transaction (a migration copies tables into new ones, as SQLite's
    documentation prescribes) and checked before it commits.
    """
    with errors(ledger), ledger.engine.connect() as conn:
        conn.execution_options(rtqa_write=True)
        sqlite = conn.dialect.name == "sqlite"
        if schema and sqlite:  # outside any transaction, where SQLite honours it
            conn.connection.driver_connection.execute("PRAGMA foreign_keys = OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                if schema and not sqlite:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
                if lock:
                    conn.execute(select(ledger_lock.c.id).where(ledger_lock.c.id == 1).with_for_update()).all()
                yield conn
                if schema and sqlite:
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").all()
                    if broken:
                        raise LedgerError(f"{ledger.shown_url}: the migration left {len(broken)} dangling references")
        finally:
            if schema and sqlite:
                conn.connection.driver_connection.execute("PRAGMA foreign_keys = ON")  # type: ignore[union-attr]


@contextmanager
def errors(ledger: Ledger) -> Iterator[None]:
    """Database errors as LedgerError naming the ledger, with any password masked."""
    try:
        yield
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        detail = str(orig if orig is not None else exc).strip().splitlines()
        reason = detail[0] if detail else type(exc).__name__
        raise LedgerError(f"{ledger.shown_url}: {ledger.mask(reason)}") from None
