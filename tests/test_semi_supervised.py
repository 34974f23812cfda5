import numpy as np
import pytest
from sklearn.datasets import make_blobs

from src.core.errors import ConfigError
from src.learning.semi_supervised import (ALGORITHMS, UNLABELED, InductiveGraphClassifier, fit_baseline,
                                 fit_semi_supervised, transduced_labels, validate_algorithms, validate_n_neighbors)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(500, n_features=32, centers=5, cluster_std=4.0, random_state=0)
    Xtr, ytr, Xte, yte = X[:400], y[:400], X[400:], y[400:]
    rng = np.random.default_rng(0)
    y_partial = np.full_like(ytr, UNLABELED)
    for c in range(5):
        y_partial[rng.choice(np.flatnonzero(ytr == c), 3, replace=False)] = c
    return Xtr, ytr, y_partial, Xte, yte


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_labeled_points_keep_their_labels(name, blobs):
    X, _, y_partial, _, _ = blobs
    model = fit_semi_supervised(name, X, y_partial, n_neighbors=7, seed=0)
    labeled = y_partial != UNLABELED
    assert (transduced_labels(model)[labeled] == y_partial[labeled]).all()


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_predicts_well_above_chance(name, blobs):
    X, _, y_partial, Xte, yte = blobs
    model = fit_semi_supervised(name, X, y_partial, n_neighbors=7, seed=0)
    proba = model.predict_proba(Xte)
    assert proba.shape == (len(Xte), 5) and np.allclose(proba.sum(1), 1)
    assert (model.predict(Xte) == yte).mean() > 0.8


@pytest.mark.parametrize("name", ["label_propagation", "label_spreading"])
def test_graph_methods_use_unlabeled_data(name, blobs):
    """On well-clustered data with 3 labels per class, transduction beats labeled-only."""
    X, _, y_partial, Xte, yte = blobs
    base = (fit_baseline(X, y_partial, 0).predict(Xte) == yte).mean()
    ssl = (fit_semi_supervised(name, X, y_partial, 7, 0).predict(Xte) == yte).mean()
    assert ssl >= base


def test_three_points():
    X = np.array([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0], [1.0, 0.1]])
    y = np.array([0, UNLABELED, 1, UNLABELED])
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelSpreading

    clf = InductiveGraphClassifier(LabelSpreading(kernel="knn", n_neighbors=2), LogisticRegression()).fit(X, y)
    assert clf.transduction_.tolist() == [0, 0, 1, 1]


def test_inductive_requires_a_label():
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelSpreading

    with pytest.raises(ValueError, match="at least one labeled"):
        InductiveGraphClassifier(LabelSpreading(), LogisticRegression()).fit(np.zeros((3, 2)), np.full(3, -1))


def test_unknown_algorithm_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown algorithm 'kmeans'.*label_propagation, label_spreading, self_training"):
        validate_algorithms(["label_spreading", "kmeans"])


def test_n_neighbors_validation():
    with pytest.raises(ConfigError):
        validate_n_neighbors(0, 10)
    with pytest.raises(ConfigError, match="below the number"):
        validate_n_neighbors(10, 10)
    assert validate_n_neighbors(5, 10) == 5


def _blas_threads() -> set[int]:
    from threadpoolctl import threadpool_info

    return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}


@pytest.mark.parametrize("name", [*sorted(ALGORITHMS), "baseline"])
def test_fits_run_with_one_blas_thread_and_restore_it(name, blobs, monkeypatch):
    """Small matrices: a second BLAS thread only waits (147 ms -> 5.4 ms a fit on 2 cores); the caller's
    setting comes back afterwards."""
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    X, _, y_partial, _, _ = blobs
    seen: list[set[int]] = []
    fit = LogisticRegression.fit
    monkeypatch.setattr(LogisticRegression, "fit", lambda self, *a, **k: (seen.append(_blas_threads()),
                                                                          fit(self, *a, **k))[1])
    with threadpool_limits(2, user_api="blas"):
        if name == "baseline":
            fit_baseline(X, y_partial, 0)
        else:
            fit_semi_supervised(name, X, y_partial, 7, 0)
        assert _blas_threads() == {2}
    assert seen and all(s == {1} for s in seen)
