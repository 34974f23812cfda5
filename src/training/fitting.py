"""One algorithm's turn: fit and evaluate, log (the one place ``{algo}/...`` keys are written), save."""

from __future__ import annotations

import logging
import subprocess
import time
import warnings
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from src.core.paths import source_checkout
from src.learning.bundles import model_file_name, save_model_bundle
from src.learning.evaluation import evaluate, save_confusion_png
from src.learning.semi_supervised import UNLABELED, assigned_labels, fit_baseline, fit_semi_supervised
from src.learning.validation import validate
from src.training.state import TrainState

log = logging.getLogger(__name__)

BASELINE = "baseline"
REFERENCE_SAMPLE = 1000
METRIC_KEYS = ("val_accuracy", "val_log_loss", "test_accuracy", "f1_score", "precision", "recall", "unlabeled_accuracy",
               "fit_seconds")
SHIFT_KEY = "shift_accuracy"  # recorded only with a --shift-dir


def recorded(m: dict[str, Any]) -> dict[str, Any]:
    """The metrics the results, the model bundle and W&B record (``shift_accuracy`` only when measured)."""
    return {k: m[k] for k in (*METRIC_KEYS, SHIFT_KEY) if k in m}


def code_version() -> str | None:
    """The git commit of this package's own source checkout; ``None`` for an installed package."""
    checkout = source_checkout()
    if checkout is None:
        return None
    try:
        out = subprocess.run(["git", "-C", str(checkout), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


NO_UNLABELED = "y contains no unlabeled samples"  # self-training's warning when every label is used (said once, below)
# scikit-learn's warning when a class has about one labeled image (1-2 labels per class): expected here, not news
FEW_PER_CLASS = "The number of unique classes is greater than 50%"
QUIET = (NO_UNLABELED, FEW_PER_CLASS)


def _fitter(name: str, s: TrainState):
    """``fit(X, y)`` for ``name``; scikit-learn's convergence warnings (label propagation often stops at
    ``max_iter`` on a fold, harmlessly), self-training's "no unlabeled samples" (the pipeline says
    that once itself) and "more than 50 % unique classes" (1-2 labels per class, printed a dozen times
    a run) go to the debug log instead of the user's terminal."""
    def fit(X, y):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            model = (fit_baseline(X, y, s.cfg.seed) if name == BASELINE
                     else fit_semi_supervised(name, X, y, s.cfg.n_neighbors, s.cfg.seed))
        for w in caught:
            if issubclass(w.category, ConvergenceWarning) or str(w.message).startswith(QUIET):
                log.debug("%s: %s", name, w.message)
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return model
    return fit


def fit_and_evaluate(name: str, s: TrainState) -> tuple[Any, dict[str, Any]]:
    """Fit ``name`` (or the labeled-only baseline), cross-validate it on the labeled rows
    (``val_accuracy``, what selection uses) and measure it on the test split (reported only)."""
    cfg, ds = s.cfg, s.ds
    fit = _fitter(name, s)
    if name == BASELINE and s.baseline_features is not None:
        X, Xt, Xs = s.baseline_features
    else:
        X, Xt, Xs = s.X, s.Xt, None
    t0 = time.perf_counter()
    model = fit(X, s.y_partial)
    fit_s = time.perf_counter() - t0
    v = validate(fit, X, s.y_partial, s.val_folds)
    s.validations[name] = v
    m = evaluate(model, Xt, ds.test.labels, ds.classes)
    m["val_accuracy"], m["val_log_loss"] = v.accuracy, v.log_loss
    if s.shift is not None:  # reported only: never fitted on, never selects
        m[SHIFT_KEY] = s.shift.accuracy(model, Xs)
    hidden, n_pool = s.hidden, len(X) - s.n_train
    m["unlabeled_accuracy"] = None  # only where truth exists: labels hidden by labeled_ratio, never the pool
    if hidden.any() or n_pool:
        assigned, conf = assigned_labels(model, X)
        if hidden.any():
            m["unlabeled_accuracy"] = float((assigned[hidden] == s.truth[hidden]).mean())
        if n_pool:
            m["pool_labels"], m["pool_confidence"] = assigned[s.n_train:], conf[s.n_train:]
    m["fit_seconds"] = fit_s
    return model, m


def calibration_validation(name: str, s: TrainState):
    """``name`` (fitted on the shipped features) scored on every labeled photo by fits that hid its fold's labels
    (:attr:`TrainState.calibration_folds`): each photo labeled as a pool image is, the pseudo-labels' evidence.
    Without fine-tuning validation used these very folds on these features: its scores are reused; without
    calibration folds, validation's are the evidence (None where ``name`` was not validated)."""
    if s.calibration_folds is None or (s.calibration_folds is s.val_folds and name in s.validations):
        return s.validations.get(name)
    return validate(_fitter(name, s), s.X, s.y_partial, s.calibration_folds)


def log_metrics(name: str, m: dict[str, Any], s: TrainState) -> None:
    """Everything W&B shows per algorithm; the baseline gets its scalars only."""
    tr = s.tracker
    tr.log({f"{name}/val_accuracy": m["val_accuracy"], f"{name}/val_log_loss": m["val_log_loss"],
            f"{name}/test_accuracy": m["test_accuracy"],
            f"{name}/f1_score": m["f1_score"],
            f"{name}/precision": m["precision"], f"{name}/recall": m["recall"],
            f"{name}/fit_seconds": m["fit_seconds"], f"{name}/unlabeled_accuracy": m["unlabeled_accuracy"],
            **({f"{name}/{SHIFT_KEY}": m[SHIFT_KEY]} if SHIFT_KEY in m else {})})
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
    metrics = recorded(m)
    bundle = {
        "algorithm": name, "classifier": model, "class_names": s.ds.classes, "extractor_digest": s.ext_digest,
        "preprocessing": s.pre.to_dict(), "extractor_precision": s.precision, "metrics": dict(metrics),
        "int8_guard": s.int8_guard, "int8_calibration": s.int8_calibration,
        "config": s.cfg.tracked(), "seed": s.cfg.seed, "dataset": s.dataset_record(),
        "run_id": s.tracker.run_id, "code_version": s.code_version, "created_at": time.time(),
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
        return recorded(m)
    return _keep(name, model, m, s)


def ship_baseline(s: TrainState) -> dict[str, Any]:
    """The labeled-only model as a bundle, when validation could not show the pool's models better: fitted on
    the shipped extractor's features (the table's baseline row itself unless a pseudo-label round replaced the
    extractor); its validation replaces the table row's in ``s.validations``."""
    saved, s.baseline_features = s.baseline_features, None
    try:
        model, m = fit_and_evaluate(BASELINE, s)
    finally:
        s.baseline_features = saved
    return _keep(BASELINE, model, m, s)


def _keep(name: str, model, m: dict[str, Any], s: TrainState) -> dict[str, Any]:
    if "pool_labels" in m:
        s.pool_predictions[name] = (m["pool_labels"], m["pool_confidence"])
    metrics = save_outputs(name, model, m, s)
    log_metrics(name, m, s)
    return metrics
