"""What makes ``apply`` safe to kill, rerun and run twice at once.

- **The lock**: an ``apply`` holds an exclusive ``flock`` on the data dir itself (a folder
  can be locked; no lock file is created in the dataset) from before it completes an
  interrupted apply until its version is recorded. A second ``apply`` on the same data dir
  waits for it (saying so on stderr) and then plans against the pool as the first left it,
  so the version history always matches the disk. After :data:`LOCK_TIMEOUT` seconds of
  waiting it gives up with one line and moves nothing. The lock dies with its process, so
  a killed apply never leaves it held.
- **The journal**: the planned moves, written (fsynced) to the store before the first move
  and removed once the version is recorded. An apply that finds one completes it first.
- **The applied log**: every move an apply completed, appended to the store, so a rerun of
  the same CSV (after a kill, or by mistake) recognises rows already applied instead of
  reporting their pool paths as unknown.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from src.core.errors import DataError
from src.core.paths import write_text_atomic
from src.core.store import Store

log = logging.getLogger(__name__)
LOCK_TIMEOUT = 600.0  # seconds a second apply waits for the first


def _key(root: Path) -> str:
    return hashlib.sha256(str(root).encode()).hexdigest()[:16]


def journal_path(store: Store, root: Path) -> Path:
    return store.root / "labeling" / f"journal-{_key(root)}.json"


def applied_log_path(store: Store, root: Path) -> Path:
    return store.root / "labeling" / f"applied-{_key(root)}.jsonl"


def write_journal(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload), fsync=True)


def read_journal(path: Path) -> dict:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(payload.get("moves"), list):
            raise ValueError("no moves")
        return payload
    except (OSError, ValueError, AttributeError) as e:
        raise DataError(f"the labeling journal {path} is unreadable ({e})",
                        hint="check train/ and unlabeled/, then delete the journal and apply again") from e


def record_applied(store: Store, root: Path, moves: list[dict]) -> None:
    """Append completed moves to the applied log (a repeat after a crash is harmless: the last entry wins)."""
    if not moves:
        return
    path = applied_log_path(store, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.writelines(json.dumps({k: m[k] for k in ("path", "to", "label", "sha256")}) + "\n" for m in moves)
        f.flush()
        os.fsync(f.fileno())


def applied_moves(store: Store, root: Path) -> dict[str, dict]:
    """``{pool path: its last completed move}`` for ``root`` (a torn last line is skipped)."""
    path = applied_log_path(store, root)
    out: dict[str, dict] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            m = json.loads(line)
            out[m["path"]] = m
        except (ValueError, KeyError, TypeError):
            continue
    return out


@contextmanager
def apply_lock(root: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[None]:
    """Hold the data dir's apply lock (see the module doc) for the body of the ``with``."""
    fd = os.open(root, os.O_RDONLY)
    try:
        deadline, told = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise DataError(f"cannot lock {root} for labeling ({e.strerror})",
                                    hint="run apply on a local folder") from e
            if time.monotonic() >= deadline:
                raise DataError(f"another labeling apply on {root} is still running after {timeout:.0f} s; "
                                f"nothing was moved", hint="wait for it to finish, then apply again")
            if not told:
                log.warning("waiting for another labeling apply on %s to finish", root)
                told = True
            time.sleep(0.1)
        yield
    finally:
        os.close(fd)  # releases the lock
