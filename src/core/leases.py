"""What live processes hold in the store, so that gc leaves it alone while they run.

Some things a process needs are named by no record yet, or by a record gc would otherwise judge
old: the monitoring session a server is still writing, the fine-tuned extractor, ONNX export and
cached features of a training in progress. The process *holds* them: ``hold(store, kind, key)``.

A process's holds are lines in one file, ``<store>/leases/<host>-<pid>-<random>.lease`` (``hold`` /
``release`` entries, appended), on which the process keeps an exclusive ``flock`` for its whole
life. The operating system drops that lock when the process ends, however it ends (a crash,
SIGKILL), so a hold never outlives its holder and needs no heartbeat; gc (:func:`live_holds`)
reads the holds of every locked lease, and removes the files nobody locks any more. The file is
locked under a temporary name and only then renamed into ``leases/``, so gc never finds a lease
file whose holder has not locked it yet. gc reads holds inside its write transaction: a holder
that records a thing after holding it (or holds it inside the transaction that records it) is
always seen.

Two lifetimes:

* :func:`hold` / :func:`release` — until released or the process ends (a monitoring session from
  start to finish);
* :func:`hold_for_work` inside ``with working(store):`` — until the work ends (a training: every
  extractor it fine-tunes, fetches from the cache or extracts with). Outside a ``working`` block
  it holds nothing, so a notebook's loose calls keep nothing alive.

Where ``fcntl`` is missing (Windows) nothing is held, as for the store's blob lock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import uuid
from collections import Counter
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)
FOLDER = "leases"
SUFFIX = ".lease"

_lock = threading.RLock()
_leases: dict[tuple[int, str], "_Lease"] = {}  # (pid, store root) → this process's lease on that store
_work: dict[tuple[int, str], list[Counter]] = {}  # (pid, store root) → holds of each open working() block

try:
    import fcntl
except ImportError:  # pragma: no cover — no advisory locks on this platform
    fcntl = None  # type: ignore[assignment]


class _Lease:
    """This process's lease file on one store, locked for as long as the process lives."""

    def __init__(self, store) -> None:
        from src.core.paths import temp_prefix

        folder = store.root / FOLDER
        folder.mkdir(exist_ok=True)
        tmp = store.mkstemp()  # named after host and pid: the next writer removes it if we die right here
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.path = folder / f"{temp_prefix()}{uuid.uuid4().hex[:12]}{SUFFIX}"
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self.fd = fd

    def write(self, entry: dict) -> None:
        os.write(self.fd, (json.dumps(entry, sort_keys=True) + "\n").encode())  # one short append: whole or not at all


def _key(store) -> tuple[int, str]:
    return os.getpid(), str(store.root.resolve())


def _lease(store) -> _Lease | None:
    """This process's lease on ``store`` (made on first use); None where nothing can be held."""
    if fcntl is None or not store.writable:
        return None  # a read-only store has no gc running against it from here
    key = _key(store)
    lease = _leases.get(key)
    if lease is None:
        if not _leases:
            os.register_at_fork(after_in_child=_forget)
        lease = _leases[key] = _Lease(store)
    return lease


def _forget() -> None:
    """In a forked child: the parent's leases are the parent's (the child makes its own when it holds)."""
    for lease in _leases.values():
        with contextlib.suppress(OSError):
            os.close(lease.fd)
    _leases.clear()
    _work.clear()


def hold(store, kind: str, key: str) -> None:
    """Keep ``kind``/``key`` from gc until :func:`release` or the end of this process.

    A hold that cannot be written (a full disk) is logged, not raised: the work itself goes on, only
    unprotected from a gc run meanwhile."""
    with _lock:
        try:
            lease = _lease(store)
            if lease is not None:
                lease.write({"hold": kind, "key": str(key)})
        except OSError as e:
            log.warning("cannot record in %s that this process holds %s %s (%s); a gc now may remove it",
                        store.root / FOLDER, kind, key, e.strerror or e)


def release(store, kind: str, key: str) -> None:
    """Undo one :func:`hold` (a finished monitoring session)."""
    with _lock:
        lease = _leases.get(_key(store)) if fcntl is not None else None
        if lease is not None:
            with contextlib.suppress(OSError):  # an unrecorded release only keeps the thing until we end
                lease.write({"release": kind, "key": str(key)})


class Work:
    """What one :func:`working` block holds."""

    def __init__(self) -> None:
        self.holds: Counter = Counter()

    def held(self, kind: str) -> set[str]:
        """The keys of ``kind`` this work held (a run records its extractors: gc keeps the newest run's)."""
        return {key for (k, key), n in self.holds.items() if k == kind and n}


@contextlib.contextmanager
def working(store) -> Iterator[Work]:
    """A piece of work (a training): what it holds with :func:`hold_for_work` is released when it ends."""
    key = _key(store)
    work = Work()
    mine = work.holds
    with _lock:
        _work.setdefault(key, []).append(mine)
    try:
        yield work
    finally:
        with _lock:
            _work[key].remove(mine)
            for (kind, item), n in mine.items():
                for _ in range(n):
                    release(store, kind, item)


def hold_for_work(store, kind: str, key: str) -> None:
    """:func:`hold` for the work in progress (every open :func:`working` block), or nothing outside one."""
    with _lock:
        blocks = _work.get(_key(store)) if fcntl is not None else None
        if not blocks or not store.writable:
            return
        for mine in blocks:
            if not mine[(kind, str(key))]:
                hold(store, kind, key)
                mine[(kind, str(key))] += 1


def _read(path: Path) -> list[dict]:
    entries = []
    for line in path.read_text().splitlines(keepends=True):
        if line.endswith("\n"):  # a line still being written is not there yet
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
    return entries


def live_holds(store, clean: bool = True) -> dict[str, set[str]]:
    """kind → keys held by live processes; with ``clean`` the lease files of ended processes go."""
    folder = store.root / FOLDER
    if fcntl is None or not folder.is_dir():
        return {}
    counts: Counter = Counter()
    for path in sorted(folder.glob(f"*{SUFFIX}")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # removed meanwhile by another gc
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # its process is alive and holds it
                for e in _read(path):
                    if "hold" in e:
                        counts[(e["hold"], e["key"])] += 1
                    elif "release" in e:
                        counts[(e["release"], e["key"])] -= 1
                continue
            if clean and store.writable:  # nobody holds it: its process ended
                path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    out: dict[str, set[str]] = {}
    for (kind, key), n in counts.items():
        if n > 0:
            out.setdefault(kind, set()).add(key)
    return out
