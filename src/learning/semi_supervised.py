"""The semi-supervised classifiers: a name → factory table over scikit-learn estimators.

Every estimator follows fit/predict with ``-1`` marking unlabeled rows and is a
``Pipeline`` of L2-normalise → PCA → L2-normalise → classifier, so inference needs
nothing but the pipeline. On strong pretrained features a plain logistic regression on
the labeled images alone is a hard baseline for graph methods, whose own ``predict`` is a
k-NN vote over transduced labels. Here the graph methods earn their place by doing what
they are good at — transduction — and handing the pseudo-labels that agree with the
labeled-only view to the same logistic regression.

Measured on the synthetic 20-class set at 10 % labels (mean test accuracy; 4 seeds with
fine-tuned features / 3 seeds with frozen ImageNet features):

    baseline (labeled only)        0.939 / 0.881
    label spreading, own predict     -   / 0.816   consensus + LR: 0.946 / 0.873
    label propagation, own predict   -   / 0.778   consensus + LR: 0.937 / 0.866
    self-training (threshold 0.7)  0.949 / 0.918
"""

from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer
from sklearn.semi_supervised import LabelPropagation, LabelSpreading, SelfTrainingClassifier

from src.core.errors import ConfigError, quote

UNLABELED = -1


class InductiveGraphClassifier(ClassifierMixin, BaseEstimator):
    """Transduce labels with a graph method, then fit ``final_estimator`` on all points.

    With ``agreement=True`` a pseudo-label is kept only where the graph agrees with
    ``final_estimator`` fitted on the labeled points alone (a co-training-style consensus:
    the two views make different mistakes, so their agreement is far cleaner than either).
    Kept pseudo-labels are weighted by the graph's confidence relative to its mean.

    Learned state: ``graph_``, ``transduction_``, ``label_confidence_``, ``pseudo_mask_``
    (unlabeled rows used for the final fit) and ``final_``.
    """

    def __init__(self, graph_estimator=None, final_estimator=None, agreement: bool = True,
                 min_confidence: float = 0.0):
        self.graph_estimator = graph_estimator
        self.final_estimator = final_estimator
        self.agreement = agreement
        self.min_confidence = min_confidence

    def fit(self, X, y):
        y = np.asarray(y)
        labeled = y != UNLABELED
        if not labeled.any():
            raise ValueError("at least one labeled sample (y != -1) is required")
        if not 0.0 <= self.min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in [0, 1), got {self.min_confidence}")
        self.graph_ = clone(self.graph_estimator).fit(X, y)
        conf = np.nan_to_num(self.graph_.label_distributions_.max(axis=1), nan=0.0)
        self.transduction_ = np.where(labeled, y, self.graph_.transduction_)
        self.label_confidence_ = np.where(labeled, 1.0, conf)
        keep = ~labeled & (self.label_confidence_ >= self.min_confidence)
        if self.agreement and keep.any() and len(np.unique(y[labeled])) > 1:
            view = clone(self.final_estimator).fit(X[labeled], y[labeled])
            keep &= view.predict(X) == self.transduction_
        self.pseudo_mask_ = keep
        use = labeled | keep
        mean_conf = conf[keep].mean() if keep.any() else 1.0
        w = np.where(labeled, 1.0, conf / max(mean_conf, 1e-12))
        self.final_ = clone(self.final_estimator).fit(X[use], self.transduction_[use], sample_weight=w[use])
        self.classes_ = self.final_.classes_
        return self

    def predict_proba(self, X):
        return self.final_.predict_proba(X)

    def predict(self, X):
        return self.final_.predict(X)


# Self-training adds a row to its labeled set where its classifier's probability reaches this (the table above).
SELF_TRAINING_THRESHOLD = 0.7


def _logreg(seed: int) -> LogisticRegression:
    return LogisticRegression(C=100.0, max_iter=3000, random_state=seed)


def _features(shape: tuple[int, int], seed: int) -> list:
    n_comp = max(1, min(128, shape[0] - 1, shape[1]))
    return [("l2", Normalizer()), ("pca", PCA(n_components=n_comp, random_state=seed)), ("l2b", Normalizer())]


def make_label_propagation(n_neighbors: int, seed: int, shape: tuple[int, int]):
    graph = LabelPropagation(kernel="knn", n_neighbors=n_neighbors, max_iter=2000)
    return Pipeline(_features(shape, seed) + [("clf", InductiveGraphClassifier(graph, _logreg(seed)))])


def make_label_spreading(n_neighbors: int, seed: int, shape: tuple[int, int]):
    graph = LabelSpreading(kernel="knn", n_neighbors=n_neighbors, alpha=0.2, max_iter=200)
    return Pipeline(_features(shape, seed) + [("clf", InductiveGraphClassifier(graph, _logreg(seed)))])


