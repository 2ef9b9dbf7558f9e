"""Opening a ledger by URL: the engine, SQLite's WAL mode, the schema revision check, migrations.

A URL is ``sqlite:///audit.db`` (the embedded default), a bare path (the same), or
``postgresql://user:password@host/db`` (driven by psycopg 3). Passwords never appear in a
message: every message names the ledger by :attr:`Ledger.shown_url`, and database errors are
rewritten with the password masked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, Engine, MetaData, String, Table, create_engine, event, inspect, select
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


@dataclass(frozen=True)
class Ledger:
    """An open ledger: the engine and the URL as it may be shown (password masked)."""

    engine: Engine
    shown_url: str
    password: str | None

    def dispose(self) -> None:
        self.engine.dispose()


def parse_url(text: str) -> URL:
    """The SQLAlchemy URL of a ledger given as a URL or a bare path.

    Raises
    ------
    LedgerError
        Text that is neither a database URL nor a path.
    """
    if "://" not in text:
        return URL.create("sqlite", database=os.path.abspath(text))
    try:
        url = make_url(text)
    except ArgumentError:
        raise LedgerError(
            f"{_mask_text(text)}: not a ledger URL; expected sqlite:///FILE, a path or postgresql://USER@HOST/DB"
        ) from None
    if url.drivername == "postgresql":  # psycopg 3 is the driver we ship with the ledger extra
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise LedgerError(
            f"{url.render_as_string(hide_password=True)}: unsupported ledger database (expected sqlite or postgresql)"
        )
    return url


def _mask_text(text: str) -> str:
    head, sep, tail = text.partition("://")
    if sep and "@" in tail:
        cred, _, host = tail.rpartition("@")
        if ":" in cred:
            return f"{head}://{cred.split(':', 1)[0]}:***@{host}"
    return text


def open_ledger(text: str, *, create: bool = False) -> Ledger:
    """Open the ledger at ``text``, refusing a schema from another rtqa.

    Parameters
    ----------
    text
        The ledger URL or path.
    create
        Create the schema in an empty database (``rtqa check --ledger``); readers pass False.

    Raises
    ------
    LedgerError
        No ledger there (reading), a file that is not a database, a database that cannot be
        reached, a schema written by a newer rtqa, or an older one that needs ``rtqa ledger upgrade``.
    """
    url = parse_url(text)
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        path = url.database or ""
        if not create and not os.path.exists(path):
            raise LedgerError(f"{shown}: no ledger there (rtqa check --ledger creates one)")
        if os.path.isdir(path):
            raise LedgerError(f"{shown}: is a folder; expected a ledger file")
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        _sqlite_setup(engine)
    else:
        engine = create_engine(url)
    ledger = Ledger(engine, shown, url.password if isinstance(url.password, str) else None)
    try:
        with errors(ledger):
            revision = current_revision(ledger)
            if revision is None and create:
                with writing(ledger, lock=False) as conn:
                    # checked again under the write lock: another writer may have created it
                    if _revision(conn) is None:
                        _upgrade(conn)
                revision = HEAD
        require_current(ledger, revision)
    except BaseException:
        engine.dispose()
        raise
    return ledger


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
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S})
        _sqlite_setup(engine)
    else:
        engine = create_engine(url)
    ledger = Ledger(engine, shown, url.password if isinstance(url.password, str) else None)
    try:
        with errors(ledger), writing(ledger, lock=False) as conn:
            before = _revision(conn)
            if before is not None and before not in known_revisions():
                require_current(ledger, before)
            _upgrade(conn)
        return before, HEAD
    finally:
        engine.dispose()


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
def writing(ledger: Ledger, *, lock: bool = True) -> Iterator[Connection]:
    """A write transaction holding the append lock; committed on a clean exit, else rolled back."""
    with errors(ledger), ledger.engine.connect() as conn:
        conn.execution_options(rtqa_write=True)
        with conn.begin():
            if lock:
                conn.execute(select(ledger_lock.c.id).where(ledger_lock.c.id == 1).with_for_update()).all()
            yield conn


@contextmanager
def errors(ledger: Ledger) -> Iterator[None]:
    """Database errors as LedgerError naming the ledger, with any password masked."""
    try:
        yield
    except SQLAlchemyError as exc:
        orig = getattr(exc, "orig", None)
        detail = str(orig if orig is not None else exc).strip().splitlines()
        text = detail[0] if detail else type(exc).__name__
        if ledger.password:
            text = text.replace(ledger.password, "***")
        raise LedgerError(f"{ledger.shown_url}: {text}") from None
