"""Which extractor precision training uses: int8 where it is proven harmless on this dataset.

With ``--runtime auto`` (and no ``$MLOPS_RUNTIME``) the float32 ONNX extractor is built first;
then int8 is calibrated on a fixed sample of the training and pool images and both precisions are
compared through the labeled-only classifier (logistic regression on the labeled rows, as
:func:`~src.learning.semi_supervised.fit_baseline`):

- agreement: the classifier fitted on float32 features predicts every training (and pool)
  image from its float32 and from its int8 features; the share of equal predictions (no labels
  needed);
- validation: 3-fold cross-validated accuracy (:func:`~src.learning.validation.validate`) of the same
  fitter on float32 vs int8 features, near-identical photos in one fold and catalogue shots never held
  out, as everywhere validation decides.

int8 is used when at least :data:`MIN_IMAGES` images were compared, agreement ≥ 99 % and the
validation accuracy drops by at most 0.5 points; otherwise float32, with a one-line reason.
Any other ``--runtime`` forces its precision without the guard (``onnx-int8`` is still
calibrated on the training images). The figures go to the results, the W&B config and each
model bundle (``int8_guard``; the calibration itself as ``int8_calibration``), so the predictor
and the monitor load the same extractor. float32 features are the ones training needs anyway
(cached); the guard's own cost is the calibration, the int8 pass and two cross-validations.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from src.core.store import Store
from src.features.extraction import FeatureCache, cached_features
from src.features.runtimes import resolve_runtime
from src.learning.semi_supervised import UNLABELED, fit_baseline
from src.learning.groups import labeled_groups
from src.learning.validation import labeled_folds, validate
from src.training.fitting import FEW_PER_CLASS

log = logging.getLogger(__name__)

MIN_IMAGES = 300          # below this, 99 % agreement cannot be told from 97 %
MIN_AGREEMENT = 0.99
MAX_VAL_DROP = 0.005      # 0.5 accuracy points
TOO_FEW = "too few images to prove int8 harmless"


@dataclass
class PrecisionChoice:
    extractor: Any                      # the runtime training extracts with
    precision: str                      # "float32" or "int8"
    guard: dict[str, Any]               # the figures and the decision (results, W&B config, bundles)
    calibration: dict[str, Any] | None  # the int8 calibration record (bundles), None for float32


def float32_runtime(runtime: str) -> str:
    """The runtime training builds first: int8 is derived from it (calibrated) by :func:`choose_precision`."""
    resolved = resolve_runtime(runtime)
    return "onnx" if resolved == "onnx-int8" else resolved


def decide(n_images: int, agreement: float | None, val_float32: float | None,
           val_int8: float | None) -> tuple[str, str]:
    """(precision, reason) from the guard's figures."""
    if n_images < MIN_IMAGES:
        return "float32", f"{TOO_FEW} ({n_images} images, need {MIN_IMAGES})"
    if val_float32 is None or val_int8 is None:
        return "float32", "no validation possible (no class has two labeled images)"
    drop = val_float32 - val_int8
    if agreement is None or agreement < MIN_AGREEMENT:
        return "float32", (f"int8 changes predictions: agreement {100 * (agreement or 0):.2f} % "
                           f"< {100 * MIN_AGREEMENT:.0f} %")
    if drop > MAX_VAL_DROP + 1e-12:
        return "float32", (f"int8 lowers validation accuracy by {100 * drop:.2f} points "
                           f"(> {100 * MAX_VAL_DROP:.1f})")
    return "int8", (f"int8 proven harmless: agreement {100 * agreement:.2f} %, validation accuracy "
                    f"{val_float32:.4f} float32 / {val_int8:.4f} int8")


def compare(X32: np.ndarray, X8: np.ndarray, y_partial: np.ndarray, seed: int,
            never_held: np.ndarray | None = None) -> dict[str, Any]:
    """Agreement of the labeled-only classifier on all rows, and cross-validated accuracy per precision (folds
    keep near-identical labeled rows together, on the float32 features; the rows ``never_held`` lists only train)."""
    def fit(X, y):
        with warnings.catch_warnings():  # 1-2 labels per class: expected, said nowhere else either
            warnings.filterwarnings("ignore", message=FEW_PER_CLASS)
            return fit_baseline(X, y, seed)

    clf = fit(X32, y_partial)
    agreement = float((clf.predict(X32) == clf.predict(X8)).mean()) if len(X32) else None
    lab = np.flatnonzero(y_partial != UNLABELED)
    folds = labeled_folds(y_partial, seed=seed, groups=labeled_groups(X32, lab))
    if never_held is not None:
        folds[np.asarray(never_held, dtype=np.int64)] = -1
    return {"agreement": agreement, "val_accuracy_float32": validate(fit, X32, y_partial, folds).accuracy,
            "val_accuracy_int8": validate(fit, X8, y_partial, folds).accuracy}