def make_self_training(n_neighbors: int, seed: int, shape: tuple[int, int]):
    clf = SelfTrainingClassifier(_logreg(seed), threshold=SELF_TRAINING_THRESHOLD, max_iter=10)
    return Pipeline(_features(shape, seed) + [("clf", clf)])


def make_baseline(n_neighbors: int, seed: int, shape: tuple[int, int]):
    """Labeled-only logistic regression: the start point of self-training."""
    return Pipeline(_features(shape, seed) + [("clf", _logreg(seed))])


ALGORITHMS: dict[str, Callable] = {
    "label_propagation": make_label_propagation,
    "label_spreading": make_label_spreading,
    "self_training": make_self_training,
}


def validate_algorithms(names) -> list[str]:
    names = [names] if isinstance(names, str) else list(names or [])
    if not names:
        raise ConfigError("no algorithm given", hint=f"choose from {', '.join(sorted(ALGORITHMS))}")
    bad = [n for n in names if n not in ALGORITHMS]
    if bad:
        raise ConfigError(f"unknown algorithm {quote(bad[0])}", hint=f"choose from {', '.join(sorted(ALGORITHMS))}")
    return list(dict.fromkeys(names))


def validate_n_neighbors(k: int, n_samples: int) -> int:
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"n_neighbors must be a positive integer, got {k!r}", hint="for example --n-neighbors 10")
    if k >= n_samples:
        raise ConfigError(f"n_neighbors {k} must be below the number of training images ({n_samples})",
                          hint="lower --n-neighbors")
    return int(k)


def build(name: str, n_neighbors: int, seed: int, shape: tuple[int, int]):
    validate_algorithms([name])
    return ALGORITHMS[name](n_neighbors, seed, shape)


def one_blas_thread(fn: Callable) -> Callable:
    """Run ``fn`` with NumPy/SciPy's BLAS on one thread. These fits multiply small matrices (at most a few
    thousand rows by 128 PCA components), where a second BLAS thread only waits for the first: measured on
    2 cores, a logistic regression on 351 x 128 took 147 ms with two threads and 5.4 ms with one; at the
    Grocery Store's size (2,640 x 1,280, 81 classes) self-training 2.35 s -> 0.28 s. Torch's threads are
    not touched (the server limits BLAS the same way, for the same reason)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper


@one_blas_thread
def fit_semi_supervised(name: str, X: np.ndarray, y_partial: np.ndarray, n_neighbors: int, seed: int):
    """Fit algorithm ``name`` on all training features, ``-1`` for unlabeled rows."""
    model = build(name, n_neighbors, seed, X.shape)
    return model.fit(X, y_partial)


@one_blas_thread
def fit_baseline(X: np.ndarray, y_partial: np.ndarray, seed: int):
    labeled = y_partial != UNLABELED
    model = make_baseline(0, seed, (int(labeled.sum()), X.shape[1]))
    return model.fit(X[labeled], y_partial[labeled])


def transduced_labels(model) -> np.ndarray | None:
    """The labels a fitted pipeline assigned to its training rows (None for the baseline)."""
    return getattr(model[-1], "transduction_", None)


def assigned_labels(model, X: np.ndarray, rows: np.ndarray | None = None,
                    proba: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(label, confidence) a fitted model gives each of its training rows ``X`` (only ``rows`` when given;
    ``proba``: the model's ``predict_proba`` of those rows, when the caller has it already).

    Graph methods give their transduction (and its confidence) where they kept it — it agreed
    with the labeled-only view, so their final classifier was trained on it — and their final
    classifier's prediction elsewhere: the transduction they distrusted is their weakest label
    (6 labels per class + a 2,000-image pool, label propagation: transduction 94.5 % right,
    this 96.5 %). Self-training gives its transduced label where it assigned one, else its
    prediction. Confidence: the graph's where its label is used, else the classifier's
    probability of the label.
    """
    sel = slice(None) if rows is None else np.asarray(rows, dtype=np.int64)
    if proba is None:
        proba = model.predict_proba(X[sel])
    labels = model.classes_[proba.argmax(1)]
    col = np.searchsorted(model.classes_, labels)
    conf = proba[np.arange(len(labels)), col]
    trans = transduced_labels(model)
    if trans is None:
        return labels, conf
    trans = np.asarray(trans)[sel]
    graph = model[-1]
    kept = getattr(graph, "pseudo_mask_", None)
    if kept is None:  # self-training: every label it assigned
        return np.where(trans != UNLABELED, trans, labels), conf
    graph_conf = np.asarray(graph.label_confidence_, dtype=np.float64)[sel]
    use = np.asarray(kept)[sel] | (graph_conf >= 1.0)  # kept, or labeled (confidence 1)
    return np.where(use, trans, labels), np.where(use, graph_conf, conf)
