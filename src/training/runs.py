"""Training run summaries in the local store, so they can be read back without W&B.

A sweep trial is a training run too: it carries its sweep as ``run_group`` (the sweep name) and
the tags ``sweep`` and the sweep id, and is named ``<sweep name>-trial-N``. A run's confusion
matrices are kept as blobs (``images``: algorithm → digest), so the report shows the run's own
pictures even after a later run replaced the files in its models folder.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, Iterable

from src.core.ownership import BLOB, EXTRACTOR, MENTION, Owner, has_table
from src.core.store import Store

DDL = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    wandb_id TEXT, name TEXT, mode TEXT, job_type TEXT NOT NULL, created_at REAL NOT NULL,
    best_algorithm TEXT, best_test_accuracy REAL, baseline_test_accuracy REAL,
    dataset_version TEXT, dataset_digest TEXT, models_dir TEXT, wandb_dir TEXT,
    results TEXT NOT NULL, run_group TEXT, tags TEXT, images TEXT
);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at);
"""
ADDED_COLUMNS = {"runs": {"run_group": "TEXT", "tags": "TEXT", "images": "TEXT"}}  # stores of older releases
_TRIAL_NAME = re.compile(r"-trial-\d+$")


def open_runs(store: Store) -> Store:
    store.ensure_schema("runs", DDL, ADDED_COLUMNS)
    return store


def record_run(store: Store, results: dict[str, Any], name: str | None = None, job_type: str = "train",
               group: str | None = None, tags: Iterable[str] = (), files_dir: str | Path | None = None) -> int:
    """Store a training run's results dict; returns the local run number.

    ``files_dir`` is where the run's confusion-matrix PNGs are (its staging folder); they are
    kept in the store as blobs.
    """
    open_runs(store)
    s, d, run = results["summary"], results["dataset"], results["run"]
    images = {}
    for algo, m in results.get("algorithms", {}).items():
        png = Path(files_dir) / m["confusion_matrix_png"] if files_dir and m.get("confusion_matrix_png") else None
        if png is not None and png.is_file():
            images[algo] = store.put_file(png, link=False)
    with store.transaction() as con:
        cur = con.execute(
            "INSERT INTO runs (wandb_id, name, mode, job_type, created_at, best_algorithm, best_test_accuracy, "
            "baseline_test_accuracy, dataset_version, dataset_digest, models_dir, wandb_dir, results, run_group, "
            "tags, images) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (run.get("id"), name, run.get("mode"), job_type, time.time(), s["best_algorithm"],
             s["best_test_accuracy"], s.get("baseline_test_accuracy"), d.get("version"), d.get("digest"),
             results.get("models_dir"), run.get("dir"), json.dumps(results, default=float), group,
             json.dumps(list(tags)), json.dumps(images)))
        return int(cur.lastrowid)


def list_runs(store: Store, limit: int = 100) -> list[dict[str, Any]]:
    """Most recent runs first, with their full results (``tags`` a list, ``images`` a dict)."""
    open_runs(store)
    with store.read() as con:
        rows = con.execute("SELECT * FROM runs ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)).fetchall()
    out = []
    for r in rows:
        d = {k: r[k] for k in r.keys() if k not in ("results", "tags", "images")}
        out.append({**d, "tags": json.loads(r["tags"] or "[]"), "images": json.loads(r["images"] or "{}"),
                    "results": json.loads(r["results"])})
    return out


def is_trial(run: dict[str, Any]) -> bool:
    """Whether a run is a sweep trial (runs of older stores: by their ``<sweep>-trial-N`` name)."""
    return "sweep" in run.get("tags", ()) or bool(run.get("name") and _TRIAL_NAME.search(run["name"]))


# -- what gc and du ask the runs (src.core.ownership) ----------------------------------------
def _referenced_blobs(con, _pruned: frozenset[str]):
    """Each run's confusion-matrix pictures: runs are history, never collected."""
    if has_table(con, "runs") and "images" in {r[1] for r in con.execute("PRAGMA table_info(runs)")}:
        for (images,) in con.execute("SELECT images FROM runs WHERE images IS NOT NULL"):
            yield from ((d, "run image") for d in json.loads(images).values())


def _needed_extractors(con, cutoff: float):
    """The extractors of the runs since ``cutoff`` and of the newest run (its caches make a re-run fast): the
    final one and every one the run used (``used``: its first fine-tuning round's, a dropped second round's)."""
    if not has_table(con, "runs"):
        return
    for (results,) in con.execute("SELECT results FROM runs WHERE created_at >= ? OR id = "
                                  "(SELECT id FROM runs ORDER BY created_at DESC, id DESC LIMIT 1)", (cutoff,)):
        extractor = json.loads(results).get("extractor") or {}
        yield from (d for d in (extractor.get("digest"), *extractor.get("used", ())) if d)


OWNER = Owner("training.runs", tables=("runs",),
              digests={"runs.images": BLOB, "runs.results": EXTRACTOR, "runs.dataset_digest": MENTION},
              blob_kinds=("run image",), blobs=_referenced_blobs, extractors=_needed_extractors)
