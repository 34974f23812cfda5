"""Garbage collection of the store: old monitoring rows, unused extractors and exports, orphan blobs.

``gc(store, days)`` removes

* monitoring rows older than ``days`` (predictions — 2.5 KB of features each — alerts, and
  sessions with no newer prediction, unless a live process still writes to them);
* fine-tuned extractors in the fine-tune cache (row and blob), ONNX exports in ``<store>/onnx/``
  and cached features in ``features.db`` of every extractor that no registered version, no
  training run of the last ``days`` (nor any extractor the newest run used), no cache entry of the
  last ``days`` and no training in progress names;
* orphan blobs: blobs no table references (:mod:`src.upkeep.references`) and nobody stored or
  re-stored within ``grace_s`` (a writer may be between storing a blob and recording it).

What each kind means is not written here: the package that owns the tables says what its rows
reference and what of its own may go (:mod:`src.core.ownership`), and gc asks every owner.
What live processes hold (a server's monitoring session, a training's extractors:
:mod:`src.core.leases`) is read inside gc's write transaction and never removed.

Nothing a registered version, an alias or a dataset version needs is ever a candidate. Decisions
and deletions in the store database happen under its write transaction (writers queue) and the
exclusive blob lock; removals elsewhere (cached features, export files) follow the commit with the
holds read again. ``dry_run`` decides the same way and removes nothing. Databases are vacuumed
afterwards so the space really comes back.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.core import leases
from src.core.errors import ConfigError, StoreError
from src.core.ownership import HELD_EXTRACTOR, Keep, Pruning
from src.core.store import Store
from src.upkeep.references import existing_store, kept_extractors, owners, referenced_blobs, stored_blobs

log = logging.getLogger(__name__)
DEFAULT_DAYS = 30.0
ORPHAN_GRACE_S = 24 * 3600.0  # an unreferenced blob touched within a day may be about to be recorded
KINDS = ("monitoring rows", "fine-tuned extractors", "onnx exports", "cached features", "orphan blobs")


@dataclass
class Plan:
    """What gc removes: per kind, items (names) and bytes; ``prunings``: the owners' own parts."""

    cutoff: float
    items: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    bytes: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    count: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    prunings: list[tuple[str | None, Pruning]] = field(default_factory=list)  # (the owner's database, its part)
    blobs: list[Path] = field(default_factory=list)

    def add(self, kind: str, item: str, size: int, n: int = 1) -> None:
        self.items[kind].append(item)
        self.bytes[kind] += size
        self.count[kind] += n


def validate_days(days: Any) -> float:
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days) or days < 0:
        raise ConfigError(f"`days` must be a number of days >= 0, got {days!r}",
                          hint=f"for example `days={DEFAULT_DAYS:g}`",
                          params=("days",))
    return float(days)


def _blob_age_ok(p: Path, now: float, grace_s: float) -> tuple[bool, int]:
    """(old enough to remove, size) of a blob; its change time restarts when a writer stores it again."""
    try:
        s = p.stat()
    except FileNotFoundError:
        return False, 0
    return max(s.st_ctime, s.st_mtime) < now - grace_s, s.st_size


def _keep(st: Store, con: sqlite3.Connection, cutoff: float, clean: bool) -> Keep:
    """What must stay. Read inside gc's transaction, so a live process's hold taken before it recorded
    something (or inside the transaction that recorded it) is always seen."""
    held = leases.live_holds(st, clean=clean)
    return Keep(cutoff, frozenset(kept_extractors(con, cutoff, held)),
                {kind: frozenset(keys) for kind, keys in held.items()})


def decide(st: Store, con: sqlite3.Connection, days: float, grace_s: float, now: float,
           clean: bool = False) -> Plan:
    """Everything gc would remove, read through ``con`` (the write transaction when it deletes): the
    owners say what of theirs may go (:mod:`src.core.ownership`); gc adds the blobs nothing references."""
    plan = Plan(cutoff=now - days * 86400)
    keep = _keep(st, con, plan.cutoff, clean)
    pruned: dict[str, frozenset[str]] = {}
    released: set[str] = set()
    for owner in owners():
        for p in owner.prune(st, con, keep):
            plan.prunings.append((owner.database, p))
            plan.items[p.kind] += p.items
            plan.bytes[p.kind] += p.bytes
            plan.count[p.kind] += p.count
            pruned[owner.name] = pruned.get(owner.name, frozenset()) | frozenset(p.keys)
            released |= p.releases
    refs = referenced_blobs(con, pruned)
    for p in stored_blobs(st.blob_root):
        if p.name in refs:
            continue
        old, size = _blob_age_ok(p, now, grace_s)
        if not old:  # stored again just now: someone may be about to record it
            continue
        plan.blobs.append(p)
        if p.name in released:  # a removed fine-tuned extractor's file
            plan.bytes["fine-tuned extractors"] += size
        else:
            plan.add("orphan blobs", p.name, size)
    return plan


def _delete(st: Store, con: sqlite3.Connection, plan: Plan, now: float, grace_s: float) -> None:
    for _, p in plan.prunings:
        if p.delete is not None:
            p.delete(con)
    with st.blob_lock(exclusive=True):  # no writer is between "it exists" and refreshing it now
        for p in plan.blobs:
            if _blob_age_ok(p, now, grace_s)[0]:  # not stored again since it was decided
                p.unlink(missing_ok=True)


def _after(st: Store, plan: Plan) -> None:
    """The owners' removals outside the store database (feature cache, export files), with the holds read
    again: a training that started since the decision keeps what it holds now."""
    if not any(p.after for _, p in plan.prunings):
        return
    held = leases.live_holds(st, clean=False)
    now = Keep(plan.cutoff, frozenset(held.get(HELD_EXTRACTOR, ())), {k: frozenset(v) for k, v in held.items()})
    for _, p in plan.prunings:
        if p.after is not None:
            p.after(now)


def _vacuum(path: Path) -> None:
    """Give deleted rows' pages back to the file system (a busy database is left as it is)."""
    try:
        con = sqlite3.connect(path, timeout=60, isolation_level=None)
        try:
            con.execute("PRAGMA busy_timeout = 60000")
            con.execute("VACUUM")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
    except sqlite3.OperationalError as e:
        log.warning("could not compact %s (%s); the space is reused by later writes", path.name, e)


def gc(store: Store | str | os.PathLike | None = None, days: float = DEFAULT_DAYS, dry_run: bool = False,
       grace_s: float = ORPHAN_GRACE_S) -> dict[str, Any]:
    """Remove (or with ``dry_run`` list) what nothing needs; returns counts, bytes and items per kind."""
    days = validate_days(days)
    st = existing_store(store)
    if not st.db_path.is_file():
        raise StoreError(f"no store database at {st.db_path}",
                         hint="pass `store` (or MLOPS_STORE) pointing at a grocery-mlops store folder",
                         params=("store",))
    now = time.time()
    if dry_run:
        with st.read() as con:
            plan = decide(st, con, days, grace_s, now)
    else:
        st.require_writable()
        with st.transaction() as con:
            plan = decide(st, con, days, grace_s, now, clean=True)
            _delete(st, con, plan, now, grace_s)
        _after(st, plan)
        for db in sorted({db for db, p in plan.prunings if db and p.count}):  # so the space really comes back
            _vacuum(st.root / db)
    return {"dry_run": dry_run, "older_than_days": days, "store": str(st.root),
            "kinds": {k: {"count": plan.count[k], "bytes": plan.bytes[k], "items": plan.items[k]} for k in KINDS},
            "total_bytes": sum(plan.bytes.values())}
