"""Monitoring records in the local store: sessions, every prediction, alerts.

A session is held (:mod:`src.core.leases`) from :func:`start_session` to :func:`finish_session`, so
gc never removes a session a live process still writes to; a session whose process died unfinished
is collected like a finished one. :data:`OWNER` says what gc may prune (:func:`prunable`).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

import numpy as np

from src.core import leases
from src.core.ownership import MENTION, Keep, Owner, Pruning, has_table
from src.core.store import Store

DDL = """
CREATE TABLE IF NOT EXISTS monitor_sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, model TEXT NOT NULL, model_digest TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL, wandb_run TEXT, summary TEXT
);
CREATE TABLE IF NOT EXISTS monitor_predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER NOT NULL REFERENCES monitor_sessions(id),
    at REAL NOT NULL, image TEXT NOT NULL, image_sha256 TEXT NOT NULL, prediction TEXT NOT NULL,
    confidence REAL NOT NULL, latency_ms REAL NOT NULL, inference_ms REAL NOT NULL, true_label TEXT,
    feature BLOB
);
CREATE INDEX IF NOT EXISTS monitor_predictions_session ON monitor_predictions (session, id);
CREATE INDEX IF NOT EXISTS monitor_predictions_image ON monitor_predictions (image);
CREATE TABLE IF NOT EXISTS monitor_feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, image TEXT NOT NULL, at REAL NOT NULL, label TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS monitor_alerts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, session INTEGER, at REAL NOT NULL, level TEXT NOT NULL,
    title TEXT NOT NULL, text TEXT NOT NULL, details TEXT
);
"""


SESSION_HOLD = "monitor_session"  # the lease kind of a session still being written
_ROW_BYTES = ("COALESCE(LENGTH(feature), 0) + LENGTH(image) + LENGTH(image_sha256) + LENGTH(prediction) "
              "+ COALESCE(LENGTH(true_label), 0) + 48")  # about what a prediction row takes on disk


def open_monitor_store(store: Store | str | None = None) -> Store:
    st = Store.of(store)
    st.ensure_schema("monitor", DDL)
    return st


def start_session(st: Store, model: str, model_digest: str) -> int:
    with st.transaction() as con:
        session = int(con.execute("INSERT INTO monitor_sessions (model, model_digest, started_at) VALUES (?, ?, ?)",
                                  (model, model_digest, time.time())).lastrowid)
        leases.hold(st, SESSION_HOLD, str(session))  # before it commits: gc, which decides in a transaction, sees it
    return session


def finish_session(st: Store, session: int, summary: dict[str, Any], wandb_run: str | None) -> None:
    with st.transaction() as con:
        con.execute("UPDATE monitor_sessions SET finished_at = ?, summary = ?, wandb_run = ? WHERE id = ?",
                    (time.time(), json.dumps(summary, default=float), wandb_run, session))
    leases.release(st, SESSION_HOLD, str(session))


def add_predictions(st: Store, rows: Iterable[tuple]) -> None:
    """Rows: (session, at, image, sha256, prediction, confidence, latency_ms, inference_ms, true_label, feature)."""
    rows = [r[:-1] + (None if r[-1] is None else np.asarray(r[-1], dtype=np.float16).tobytes(),) for r in rows]
    if not rows:
        return
    with st.transaction() as con:
        con.executemany("INSERT INTO monitor_predictions (session, at, image, image_sha256, prediction, confidence, "
                        "latency_ms, inference_ms, true_label, feature) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


def add_feedback(st: Store, rows: Iterable[tuple[str, float, str]]) -> int:
    """Ground truth that arrived later: rows ``(image, at, label)`` set ``true_label`` on those predictions.

    The feedback itself is logged in ``monitor_feedback`` (when it came); returns the predictions updated.
    """
    rows = list(rows)
    if not rows:
        return 0
    with st.transaction() as con:
        con.executemany("INSERT INTO monitor_feedback (image, at, label) VALUES (?, ?, ?)", rows)
        return sum(con.execute("UPDATE monitor_predictions SET true_label = ? WHERE image = ?",
                               (label, image)).rowcount for image, _, label in rows)


def find_prediction(st: Store, image: str) -> dict[str, Any] | None:
    """The latest recorded prediction for ``image`` (a served request's key), without its feature."""
    with st.read() as con:
        r = con.execute("SELECT id, session, prediction, true_label FROM monitor_predictions WHERE image = ? "
                        "ORDER BY id DESC LIMIT 1", (image,)).fetchone()
    return None if r is None else {k: r[k] for k in r.keys()}


def predictions(st: Store, session: int) -> list[dict[str, Any]]:
    with st.read() as con:
        rows = con.execute("SELECT * FROM monitor_predictions WHERE session = ? ORDER BY id", (session,)).fetchall()
    out = []
    for r in rows:
        d = {k: r[k] for k in r.keys() if k != "feature"}
        d["feature"] = None if r["feature"] is None else np.frombuffer(r["feature"], dtype=np.float16).astype(np.float32)
        out.append(d)
    return out


def add_alert(st: Store, session: int | None, level: str, title: str, text: str, details: dict) -> int:
    with st.transaction() as con:
        return int(con.execute("INSERT INTO monitor_alerts (session, at, level, title, text, details) "
                               "VALUES (?, ?, ?, ?, ?, ?)",
                               (session, time.time(), level, title, text, json.dumps(details, default=float))).lastrowid)


def alerts(st: Store, limit: int = 100) -> list[dict[str, Any]]:
    with st.read() as con:
        rows = con.execute("SELECT * FROM monitor_alerts ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [{**{k: r[k] for k in r.keys() if k != "details"}, "details": json.loads(r["details"] or "{}")} for r in rows]


def sessions(st: Store, limit: int = 50) -> list[dict[str, Any]]:
    with st.read() as con:
        rows = con.execute("SELECT * FROM monitor_sessions ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
    return [{**{k: r[k] for k in r.keys() if k != "summary"}, "summary": json.loads(r["summary"] or "{}")} for r in rows]


# -- what gc and du ask the monitoring records (src.core.ownership) --------------------------
def stored_bytes(con) -> int:
    """About how many bytes the prediction rows take (du)."""
    if not has_table(con, "monitor_predictions"):
        return 0
    return int(con.execute(f"SELECT COALESCE(SUM({_ROW_BYTES}), 0) FROM monitor_predictions").fetchone()[0])


def prunable(_store, con, keep: Keep) -> list[Pruning]:
    """Predictions and alerts older than the cutoff; sessions finished (or started, if never finished) before
    it with no newer prediction, except sessions a live process holds."""
    if not has_table(con, "monitor_predictions"):
        return []
    c = keep.cutoff
    held = {int(s) for s in keep.holds(SESSION_HOLD)}
    n, size = con.execute(f"SELECT COUNT(*), COALESCE(SUM({_ROW_BYTES}), 0) FROM monitor_predictions WHERE at < ?",
                          (c,)).fetchone()
    alerts = con.execute("SELECT COUNT(*) FROM monitor_alerts WHERE at < ?", (c,)).fetchone()[0]
    sessions = [i for (i,) in con.execute(
        "SELECT id FROM monitor_sessions s WHERE COALESCE(finished_at, started_at) < ? AND NOT EXISTS "
        "(SELECT 1 FROM monitor_predictions p WHERE p.session = s.id AND p.at >= ?)", (c, c)) if i not in held]
    if not n + alerts + len(sessions):
        return []

    def delete(con) -> None:
        con.execute("DELETE FROM monitor_predictions WHERE at < ?", (c,))
        con.execute("DELETE FROM monitor_alerts WHERE at < ?", (c,))
        con.executemany("DELETE FROM monitor_sessions WHERE id = ?", [(i,) for i in sessions])

    return [Pruning("monitoring rows", keys=[str(i) for i in sessions],
                    items=[f"{n} predictions, {alerts} alerts, {len(sessions)} sessions"],
                    count=n + alerts + len(sessions), bytes=int(size) + 200 * (alerts + len(sessions)), delete=delete)]


OWNER = Owner("monitoring.records", tables=("monitor_sessions", "monitor_predictions", "monitor_feedback",
                                            "monitor_alerts"),
              digests={"monitor_sessions.model_digest": MENTION, "monitor_sessions.summary": MENTION,
                       "monitor_predictions.image_sha256": MENTION, "monitor_alerts.details": MENTION},
              prune=prunable)
