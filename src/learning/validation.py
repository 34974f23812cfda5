"""One validation scheme over the labeled images, used to choose what training ships.

Choosing by *test* accuracy is an optimistic bias: the test split would both pick and grade, so
``test/`` only reports. Validation scores labeled images whose labels no fit has seen — the rows of
``folds`` (:func:`validate`): in each fold those labels are hidden (``-1``), the algorithm is fitted
on everything else (unlabeled rows included, as in the real fit), and the hidden rows are predicted.

Which rows: when the backbone was fine-tuned on the labeled images, only the images it did not
train on can judge anything fitted on its features: the fine-tune's held-out part
(:func:`~src.data.splits.holdout_split`, :func:`holdout_folds`). Cross-validating over the images
the backbone learned from scored 0.845 where ``test/`` gave 0.736 (Grocery Store Dataset, 10 %
labels). Without fine-tuning, stratified K-fold over every labeled image (:func:`labeled_folds`;
a class with a single labeled image is never held out). Either way the rows are few at a few
labels per class: :func:`standard_error` says how far the estimate can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from src.learning.semi_supervised import UNLABELED, assigned_labels

DEFAULT_FOLDS = 3
P_FLOOR = 1e-6  # probabilities below it count as it in a log-loss: a class the fit never saw costs -log(1e-6)


def labeled_folds(y_partial: np.ndarray, k: int = DEFAULT_FOLDS, seed: int = 0,
                  groups: np.ndarray | None = None) -> np.ndarray:
    """Fold number per row (``-1``: never held out: unlabeled rows, and classes with one label).

    ``groups`` (one id per row, :func:`~src.learning.groups.near_duplicate_groups`) keeps
    near-identical photos in one fold; a class that is a single group is never held out. Without
    groups every row is its own group (the same folds)."""
    folds = np.full(len(y_partial), -1, dtype=np.int64)
    groups = np.arange(len(y_partial)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed + 2)
    for c in np.unique(y_partial[y_partial != UNLABELED]):
        idx = rng.permutation(np.flatnonzero(y_partial == c))
        if len(idx) < 2:
            continue
        ids = list(dict.fromkeys(groups[idx].tolist()))  # this class's groups, in drawn order
        if len(ids) < 2:
            continue
        fold_of = {g: n % k for n, g in enumerate(ids)}
        folds[idx] = [fold_of[g] for g in groups[idx].tolist()]
    return folds


def holdout_folds(n_rows: int, rows: np.ndarray) -> np.ndarray:
    """Folds for a single held-out set: ``0`` at ``rows``, ``-1`` (never held out) elsewhere."""
    folds = np.full(n_rows, -1, dtype=np.int64)
    folds[np.asarray(rows, dtype=np.int64)] = 0
    return folds


def standard_error(accuracy: float, n: int) -> float:
    """One standard error of an accuracy measured on ``n`` images (binomial, with the plus-two estimate
    (k + 1) / (n + 2), so that a perfect score on a few images still has an error)."""
    p = (accuracy * n + 1) / (n + 2)
    return (p * (1 - p) / n) ** 0.5


@dataclass(frozen=True)
class Validation:
    """What :func:`validate` measured per scored row (``rows``, ascending): ``right`` and ``p_true`` of the
    prediction; ``assigned_confidence``/``assigned_right``: the label the fit gave the row as one of its
    unlabeled rows (:func:`~src.learning.semi_supervised.assigned_labels`, what a pool image gets in
    ``pseudo_labels.csv``), its confidence and whether it was right: what calibrates pseudo-labels."""

    rows: np.ndarray
    right: np.ndarray
    p_true: np.ndarray
    assigned_confidence: np.ndarray | None = None
    assigned_right: np.ndarray | None = None
    assigned: np.ndarray | None = None  # the label itself (what other models' agreement is judged against)

    @property
    def n(self) -> int:
        return len(self.rows)

    @property
    def accuracy(self) -> float | None:
        return float(self.right.mean()) if self.n else None

    @property
    def log_loss(self) -> float | None:
        return float(image_losses(self.p_true).mean()) if self.n else None


def image_losses(p_true: np.ndarray) -> np.ndarray:
    """Each image's log-loss, ``-log p(true label)``, the probability floored at :data:`P_FLOOR`."""
    return -np.log(np.maximum(np.asarray(p_true, dtype=np.float64), P_FLOOR))


def validate(fit: Callable[[np.ndarray, np.ndarray], object], X: np.ndarray, y_partial: np.ndarray,
             folds: np.ndarray) -> Validation:
    """Score every row with ``folds >= 0`` by a model fitted with that fold's labels hidden.

    ``fit(X, y)`` returns a fitted classifier with ``predict_proba`` and ``classes_``; ``y`` marks
    unlabeled rows ``-1``. ``p_true`` is the probability the model gave the true label (0 for a class
    it never saw), from which the log-loss separates algorithms whose accuracy ties.
    """
    rows_all, right_all, p_all, conf_all, aright_all, assigned_all = [], [], [], [], [], []
    for f in np.unique(folds[folds >= 0]):
        held = folds == f
        model = fit(X, np.where(held, UNLABELED, y_partial))
        proba = model.predict_proba(X[held])
        truth = y_partial[held]
        pred = model.classes_[proba.argmax(1)]
        col = np.minimum(np.searchsorted(model.classes_, truth), len(model.classes_) - 1)
        p_true = np.where(np.isin(truth, model.classes_), proba[np.arange(len(truth)), col], 0.0)
        rows = np.flatnonzero(held)
        assigned, conf = assigned_labels(model, X, rows, proba)  # the held-out rows, labeled as pool rows are
        rows_all.append(rows)
        right_all.append(pred == truth)
        p_all.append(p_true)
        conf_all.append(np.asarray(conf, dtype=np.float64))
        aright_all.append(assigned == truth)
        assigned_all.append(np.asarray(assigned))
    if not rows_all:
        return Validation(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool), np.zeros(0), np.zeros(0),
                          np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64))
    rows = np.concatenate(rows_all)
    order = np.argsort(rows, kind="stable")
    return Validation(rows[order], np.concatenate(right_all)[order], np.concatenate(p_all)[order],
                      np.concatenate(conf_all)[order], np.concatenate(aright_all)[order],
                      np.concatenate(assigned_all)[order])


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
    v = validate(fit, X, y_partial, labeled_folds(y_partial, k, seed))
    return v.accuracy, v.log_loss


def cross_val_accuracy(fit: Callable[[np.ndarray, np.ndarray], object], X: np.ndarray, y_partial: np.ndarray,
                       k: int = DEFAULT_FOLDS, seed: int = 0) -> float | None:
    """Accuracy on held-out labeled rows over ``k`` folds (:func:`cross_val_scores`)."""
    return cross_val_scores(fit, X, y_partial, k, seed)[0]
