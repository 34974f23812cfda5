"""The local system of record: one SQLite database (WAL) plus content-addressed blobs.

Everything that must be read back — dataset versions, registry versions and aliases,
run summaries, sweep state, monitoring events — lives here; W&B is the mirror.
Several processes may write at once: every write happens inside ``BEGIN IMMEDIATE``
with a generous busy timeout, and blobs are written to a temporary name and renamed,
so a killed process never leaves a half-written record or file behind; temporary names
carry the host and pid, and the next writer removes those of dead processes.
A store that is not writable (a read-only folder or file system) still answers reads: the
database is opened read-only (``mode=ro``; ``immutable`` when SQLite cannot share its WAL
index there), nothing is created, and a write is refused with one line.

Layout of a store directory::

    mlops.db            SQLite database (tables owned by each module, see ``ensure_schema``)
    blobs/ab/abcdef...  file contents addressed by sha256
    tmp/                scratch for atomic writes

Blobs and garbage collection (``python src/housekeeping.py gc``): a blob is written (or, when it
exists, its change time refreshed) before the row that references it is committed, both under a
shared lock on the ``blobs`` folder; gc decides under the write transaction and the exclusive lock,
and leaves unreferenced blobs changed within its grace period alone. ``pin`` keeps blobs that
no table names (files handed to W&B by path).
"""

from __future__ import annotations

import contextlib
import errno
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
from src.core.paths import STORE_DIRNAME, clean_stale_temps, project_root, temp_prefix

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
CHUNK = 1 << 20
_TABLE_RE = re.compile(r"CREATE\s+TABLE\s+IF\s+NOT\s+EXISTS\s+(\w+)", re.IGNORECASE)
FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
PINS_DDL = """CREATE TABLE IF NOT EXISTS blob_pins (
    digest TEXT NOT NULL, owner TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (digest, owner))"""


def write_error(e: OSError | sqlite3.Error, where: str | os.PathLike) -> StoreError:
    """One actionable line for a failed store write (disk full, read-only, permissions)."""
    text = getattr(e, "strerror", None) or str(e)
    if getattr(e, "errno", None) in FULL_ERRNOS or "full" in text:
        return StoreError(f"no space left to write to the store at {where} ({text})",
                          hint="free some space and re-run; nothing of this operation was kept")
    return StoreError(f"cannot write to the store at {where} ({text})",
                      hint="check the folder's permissions and free space; nothing of this operation was kept")


