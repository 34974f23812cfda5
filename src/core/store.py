"""The local system of record: one SQLite database (WAL) plus content-addressed blobs.

Everything that must be read back — dataset versions, registry versions and aliases,
run summaries, sweep state, monitoring events — lives here; W&B is the mirror.
Several processes may write at once: every write happens inside ``BEGIN IMMEDIATE``
with a generous busy timeout, and blobs are written to a temporary name and renamed,
so a killed process never leaves a half-written record or file behind.

Layout of a store directory::

    mlops.db            SQLite database (tables owned by each module, see ``ensure_schema``)
    blobs/ab/abcdef...  file contents addressed by sha256
    tmp/                scratch for atomic writes
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Iterator

from src.core.errors import StoreError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_STORE = PROJECT_ROOT / ".mlops"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHUNK = 1 << 20


def store_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``--store`` beats ``MLOPS_STORE`` beats ``<project>/.mlops``."""
    return Path(explicit or os.environ.get("MLOPS_STORE") or DEFAULT_STORE).expanduser()


def validate_name(value: str, what: str = "name") -> str:
    """Names of artifacts, models, aliases and sweeps: no path separators, no empties."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value) or ".." in value:
        raise StoreError(
            f"invalid {what} {value!r}",
            hint="use letters, digits, '.', '_' or '-' (no path separators, at most 128 characters)",
        )
    return value


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _retry_locked(con: sqlite3.Connection, sql: str, attempts: int, pause: float = 0.05) -> None:
    """Run ``sql``, retrying while SQLite answers "database is locked" without waiting."""
    for attempt in range(attempts):
        try:
            con.execute(sql)
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or attempt == attempts - 1:
                raise
            time.sleep(pause)


class Store:
    """Handle on one store directory. Cheap to create; opens connections on demand."""

    @classmethod
    def of(cls, store: "Store | str | os.PathLike | None") -> "Store":
        """``store`` itself, or a Store for a folder (``None``: ``--store`` / ``MLOPS_STORE`` default)."""
        return store if isinstance(store, cls) else cls(store)

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = store_dir(root)
        self.db_path = self.root / "mlops.db"
        self.blob_root = self.root / "blobs"
        self._schemas: set[str] = set()
        try:
            self.blob_root.mkdir(parents=True, exist_ok=True)
            (self.root / "tmp").mkdir(exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create store at {self.root}: {e.strerror}",
                             hint="pass --store DIR or set MLOPS_STORE to a writable folder") from e

    # -- database -----------------------------------------------------------------------
    def connect(self) -> sqlite3.Connection:
        try:
            con = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute("PRAGMA busy_timeout = 60000")
            # Switching a brand-new database to WAL takes a lock that SQLite does not wait for:
            # two processes opening a fresh store at once can get "locked" at once, so retry.
            _retry_locked(con, "PRAGMA journal_mode = WAL", attempts=100)
            con.execute("PRAGMA synchronous = NORMAL")
            con.execute("PRAGMA foreign_keys = ON")
        except sqlite3.DatabaseError as e:  # not a database, a folder in its place, unreadable …
            if "locked" in str(e):
                raise
            raise StoreError(f"{self.db_path} is not a usable store database ({e})",
                             hint="pass --store (or MLOPS_STORE) pointing at a grocery-mlops store folder") from e
        return con

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (``BEGIN IMMEDIATE``) so writers queue, not fail."""
        con = self.connect()
        try:
            _retry_locked(con, "BEGIN IMMEDIATE", attempts=200)
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")
        finally:
            con.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        con = self.connect()
        try:
            yield con
        finally:
            con.close()

    def ensure_schema(self, name: str, ddl: str) -> None:
        """Create a module's tables once per process (``CREATE ... IF NOT EXISTS`` DDL)."""
        if name in self._schemas:
            return
        con = self.connect()
        try:
            con.executescript(ddl)
        finally:
            con.close()
        self._schemas.add(name)

    # -- blobs --------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blob_root / digest[:2] / digest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def put_file(self, path: str | os.PathLike, digest: str | None = None, link: bool = True,
                 verify_existing: bool = False) -> str:
        """Store a file's bytes by sha256; hard-link when possible, else copy atomically.

        ``verify_existing`` re-hashes a blob already there and replaces it when it was damaged
        (the registry's few, precious files); datasets skip that, re-versioning stays fast.
        """
        digest = digest or sha256_file(path)
        dest = self.blob_path(digest)
        if dest.exists() and not (verify_existing and sha256_file(dest) != digest):
            return digest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.root / "tmp")
        os.close(fd)  # only the name is used; leaking the descriptor ran out of them at ~20k files
        tmp = Path(name)
        try:
            copied = False
            if link:
                try:
                    tmp.unlink()
                    os.link(path, tmp)
                    copied = True
                except OSError:
                    pass
            if not copied:
                shutil.copyfile(path, tmp)
            if sha256_file(tmp) != digest:  # the source changed under us
                raise StoreError(f"{path} changed while it was being stored", hint="retry")
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        dest = self.blob_path(digest)
        if dest.exists():
            return digest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o444)
        os.replace(tmp, dest)
        return digest

    def get_bytes(self, digest: str, verify: bool = True) -> bytes:
        p = self.blob_path(digest)
        if not p.exists():
            raise StoreError(f"blob {digest[:12]} is missing from {self.blob_root}",
                             hint="the store was edited by hand; restore it from a backup")
        data = p.read_bytes()
        if verify and sha256_bytes(data) != digest:
            raise StoreError(f"blob {digest[:12]} is corrupted (digest mismatch)",
                             hint="the store was tampered with; do not trust this object")
        return data
