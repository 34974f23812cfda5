"""Training run summaries in the local store, so they can be read back without W&B."""

from __future__ import annotations

import json
import time
from typing import Any

from src.core.store import Store

DDL = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wandb_id TEXT, name TEXT, mode TEXT, job_type TEXT NOT NULL, created_at REAL NOT NULL,
    best_algorithm TEXT, best_test_accuracy REAL, baseline_test_accuracy REAL,
    dataset_version TEXT, dataset_digest TEXT, models_dir TEXT, wandb_dir TEXT,
    results TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
"""


def record_run(store: Store, results: dict[str, Any], name: str | None = None, job_type: str = "train") -> int:
    """Store a training run's results dict; returns the local run number."""
    store.ensure_schema("runs", DDL)
    s, d, run = results["summary"], results["dataset"], results["run"]
    with store.transaction() as con:
        cur = con.execute(
            "INSERT INTO runs (wandb_id, name, mode, job_type, created_at, best_algorithm, best_test_accuracy, "
            "baseline_test_accuracy, dataset_version, dataset_digest, models_dir, wandb_dir, results) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.get("id"), name, run.get("mode"), job_type, time.time(), s["best_algorithm"],
             s["best_test_accuracy"], s.get("baseline_test_accuracy"), d.get("version"), d.get("digest"),
             results.get("models_dir"), run.get("dir"), json.dumps(results, default=float)))
        return int(cur.lastrowid)


def list_runs(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Most recent runs first, with their full results."""
    store.ensure_schema("runs", DDL)
    with store.read() as con:
        rows = con.execute("SELECT * FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
    return [{**{k: r[k] for k in r.keys() if k != "results"}, "results": json.loads(r["results"])} for r in rows]