def store_dir(explicit: str | os.PathLike | None = None) -> Path:
    """``--store`` beats ``MLOPS_STORE`` beats the nearest ``.mlops/`` at or above the working
    directory, else ``./.mlops`` (see :func:`src.core.paths.project_root`)."""
    return Path(explicit or os.environ.get("MLOPS_STORE") or project_root() / STORE_DIRNAME).expanduser()


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
        self._ro_tables: dict[str, str] = {}  # table → its CREATE statement, for read-only stores
        self._temps_cleaned = False
        if self.root.is_dir() and not self.writable:
            return  # a read-only store: reads only, nothing is created
        try:
            self.blob_root.mkdir(parents=True, exist_ok=True)
            (self.root / "tmp").mkdir(exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create store at {self.root}: {e.strerror}",
                             hint="pass `store=DIR` or set MLOPS_STORE to a writable folder", params=("store",)) from e

    @property
    def writable(self) -> bool:
        """Whether this process may write the store (folder and database file)."""
        return os.access(self.root, os.W_OK) and (not self.db_path.exists() or os.access(self.db_path, os.W_OK))

    def require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"the store at {self.root} is read-only",
                             hint="read commands work; to write, pass `store` (or MLOPS_STORE) with a writable folder",
                             params=("store",))

    # -- database -----------------------------------------------------------------------
    def connect(self, readonly: bool | None = None) -> sqlite3.Connection:
        """A connection; read-only (nothing created or migrated) when the store is not writable."""
        if readonly or (readonly is None and not self.writable):
            return self._connect_ro()
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
                             hint="pass `store` (or MLOPS_STORE) pointing at a grocery-mlops store folder",
                             params=("store",)) from e
        return con

    def _connect_ro(self) -> sqlite3.Connection:
        if not self.db_path.is_file():
            raise StoreError(f"the read-only store at {self.root} has no database",
                             hint="pass `store` (or MLOPS_STORE) pointing at a grocery-mlops store folder",
                             params=("store",))
        uri = self.db_path.resolve().as_uri()
        err: Exception | None = None
        # mode=ro reads a WAL database only where SQLite can open its shared index; in a
        # read-only folder it cannot, and nobody can write there either: read it immutable.
        for query in ("?mode=ro", "?mode=ro&immutable=1"):
            try:
                con = sqlite3.connect(uri + query, uri=True, timeout=60, isolation_level=None)
                con.row_factory = sqlite3.Row
                names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                for table, ddl in self._ro_tables.items():  # tables this store never had: empty, in memory
                    if table not in names:
                        con.execute(_TABLE_RE.sub(lambda m: f"CREATE TEMP TABLE IF NOT EXISTS {m[1]}", ddl, 1))
                return con
            except sqlite3.DatabaseError as e:
                err = e
        raise StoreError(f"{self.db_path} is not a usable store database ({err})",
                         hint="pass `store` (or MLOPS_STORE) pointing at a grocery-mlops store folder",
                         params=("store",)) from err

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction taken up front (``BEGIN IMMEDIATE``) so writers queue, not fail."""
        self.require_writable()
        con = self.connect()
        try:
            _retry_locked(con, "BEGIN IMMEDIATE", attempts=200)
            try:
                yield con
            except BaseException:
                if con.in_transaction:  # SQLite has already rolled back after some errors (disk full)
                    con.execute("ROLLBACK")
                raise
            else:
                con.execute("COMMIT")
        except sqlite3.OperationalError as e:  # disk full, read-only file system: one line
            if "full" in str(e) or "readonly" in str(e) or "disk I/O" in str(e):
                raise write_error(e, self.db_path) from e
            raise
        finally:
            con.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        try:
            con = self.connect()
        except StoreError:
            if not self.writable or not self.db_path.is_file():
                raise
            con = self._connect_ro()  # e.g. a full disk where the WAL index cannot be created
        try:
            yield con
        finally:
            con.close()

    def ensure_schema(self, name: str, ddl: str, columns: dict[str, dict[str, str]] | None = None) -> None:
        """Create a module's tables once per process (``CREATE ... IF NOT EXISTS`` DDL).

        ``columns`` ({table: {column: declaration}}) are added to tables of older stores.
        A read-only store is not touched: tables it lacks read as empty.
        """
        if name in self._schemas:
            return
        if not self.writable:
            for stmt in ddl.split(";"):
                m = _TABLE_RE.search(stmt)
                if m:
                    self._ro_tables[m[1]] = stmt
            self._schemas.add(name)
            return
        con = self.connect()
        try:
            con.executescript(ddl)
            for table, cols in (columns or {}).items():
                have = {r["name"] for r in con.execute(f"PRAGMA table_info({table})")}
                if set(cols) - have:
                    _retry_locked(con, "BEGIN IMMEDIATE", attempts=200)
                    have = {r["name"] for r in con.execute(f"PRAGMA table_info({table})")}
                    for col, decl in cols.items():
                        if col not in have:
                            con.execute(f"ALTER TABLE {table} ADD COLUMN {col} {decl}")
                    con.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if "full" in str(e) or "readonly" in str(e):
                raise write_error(e, self.db_path) from e
            raise
        finally:
            con.close()
        self._schemas.add(name)

    def tmp_dir(self) -> Path:
        """The scratch folder, once per handle cleared of what killed processes left there."""
        self.require_writable()
        tmp = self.root / "tmp"
        if not self._temps_cleaned:
            tmp.mkdir(parents=True, exist_ok=True)
            clean_stale_temps(tmp)
            self._temps_cleaned = True
        return tmp

    def mkstemp(self) -> Path:
        """A new empty file in the scratch folder, named after this host and process."""
        fd, name = tempfile.mkstemp(dir=self.tmp_dir(), prefix=temp_prefix())
        os.close(fd)  # only the name is used; leaking the descriptor ran out of them at ~20k files
        return Path(name)

    # -- blobs --------------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blob_root / digest[:2] / digest

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    @contextlib.contextmanager
    def blob_lock(self, exclusive: bool = False) -> Iterator[None]:
        """Writers hold it shared while they store a blob; gc holds it exclusively while it deletes."""
        self.require_writable()
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: the grace period alone protects
            yield
            return
        self.blob_root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.blob_root, os.O_RDONLY)  # the blobs folder itself is the lock: no extra file
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _fresh(self, dest: Path) -> bool:
        """Whether ``dest`` exists; if so its change time is refreshed (gc's grace period restarts)."""
        try:
            os.chmod(dest, 0o444)  # updates st_ctime without touching the bytes or st_mtime
            return True
        except FileNotFoundError:
            return False
        except OSError:
            return dest.exists()

    def pin(self, digests, owner: str) -> None:
        """Keep blobs that no table references (e.g. files handed to W&B by path) from gc."""
        self.ensure_schema("blob_pins", PINS_DDL)
        with self.transaction() as con:
            con.executemany("INSERT OR IGNORE INTO blob_pins VALUES (?, ?, ?)",
                            [(d, owner, time.time()) for d in dict.fromkeys(digests)])

    def put_file(self, path: str | os.PathLike, digest: str | None = None, link: bool = True,
                 verify_existing: bool = False) -> str:
        """Store a file's bytes by sha256; hard-link when possible, else copy atomically.

        ``verify_existing`` re-hashes a blob already there and replaces it when it was damaged
        (the registry's few, precious files); datasets skip that, re-versioning stays fast.
        """
        digest = digest or sha256_file(path)
        with self.blob_lock():
            return self._put_file(path, digest, link, verify_existing)

    def _put_file(self, path, digest: str, link: bool, verify_existing: bool) -> str:
        dest = self.blob_path(digest)
        if self._fresh(dest) and not (verify_existing and sha256_file(dest) != digest):
            return digest
        with self._new_blob(dest) as tmp:
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
        return digest

    def put_bytes(self, data: bytes) -> str:
        with self.blob_lock():
            return self._put_bytes(data)

    def _put_bytes(self, data: bytes) -> str:
        digest = sha256_bytes(data)
        dest = self.blob_path(digest)
        if self._fresh(dest):
            return digest
        with self._new_blob(dest) as tmp:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        return digest

    @contextlib.contextmanager
    def _new_blob(self, dest: Path) -> Iterator[Path]:
        """A temporary file to fill; on success it becomes the read-only blob ``dest`` in one rename,
        on any failure it is removed (the caller holds the blob lock)."""
        tmp = self.mkstemp()
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        finally:
            if tmp.exists():
                tmp.unlink()

    def remove_blobs(self, digests) -> int:
        """Remove blobs (a failed operation's own new ones); returns how many were removed."""
        n = 0
        for d in digests:
            try:
                self.blob_path(d).unlink()
                n += 1
            except FileNotFoundError:
                pass
        return n

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