def _guard_images(ds, mask: np.ndarray) -> tuple[list[Path], list[str], np.ndarray]:
    """Training images (labels where used) plus the unlabeled pool when the dataset has one."""
    paths, digests = list(ds.train.paths), list(ds.train.digests)
    y = np.where(mask, ds.train.labels, UNLABELED)
    pool = getattr(ds, "pool", None)
    if pool is not None and len(pool):
        paths += list(pool.paths)
        digests += list(pool.digests)
        y = np.concatenate([y, np.full(len(pool), UNLABELED, dtype=y.dtype)])
    return paths, digests, y


def _calibrated(cfg, ds, mask, ext_path: Path, ext_digest: str, store: Store):
    from src.features.int8_calibration import calibrate_int8, calibration_sample

    paths, digests, y = _guard_images(ds, mask)  # the pool too: more, and more varied, images (issue 29)
    idx = calibration_sample(y, y != UNLABELED, seed=cfg.seed)
    return calibrate_int8(ext_path, ext_digest, [paths[i] for i in idx], [digests[i] for i in idx], store)


def choose_precision(cfg, ds, mask: np.ndarray, extractor, ext_path: Path, ext_digest: str, store: Store,
                     tracker) -> PrecisionChoice:
    """The extractor training uses and the guard's record (see the module docstring)."""
    t0 = time.perf_counter()
    runtime = resolve_runtime(cfg.runtime)
    guard: dict[str, Any] = {"runtime": runtime, "n_images": None, "agreement": None, "val_accuracy_float32": None,
                             "val_accuracy_int8": None, "calibration_seconds": None}
    chosen, calibration = extractor, None
    if runtime == "onnx-int8":
        chosen = _calibrated(cfg, ds, mask, ext_path, ext_digest, store)
        precision, reason = "int8", "forced by --runtime onnx-int8 (no guard)"
    elif runtime != "auto":
        precision, reason = "float32", f"forced by --runtime {runtime} (no guard)"
    elif getattr(extractor, "precision", None) != "float32" or not hasattr(extractor, "session"):
        precision, reason = "float32", "ONNX Runtime unavailable: no int8"
    else:
        paths, digests, y = _guard_images(ds, mask)
        guard["n_images"] = len(paths)
        precision, reason = decide(len(paths), None, None, None)
        if len(paths) >= MIN_IMAGES:
            cache = FeatureCache(store)
            t1 = time.perf_counter()
            int8 = _calibrated(cfg, ds, mask, ext_path, ext_digest, store)
            guard["calibration_seconds"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            X32, _ = cached_features(extractor, paths, digests, cache, cfg.batch_size, cfg.progress, "guard float32")
            guard["float32_extract_seconds"] = time.perf_counter() - t2  # training needs these anyway (cached)
            t2 = time.perf_counter()
            X8, _ = cached_features(int8, paths, digests, cache, cfg.batch_size, cfg.progress, "guard int8")
            guard["int8_extract_seconds"] = time.perf_counter() - t2
            guard.update(compare(X32, X8, y, cfg.seed, np.flatnonzero(ds.catalogue)))
            precision, reason = decide(len(paths), guard["agreement"], guard["val_accuracy_float32"],
                                       guard["val_accuracy_int8"])
            if precision == "int8":
                chosen = int8
    if precision == "int8":
        calibration = chosen.calibration
        guard["calibration_digest"] = calibration["digest"]
        guard["calibration_images"] = calibration["images"]
    guard.update(decision=precision, reason=reason, seconds=time.perf_counter() - t0)
    log.info("extractor precision %s: %s", precision, reason)
    tracker.update_config({"int8_guard": guard})
    return PrecisionChoice(chosen, precision, guard, calibration)
