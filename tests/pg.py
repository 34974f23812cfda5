"""A throwaway PostgreSQL server for tests: ``postgres_server`` (once per session) and ``postgresql_url``
(a fresh database per test). Import both fixtures into a test module: ``from pg import postgres_server,
postgresql_url  # noqa: F401``.

The server is Debian's ``postgresql`` package (``apt-get install postgresql``; ``.ci/run`` installs it):
``initdb`` into a temporary folder (as the ``postgres`` OS user when the tests run as root, which
PostgreSQL refuses to run as), started with ``pg_ctl`` on a free port of 127.0.0.1 and a private
socket folder, trust authentication on localhost except for the role ``sweeper``, which needs its
password (so a test can log in the way MLOPS.md tells people to: the password in PGPASSWORD).
Stopped and removed at the end. Tests skip, with the reason, where no server can be had.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

PASSWORD_ROLE, PASSWORD = "sweeper", "s3cret-pw"


@dataclasses.dataclass
class PostgresServer:
    port: int
    host: str = "127.0.0.1"

    def url(self, database: str, user: str = "postgres") -> str:
        return f"postgresql+psycopg://{user}@{self.host}:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user="postgres", dbname=database,
                             autocommit=True) as con:
            con.execute(sql)

    def create_database(self, owner: str = "postgres") -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return name


def _server_binaries() -> Path | None:
    """The newest installed server's bin folder (Debian keeps one per major version)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_server_user() -> tuple[list[str], int | None, int | None]:
    """The command prefix (and uid, gid) that runs initdb/pg_ctl as a user PostgreSQL accepts."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root, and there is no 'postgres' OS user to run the PostgreSQL server as")
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("running as root without runuser to start the PostgreSQL server as 'postgres'")
    return [runuser, "-u", "postgres", "--"], pw.pw_uid, pw.pw_gid


@pytest.fixture(scope="session")
def postgres_server():
    bindir = _server_binaries()
    if bindir is None:
        pytest.skip("no PostgreSQL server installed (apt-get install postgresql): the PostgreSQL tests need one")
    pytest.importorskip("psycopg", reason="the psycopg driver (requirements.txt) is not installed")
    prefix, uid, gid = _as_server_user()
    root = Path(tempfile.mkdtemp(prefix="grocery-pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    if uid is not None:
        for path in (root, sockets):
            os.chown(path, uid, gid)
    os.chmod(root, 0o700)

    def run(*cmd: str) -> None:
        proc = subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            log_tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"cannot start a PostgreSQL server: {Path(cmd[0]).name} failed: {' | '.join(tail + log_tail)}")

    port = _free_port()
    run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C",
        "--no-sync", "--no-instructions")
    hba = data / "pg_hba.conf"
    hba.write_text(f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
        f"-h 127.0.0.1 -p {port} -k {sockets} -F -c synchronous_commit=off -c full_page_writes=off", "start")
    server = PostgresServer(port)
    try:
        server.execute(f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
        yield server
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgresql_url(postgres_server) -> str:
    """A SQLAlchemy URL of a new, empty database on the throwaway server."""
    return postgres_server.url(postgres_server.create_database())
