"""Garbage collection of the store: old monitoring rows, unused extractors and exports, orphan blobs.

``gc(store, days)`` removes

* monitoring rows older than ``days`` (predictions — 2.5 KB of features each — alerts, and
  sessions with no newer prediction);
* fine-tuned extractors in the fine-tune cache (row and blob), ONNX exports in ``<store>/onnx/``
  and cached features in ``features.db`` of every extractor that no registered version, no
  training run of the last ``days`` (nor the newest run) and no cache entry of the last ``days`` names;
* orphan blobs: blobs no table references (:mod:`src.upkeep.references`) and nobody stored or
  re-stored within ``grace_s`` (a writer may be between storing a blob and recording it).

Nothing a registered version, an alias or a dataset version needs is ever a candidate. Decisions
and deletions happen under the store's write transaction (writers queue) and the exclusive blob
lock; ``dry_run`` decides the same way and removes nothing. Databases are vacuumed afterwards
so the space really comes back.
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

from src.core.errors import ConfigError, StoreError
from src.core.store import Store
from src.upkeep.references import (
    ONNX_NAME,
    existing_store,
    kept_extractors,
    referenced_blobs,
    stored_blobs,
    tables,
)

log = logging.getLogger(__name__)
DEFAULT_DAYS = 30.0
ORPHAN_GRACE_S = 24 * 3600.0  # an unreferenced blob touched within a day may be about to be recorded
KINDS = ("monitoring rows", "fine-tuned extractors", "onnx exports", "cached features", "orphan blobs")
_PREDICTION_BYTES = ("COALESCE(LENGTH(feature), 0) + LENGTH(image) + LENGTH(image_sha256) + LENGTH(prediction) "
                     "+ COALESCE(LENGTH(true_label), 0) + 48")  # about what a row takes on disk


@dataclass
class Plan:
    """What gc removes: per kind, items (names) and bytes."""

    cutoff: float
    items: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})
    bytes: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    count: dict[str, int] = field(default_factory=lambda: {k: 0 for k in KINDS})
    finetune_keys: list[str] = field(default_factory=list)
    blobs: list[Path] = field(default_factory=list)
    onnx: list[Path] = field(default_factory=list)
    feature_keys: list[str] = field(default_factory=list)

    def add(self, kind: str, item: str, size: int, n: int = 1) -> None:
        self.items[kind].append(item)
        self.bytes[kind] += size
        self.count[kind] += n


def validate_days(days: Any) -> float:
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not math.isfinite(days) or days < 0:
        raise ConfigError(f"--older-than must be a number of days >= 0, got {days!r}",
                          hint=f"for example --older-than {DEFAULT_DAYS:g}")
    return float(days)


def _monitoring(con: sqlite3.Connection, plan: Plan) -> None:
    if "monitor_predictions" not in tables(con):
        return
    c = plan.cutoff
    n, size = con.execute(f"SELECT COUNT(*), COALESCE(SUM({_PREDICTION_BYTES}), 0) FROM monitor_predictions "
                          "WHERE at < ?", (c,)).fetchone()
    alerts = con.execute("SELECT COUNT(*) FROM monitor_alerts WHERE at < ?", (c,)).fetchone()[0]
    sessions = con.execute("SELECT COUNT(*) FROM monitor_sessions s WHERE COALESCE(finished_at, started_at) < ? AND "
                           "NOT EXISTS (SELECT 1 FROM monitor_predictions p WHERE p.session = s.id AND p.at >= ?)",
                           (c, c)).fetchone()[0]
    if n + alerts + sessions:
        plan.add("monitoring rows", f"{n} predictions, {alerts} alerts, {sessions} sessions",
                 int(size) + 200 * (alerts + sessions), n + alerts + sessions)


def _blob_age_ok(p: Path, now: float, grace_s: float) -> tuple[bool, int]:
    """(old enough to remove, size) of a blob; its change time restarts when a writer stores it again."""
    try:
        s = p.stat()
    except FileNotFoundError:
        return False, 0
    return max(s.st_ctime, s.st_mtime) < now - grace_s, s.st_size


def decide(st: Store, con: sqlite3.Connection, days: float, grace_s: float, now: float) -> Plan:
    """Everything gc would remove, read through ``con`` (the write transaction when it deletes)."""
    plan = Plan(cutoff=now - days * 86400)
    _monitoring(con, plan)
    keep = kept_extractors(con, plan.cutoff)
    if "finetune_cache" in tables(con):
        for key, blob in con.execute("SELECT key, blob FROM finetune_cache WHERE created_at < ?", (plan.cutoff,)):
            if blob not in keep:
                plan.finetune_keys.append(key)
    refs = referenced_blobs(con, plan.finetune_keys)
    doomed = set(plan.finetune_keys)
    doomed_extractors = {b for (k, b) in con.execute("SELECT key, blob FROM finetune_cache") if k in doomed}
    plan.count["fine-tuned extractors"] = len(plan.finetune_keys)
    plan.items["fine-tuned extractors"] = sorted(doomed_extractors)  # its blob goes when no one just stored it
    for p in stored_blobs(st.blob_root):
        if p.name in refs:
            continue
        old, size = _blob_age_ok(p, now, grace_s)
        if not old:  # stored again just now: someone may be about to record it
            continue
        if p.name in doomed_extractors:
            plan.bytes["fine-tuned extractors"] += size
            plan.blobs.append(p)
        else:
            plan.add("orphan blobs", p.name, size)
            plan.blobs.append(p)
    onnx = st.root / "onnx"
    for p in sorted(onnx.glob("*.onnx")) if onnx.is_dir() else []:
        m = ONNX_NAME.fullmatch(p.name)
        try:
            s = p.stat()
        except FileNotFoundError:  # removed meanwhile (another gc)
            continue
        if m and m[1] not in keep and s.st_mtime < plan.cutoff:  # a fresh export may serve a running job
            plan.add("onnx exports", p.name, s.st_size)
            plan.onnx.append(p)
    _features(st, keep, plan)
    return plan


def _features_db(st: Store) -> sqlite3.Connection | None:
    path = st.root / "features.db"
    if not path.is_file():
        return None
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 60000")
    return con


def _features(st: Store, keep: set[str], plan: Plan) -> None:
    con = _features_db(st)
    if con is None:
        return
    try:
        if "features" not in tables(con):
            return
        for key, n, size in con.execute("SELECT extractor, COUNT(*), SUM(LENGTH(vec) + LENGTH(image_sha) + "
                                        "LENGTH(extractor)) FROM features GROUP BY extractor"):
            if key.split(":", 1)[0] not in keep:
                plan.add("cached features", key, int(size or 0), int(n))
                plan.feature_keys.append(key)
    finally:
        con.close()


def _delete(st: Store, con: sqlite3.Connection, plan: Plan, now: float, grace_s: float) -> None:
    c = plan.cutoff
    if plan.count["monitoring rows"]:
        con.execute("DELETE FROM monitor_predictions WHERE at < ?", (c,))
        con.execute("DELETE FROM monitor_alerts WHERE at < ?", (c,))
        con.execute("DELETE FROM monitor_sessions WHERE COALESCE(finished_at, started_at) < ? AND NOT EXISTS "
                    "(SELECT 1 FROM monitor_predictions p WHERE p.session = monitor_sessions.id)", (c,))
    con.executemany("DELETE FROM finetune_cache WHERE key = ?", [(k,) for k in plan.finetune_keys])
    with st.blob_lock(exclusive=True):  # no writer is between "it exists" and refreshing it now
        for p in plan.blobs:
            if _blob_age_ok(p, now, grace_s)[0]:  # not stored again since it was decided
                p.unlink(missing_ok=True)
    for p in plan.onnx:
        p.unlink(missing_ok=True)


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


def _drop_features(st: Store, keys: list[str]) -> None:
    con = _features_db(st)
    if con is None or not keys:
        return
    try:
        con.execute("BEGIN IMMEDIATE")
        con.executemany("DELETE FROM features WHERE extractor = ?", [(k,) for k in keys])
        con.execute("COMMIT")
    finally:
        con.close()
    _vacuum(st.root / "features.db")


def gc(store: Store | str | os.PathLike | None = None, days: float = DEFAULT_DAYS, dry_run: bool = False,
       grace_s: float = ORPHAN_GRACE_S) -> dict[str, Any]:
    """Remove (or with ``dry_run`` list) what nothing needs; returns counts, bytes and items per kind."""
    days = validate_days(days)
    st = existing_store(store)
    if not st.db_path.is_file():
        raise StoreError(f"no store database at {st.db_path}",
                         hint="pass --store (or MLOPS_STORE) pointing at a grocery-mlops store folder")
    now = time.time()
    if dry_run:
        with st.read() as con:
            plan = decide(st, con, days, grace_s, now)
    else:
        st.require_writable()
        with st.transaction() as con:
            plan = decide(st, con, days, grace_s, now)
            _delete(st, con, plan, now, grace_s)
        _drop_features(st, plan.feature_keys)
        if plan.count["monitoring rows"] or plan.finetune_keys:
            _vacuum(st.db_path)
    return {"dry_run": dry_run, "older_than_days": days, "store": str(st.root),
            "kinds": {k: {"count": plan.count[k], "bytes": plan.bytes[k], "items": plan.items[k]} for k in KINDS},
            "total_bytes": sum(plan.bytes.values())}
