"""The validation scheme that picks the best algorithm: cross-validation over labeled rows only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from src.learning.semi_supervised import ALGORITHMS, UNLABELED, fit_baseline, fit_semi_supervised
from src.learning.validation import cross_val_accuracy, labeled_folds
from src.training.results import select_best


def partial_blobs(seed=0, n=150, labeled_per_class=6):
    X, y = make_blobs(n_samples=n, centers=3, n_features=8, cluster_std=1.0, random_state=seed)
    rng = np.random.default_rng(seed)
    y_partial = np.full(n, UNLABELED)
    for c in range(3):
        keep = rng.choice(np.flatnonzero(y == c), labeled_per_class, replace=False)
        y_partial[keep] = c
    return X.astype(np.float32), y, y_partial


def test_folds_hold_out_only_labeled_rows_and_never_a_class_only_example():
    y = np.array([0, 0, 0, 1, 1, 2, UNLABELED, UNLABELED])
    folds = labeled_folds(y, k=3, seed=1)
    assert (folds[y == UNLABELED] == -1).all()
    assert folds[5] == -1  # class 2 has one label: always in the fit part
    for f in range(3):
        held = folds == f
        for c in (0, 1):  # every fold keeps at least one label of each class for fitting
            assert ((y == c) & ~held).any()
    assert sorted(folds[:3].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_cross_val_accuracy_separates_easy_from_impossible(name):
    X, y, y_partial = partial_blobs()
    fit = lambda X_, y_: fit_semi_supervised(name, X_, y_, 5, 0)  # noqa: E731
    assert cross_val_accuracy(fit, X, y_partial, seed=0) >= 0.9
    shuffled = y_partial.copy()
    lab = shuffled != UNLABELED
    shuffled[lab] = np.random.default_rng(3).permutation(shuffled[lab])  # labels unrelated to the data
    assert cross_val_accuracy(fit, X, shuffled, seed=0) < 0.7


def test_held_out_labels_are_hidden_from_the_fit():
    X, y, y_partial = partial_blobs()
    seen = []

    def spy(X_, y_):
        seen.append(y_.copy())
        return fit_baseline(X_, y_, 0)

    cross_val_accuracy(spy, X, y_partial, k=3, seed=0)
    assert len(seen) == 3
    hidden = [np.flatnonzero((y_partial != UNLABELED) & (s == UNLABELED)) for s in seen]
    assert all(len(h) > 0 for h in hidden) and len(set(np.concatenate(hidden).tolist())) == sum(map(len, hidden))


def test_no_validation_possible_with_one_label_per_class():
    X, y, y_partial = partial_blobs(labeled_per_class=1)
    assert cross_val_accuracy(lambda a, b: fit_baseline(a, b, 0), X, y_partial) is None


def test_selection_uses_validation_never_test():
    per = {"label_propagation": {"val_accuracy": 0.80, "test_accuracy": 0.99},
           "label_spreading": {"val_accuracy": 0.90, "test_accuracy": 0.70},
           "self_training": {"val_accuracy": 0.90, "test_accuracy": 0.95}}
    assert select_best(per) == "label_spreading"  # ties go to the configured order, not to test accuracy
    none = {a: {"val_accuracy": None, "test_accuracy": t} for a, t in (("x", 0.1), ("y", 0.9))}
    assert select_best(none) == "x"


def test_accuracy_ties_go_to_the_lower_validation_log_loss():
    per = {"label_propagation": {"val_accuracy": 0.90, "val_log_loss": 0.40, "test_accuracy": 0.99},
           "label_spreading": {"val_accuracy": 0.90, "val_log_loss": 0.20, "test_accuracy": 0.70},
           "self_training": {"val_accuracy": 0.85, "val_log_loss": 0.01, "test_accuracy": 0.95}}
    assert select_best(per) == "label_spreading"  # accuracy first; the tie by log-loss; never test


def test_cross_val_log_loss_rewards_confident_right_answers():
    from src.learning.validation import cross_val_scores

    X, y, y_partial = partial_blobs(labeled_per_class=6)
    fit = lambda a, b: fit_baseline(a, b, 0)  # noqa: E731
    acc, loss = cross_val_scores(fit, X, y_partial, k=3, seed=0)
    assert acc == cross_val_accuracy(fit, X, y_partial, k=3, seed=0) and 0 < loss < np.log(len(np.unique(y)))
    noisy = X + np.random.default_rng(0).normal(size=X.shape) * 3 * X.std()
    assert cross_val_scores(fit, noisy, y_partial, k=3, seed=0)[1] > loss
    assert cross_val_scores(fit, X, np.where(y_partial >= 0, -1, -1), k=3) == (None, None)
