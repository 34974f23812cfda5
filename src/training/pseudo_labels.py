"""Pseudo-labels out: the best algorithm's label for every image of the unlabeled pool.

``models/pseudo_labels.csv`` has one row per pool image — ``path`` (relative to the data
dir, as ``labeling.py apply`` reads it), ``label``, ``confidence`` (calibrated: the estimated
probability that the label is right, learning/calibration.py), ``algorithm``, ``raw_confidence``
(the model's own), ``accept`` (1 where the confidence reaches the minimum that validation shows
≥ 95 % right; 0 everywhere where no minimum can be shown) — so ``labeling.py apply --labels
models/pseudo_labels.csv`` accepts the recommended ones and a person labels the rest. The run
logs a table of thumbnails for a sample and the confidence histogram; the results get a summary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from src.core.csv_cells import csv_text
from src.core.paths import write_text_atomic
from src.learning.calibration import Calibration, PseudoLabelCalibration, calibrate_pseudo_labels, support
from src.training.state import TrainState

FILENAME = "pseudo_labels.csv"
COLUMNS = ["path", "label", "confidence", "algorithm", "raw_confidence", "accept"]
GRAPH = "label_spreading"
SAMPLE = 48  # thumbnails in the W&B table
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def committee(s: TrainState, algorithm: str) -> list[str]:
    """The models whose :func:`~src.learning.calibration.support` backs ``algorithm``'s pseudo-labels: itself
    and, where it labeled the pool too, label spreading, whose graph confidence ranks labels well (with
    self-training's at 3 labels per class on real photos the pool's labels could be ranked 66-76 % of the pool
    deep at 95 % right, against none with self-training's own; every fitted model: 62-67 %, and label
    propagation's fold fits cost 5× label spreading's, P16)."""
    return [algorithm, *([GRAPH] if GRAPH != algorithm and GRAPH in s.pool_predictions else [])]


def calibration_of(s: TrainState, algorithm: str) -> tuple[Calibration, PseudoLabelCalibration]:
    """Calibrate on every labeled photo, each labeled by fits that did not see its label, as a pool image is
    (:func:`~src.training.fitting.calibration_validation`, 3 folds, near-identical photos together); without
    those folds, on the models' validation. The fine-tune's held-out photos alone (a fifth of the labeled ones)
    were too few to recommend anything at 10 labels per class on real photos, where every labeled photo
    recommended minimums in 6 draws of 6, whose pool labels were 95.6–99.3 % right (P15). What is calibrated
    is the committee's :func:`~src.learning.calibration.support` for the label, on the labeled photos as on the
    pool (P16)."""
    from src.training.fitting import calibration_validation

    names = committee(s, algorithm)
    vs = {n: calibration_validation(n, s) for n in names}
    v = vs[algorithm]
    if v is None or v.assigned is None:
        return Calibration(), PseudoLabelCalibration()
    used = [n for n in names if vs[n] is not None and vs[n].assigned is not None and np.array_equal(vs[n].rows, v.rows)]
    # the photos the fine-tune held out never trained the extractor; the rest did (evidence_discount)
    fine_tuned = s.calibration_folds is not None and s.calibration_folds is not s.val_folds
    unbiased = s.val_folds[v.rows] >= 0 if fine_tuned and s.val_folds is not None else None
    backing = [(vs[n].assigned, vs[n].assigned_confidence) for n in used]
    cal, record = calibrate_pseudo_labels(support(v.assigned, backing), v.assigned_right, unbiased)
    record.committee = used
    return cal, record


def pool_rows(s: TrainState, algorithm: str, cal: Calibration, minimum: float | None,
              names: list[str] | None = None) -> list[list[Any]]:
    """One row per pool image: its label, the calibrated support of ``names`` (the committee; ``algorithm``
    alone by default) for it, and the model's own confidence."""
    labels, raw = s.pool_predictions[algorithm]
    conf = cal(support(labels, [s.pool_predictions[n] for n in names or [algorithm]]))
    root = s.ds.root
    return [[Path(p).relative_to(root).as_posix(), s.ds.classes[int(c)], round(float(f), 6), algorithm,
             round(float(r), 6), int(minimum is not None and round(float(f), 6) >= minimum)]
            for p, c, f, r in zip(s.ds.pool.paths, labels, conf, raw)]


def write_csv(path: Path, rows: list[list[Any]]) -> None:
    """Write beside and rename, so a reader never sees half a file; cells a spreadsheet would run as a
    formula are escaped (:mod:`src.core.csv_cells`), which ``labeling.py apply`` reads back as written."""
    write_text_atomic(path, csv_text(COLUMNS, rows))


def summarize(rows: list[list[Any]], classes: list[str], algorithm: str,
              calibration: PseudoLabelCalibration | None = None) -> dict[str, Any]:
    conf = np.asarray([r[2] for r in rows], dtype=np.float64)
    per_class = {c: 0 for c in classes}
    for r in rows:
        per_class[r[1]] += 1
    cal = calibration or PseudoLabelCalibration()
    return {"file": FILENAME, "algorithm": algorithm, "count": len(rows), "per_class": per_class,
            "recommended_min_confidence": cal.recommended_min_confidence,
            "accepted": sum(r[5] for r in rows), "calibration": cal.record(),
            "confidence_quantiles": {f"p{round(q * 100)}": float(np.quantile(conf, q)) for q in QUANTILES}
            if len(conf) else {}}


def export_pseudo_labels(s: TrainState, algorithm: str) -> dict[str, Any] | None:
    """Write ``pseudo_labels.csv`` for the pool (None without one), log it, return its summary."""
    out = s.models_dir / FILENAME
    if algorithm not in s.pool_predictions:
        out.unlink(missing_ok=True)  # a stale file from a run with a pool would mislead
        return None
    cal, record = calibration_of(s, algorithm)
    rows = pool_rows(s, algorithm, cal, record.recommended_min_confidence, record.committee or None)
    write_csv(out, rows)
    summary = summarize(rows, s.ds.classes, algorithm, record)
    tr = s.tracker
    tr.histogram("pseudo_labels/confidence", [r[2] for r in rows])
    rng = np.random.default_rng(s.cfg.seed)
    pick = sorted(rng.choice(len(rows), size=min(SAMPLE, len(rows)), replace=False).tolist())
    tr.image_table("pseudo_labels/sample", ["path", "label", "confidence", "image"],
                   [[rows[i][0], rows[i][1], rows[i][2], str(s.ds.pool.paths[i])] for i in pick], image_col=3)
    tr.log({"pseudo_labels/count": len(rows),
            "pseudo_labels/median_confidence": summary["confidence_quantiles"].get("p50"),
            "pseudo_labels/accepted": summary["accepted"],
            "pseudo_labels/recommended_min_confidence": record.recommended_min_confidence,
            "pseudo_labels/ece_raw": record.ece_raw, "pseudo_labels/calibration_images": record.held_out_images})
    return summary
