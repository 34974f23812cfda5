"""Pseudo-labels out: the best algorithm's label for every image of the unlabeled pool.

``models/pseudo_labels.csv`` has one row per pool image — ``path`` (relative to the data
dir, as ``labeling.py apply`` reads it), ``label``, ``confidence``, ``algorithm`` — so the
confident ones can be accepted (``labeling.py apply --labels models/pseudo_labels.csv
--min-confidence 0.98``) and the doubtful ones labeled by a person. The run logs a table
of thumbnails for a sample and the confidence histogram; the results get a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.core.csv_cells import csv_text
from src.core.paths import write_text_atomic
from src.training.state import TrainState

FILENAME = "pseudo_labels.csv"
COLUMNS = ["path", "label", "confidence", "algorithm"]
SAMPLE = 48  # thumbnails in the W&B table
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def pool_rows(s: TrainState, algorithm: str) -> list[list[Any]]:
    labels, conf = s.pool_predictions[algorithm]
    root = s.ds.root
    return [[Path(p).relative_to(root).as_posix(), s.ds.classes[int(c)], round(float(f), 6), algorithm]
            for p, c, f in zip(s.ds.pool.paths, labels, conf)]


def write_csv(path: Path, rows: list[list[Any]]) -> None:
    """Write beside and rename, so a reader never sees half a file; cells a spreadsheet would run as a
    formula are escaped (:mod:`src.core.csv_cells`), which ``labeling.py apply`` reads back as written."""
    write_text_atomic(path, csv_text(COLUMNS, rows))


def summarize(rows: list[list[Any]], classes: list[str], algorithm: str) -> dict[str, Any]:
    conf = np.asarray([r[2] for r in rows], dtype=np.float64)
    per_class = {c: 0 for c in classes}
    for r in rows:
        per_class[r[1]] += 1
    return {"file": FILENAME, "algorithm": algorithm, "count": len(rows), "per_class": per_class,
            "confidence_quantiles": {f"p{round(q * 100)}": float(np.quantile(conf, q)) for q in QUANTILES}
            if len(conf) else {}}


def export_pseudo_labels(s: TrainState, algorithm: str) -> dict[str, Any] | None:
    """Write ``pseudo_labels.csv`` for the pool (None without one), log it, return its summary."""
    out = s.models_dir / FILENAME
    if algorithm not in s.pool_predictions:
        out.unlink(missing_ok=True)  # a stale file from a run with a pool would mislead
        return None
    rows = pool_rows(s, algorithm)
    write_csv(out, rows)
    summary = summarize(rows, s.ds.classes, algorithm)
    tr = s.tracker
    tr.histogram("pseudo_labels/confidence", [r[2] for r in rows])
    rng = np.random.default_rng(s.cfg.seed)
    pick = sorted(rng.choice(len(rows), size=min(SAMPLE, len(rows)), replace=False).tolist())
    tr.image_table("pseudo_labels/sample", ["path", "label", "confidence", "image"],
                   [[rows[i][0], rows[i][1], rows[i][2], str(s.ds.pool.paths[i])] for i in pick], image_col=3)
    tr.log({"pseudo_labels/count": len(rows),
            "pseudo_labels/median_confidence": summary["confidence_quantiles"].get("p50")})
    return summary
