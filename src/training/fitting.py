"""One algorithm's turn: fit and evaluate, log (the one place ``{algo}/...`` keys are written), save."""

from __future__ import annotations

import subprocess
import time
from typing import Any

import numpy as np

from src.core.store import PROJECT_ROOT
from src.learning.bundles import model_file_name, save_model_bundle
from src.learning.evaluation import evaluate, save_confusion_png
from src.learning.semi_supervised import UNLABELED, fit_baseline, fit_semi_supervised, transduced_labels
from src.learning.validation import cross_val_accuracy
from src.training.state import TrainState

BASELINE = "baseline"
REFERENCE_SAMPLE = 1000
METRIC_KEYS = ("val_accuracy", "test_accuracy", "f1_score", "precision", "recall", "unlabeled_accuracy",
               "fit_seconds")


def code_version() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _fitter(name: str, s: TrainState):
    if name == BASELINE:
        return lambda X, y: fit_baseline(X, y, s.cfg.seed)
    return lambda X, y: fit_semi_supervised(name, X, y, s.cfg.n_neighbors, s.cfg.seed)


def fit_and_evaluate(name: str, s: TrainState) -> tuple[Any, dict[str, Any]]:
    """Fit ``name`` (or the labeled-only baseline), cross-validate it on the labeled rows
    (``val_accuracy``, what selection uses) and measure it on the test split (reported only)."""
    cfg, ds = s.cfg, s.ds
    fit = _fitter(name, s)
    t0 = time.perf_counter()
    model = fit(s.X, s.y_partial)
    fit_s = time.perf_counter() - t0
    val = cross_val_accuracy(fit, s.X, s.y_partial, seed=cfg.seed)
    m = evaluate(model, s.Xt, ds.test.labels, ds.classes)
    m["val_accuracy"] = val
    trans = transduced_labels(model)
    unl = ~s.mask
    if unl.any():  # labels given to the unlabeled images: transduced where assigned, else predicted
        assigned = model.predict(s.X[unl])
        if trans is not None:
            assigned = np.where(trans[unl] != UNLABELED, trans[unl], assigned)
        m["unlabeled_accuracy"] = float((assigned == ds.train.labels[unl]).mean())
    else:
        m["unlabeled_accuracy"] = None
    m["fit_seconds"] = fit_s
    return model, m


def log_metrics(name: str, m: dict[str, Any], s: TrainState) -> None:
    """Everything W&B shows per algorithm; the baseline gets its scalars only."""
    tr = s.tracker
    tr.log({f"{name}/val_accuracy": m["val_accuracy"], f"{name}/test_accuracy": m["test_accuracy"],
            f"{name}/f1_score": m["f1_score"],
            f"{name}/precision": m["precision"], f"{name}/recall": m["recall"],
            f"{name}/fit_seconds": m["fit_seconds"], f"{name}/unlabeled_accuracy": m["unlabeled_accuracy"]})
    if name == BASELINE:
        return
    tr.confusion_matrix(f"{name}_confusion_matrix", s.ds.test.labels, m["y_pred"], s.ds.classes)
    tr.image(f"{name}_confusion_matrix_png", s.models_dir / f"{name}_confusion_matrix.png")
    tr.table(f"{name}_per_class_report", ["class", "precision", "recall", "f1", "support"],
             [[k, v["precision"], v["recall"], v["f1-score"], v["support"]] for k, v in m["per_class"].items()])


def _reference(s: TrainState, model, confidences: np.ndarray) -> dict:
    """Reference statistics for drift detection, stored in each model bundle."""
    rng = np.random.default_rng(s.cfg.seed)
    idx = rng.choice(len(s.X), size=min(REFERENCE_SAMPLE, len(s.X)), replace=False)
    labels = model.predict(s.X)
    return {"features": s.X[idx].astype(np.float32),
            "class_distribution": (np.bincount(labels, minlength=len(s.ds.classes)) / max(1, len(labels))).tolist(),
            "confidences": confidences.astype(np.float32)}


def save_outputs(name: str, model, m: dict[str, Any], s: TrainState) -> dict[str, Any]:
    """The confusion-matrix PNG and the model bundle; returns the metrics recorded in the results."""
    png = s.models_dir / f"{name}_confusion_matrix.png"
    save_confusion_png(s.ds.test.labels, m["y_pred"], s.ds.classes, png,
                       title=f"{name} (test accuracy {m['test_accuracy']:.3f})")
    metrics = {k: m[k] for k in METRIC_KEYS}
    bundle = {
        "algorithm": name, "classifier": model, "class_names": s.ds.classes, "extractor_digest": s.ext_digest,
        "preprocessing": s.pre.to_dict(), "extractor_precision": s.precision, "metrics": dict(metrics),
        "int8_guard": s.int8_guard, "int8_calibration": s.int8_calibration,
        "config": s.cfg.tracked(), "seed": s.cfg.seed, "dataset": s.dataset_record(),
        "run_id": s.tracker.run_id, "code_version": code_version(), "created_at": time.time(),
        "reference": _reference(s, model, m["confidences"]),
    }
    path = s.models_dir / model_file_name(name)
    metrics["model_path"] = path.name
    metrics["model_digest"] = save_model_bundle(path, bundle)
    metrics["confusion_matrix_png"] = png.name
    return metrics


def run_algorithm(name: str, s: TrainState) -> dict[str, Any]:
    model, m = fit_and_evaluate(name, s)
    if name == BASELINE:
        log_metrics(name, m, s)
        return {k: m[k] for k in METRIC_KEYS}
    metrics = save_outputs(name, model, m, s)
    log_metrics(name, m, s)
    return metrics
