"""One validation scheme over the labeled images, used to choose what training reports.

Choosing the best algorithm by its *test* accuracy is an optimistic bias: the test split
would then both pick and grade. Here the choice uses stratified K-fold cross-validation
over the labeled training rows only: in each fold the held-out labels are hidden (``-1``),
the algorithm is fitted on everything else (unlabeled rows included, as in the real fit),
and the held-out rows are predicted. A class with a single labeled image is never held out
(its only example stays in every fit). ``test/`` only reports what validation picked.

The backbone learned from every labeled image (the fit part of
:func:`~src.data.splits.holdout_split` trained it, the held-out part chose its epoch), so these
scores are optimistic for every algorithm alike: they rank algorithms, they do not estimate test
accuracy. Choices that train the backbone itself (its epochs, the pseudo-label round) are judged
on that held-out part instead (MLOPS.md, "One validation scheme").
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from src.learning.semi_supervised import UNLABELED

DEFAULT_FOLDS = 3


def labeled_folds(y_partial: np.ndarray, k: int = DEFAULT_FOLDS, seed: int = 0) -> np.ndarray:
    """Fold number per row (``-1``: never held out: unlabeled rows, and classes with one label)."""
    folds = np.full(len(y_partial), -1, dtype=np.int64)
    rng = np.random.default_rng(seed + 2)
    for c in np.unique(y_partial[y_partial != UNLABELED]):
        idx = rng.permutation(np.flatnonzero(y_partial == c))
        if len(idx) >= 2:
            folds[idx] = np.arange(len(idx)) % k
    return folds


def held_out_count(y_partial: np.ndarray, k: int = DEFAULT_FOLDS) -> int:
    """How many labeled rows :func:`cross_val_scores` predicts (each once): the size of the validation."""
    return int((labeled_folds(y_partial, k) >= 0).sum())


def cross_val_scores(fit: Callable[[np.ndarray, np.ndarray], object], X: np.ndarray, y_partial: np.ndarray,
                     k: int = DEFAULT_FOLDS, seed: int = 0) -> tuple[float | None, float | None]:
    """(accuracy, log-loss) on held-out labeled rows over ``k`` folds; ``(None, None)`` when no class
    has two labels.

    ``fit(X, y)`` returns a fitted classifier with ``predict_proba`` and ``classes_``; ``y`` marks
    unlabeled rows ``-1``. The log-loss (mean ``-log p(true label)``, probabilities floored at 1e-6)
    separates algorithms whose accuracy ties: with a few dozen labeled images one image is a whole
    accuracy step, and ties are common.
    """
    folds = labeled_folds(y_partial, k, seed)
    correct = total = 0
    nll = 0.0
    for f in range(k):
        held = folds == f
        if not held.any():
            continue
        y_fit = np.where(held, UNLABELED, y_partial)
        model = fit(X, y_fit)
        proba = model.predict_proba(X[held])
        truth = y_partial[held]
        pred = model.classes_[proba.argmax(1)]
        col = np.minimum(np.searchsorted(model.classes_, truth), len(model.classes_) - 1)
        p_true = np.where(np.isin(truth, model.classes_), proba[np.arange(len(truth)), col], 0.0)
        nll += float(-np.log(np.maximum(p_true, 1e-6)).sum())
        correct += int((pred == truth).sum())
        total += int(held.sum())
    return (correct / total, nll / total) if total else (None, None)


def cross_val_accuracy(fit: Callable[[np.ndarray, np.ndarray], object], X: np.ndarray, y_partial: np.ndarray,
                       k: int = DEFAULT_FOLDS, seed: int = 0) -> float | None:
    """Accuracy on held-out labeled rows over ``k`` folds (:func:`cross_val_scores`)."""
    return cross_val_scores(fit, X, y_partial, k, seed)[0]
