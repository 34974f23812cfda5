"""Which pool images to label next: what no label covers yet, or what the model is least sure about.

``typical`` (default; TypiClust, Hacohen et al., ICML 2022): the most typical image of each feature
cluster that no labeled image covers yet. At a few labels per class it is what pays: on real photos at 3
labels per class, 2 more per class chosen so gained 2.0 points over random ones on `val/` (3 draws), where
``diverse`` gained 1.0 (benchmarks/README.md, P6). ``margin``: the smallest gap between the model's two
most likely classes (uncertainty sampling). ``diverse``: k-means on the pool's features into ``budget``
clusters and the smallest-margin image of each, so a budget is not spent on near-copies of one confusing
photo. ``random``: a seeded sample, the yardstick the others must beat.
The model is the best algorithm of the training run in ``--models-dir``, with the feature
extractor it was trained with (pool features come from the store's cache when training
already extracted them).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from src.core.csv_cells import csv_text
from src.core.errors import ConfigError, DataError, ModelError
from src.core.paths import write_text_atomic
from src.core.store import Store
from src.curation.paths import data_root
from src.curation.sheet import contact_sheet

log = logging.getLogger(__name__)
STRATEGIES = ("diverse", "margin", "typical", "random")
DEFAULT_STRATEGY = "typical"  # the most typical image of each uncovered cluster (D33)
CSV_NAME, HTML_NAME = "suggestions.csv", "suggestions.html"
MAX_REFERENCE = 2000  # images of a cluster its typicality is measured against (memory: 2,000² distances)


def load_trained_model(models_dir: Path, store: Store):
    """The best algorithm's :class:`~src.inference.predictor.Predictor` from a training run's outputs."""
    from src.inference.predictor import Predictor

    results = models_dir / "training_results.json"
    if not results.is_file():
        raise ModelError(f"{results} does not exist", hint="train on this dataset first (train_with_wandb.py)")
    try:
        best = json.loads(results.read_text())["summary"]["best_algorithm"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{results} is not a training results file", hint="train again") from e
    from src.learning.bundles import model_file_name

    return Predictor.load(models_dir / model_file_name(best), store=store), best


def pool_probabilities(root: Path, models_dir: Path, store: Store, batch_size: int = 32):
    """(dataset, pool features, class probabilities, algorithm, labeled features) for ``root``'s pool."""
    from src.data.dataset import image_dataset
    from src.features.extraction import FeatureCache, cached_features

    ds = image_dataset(root, store=store)
    if not ds.has_pool:
        raise DataError(f"{root / 'unlabeled'} holds no images", hint="put the images without labels there")
    pred, algo = load_trained_model(models_dir, store)
    if pred.class_names != ds.classes:
        raise ModelError(f"the model in {models_dir} knows classes {', '.join(pred.class_names)}, the dataset has "
                         f"{', '.join(ds.classes)}", hint="retrain on this dataset, then suggest")
    trained_on = pred.bundle.get("dataset", {}).get("root")
    if trained_on and Path(trained_on).resolve() != root:
        log.warning("the model was trained on %s, not %s", trained_on, root)
    X, _ = cached_features(pred.extractor, ds.pool.paths, ds.pool.digests, FeatureCache(store), batch_size,
                           False, "pool features")
    XL, _ = cached_features(pred.extractor, ds.train.paths, ds.train.digests, FeatureCache(store), batch_size,
                            False, "labeled features")
    return ds, X, pred.predict_features(X), algo, XL


def select(X: np.ndarray, proba: np.ndarray, budget: int, strategy: str, seed: int = 0,
           labeled: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``budget`` pool rows to label, most useful first (``labeled``: the labeled images'
    features, which ``typical`` steers away from)."""
    n = len(X)
    budget = min(budget, n)
    if strategy == "typical" and budget < n:
        return typical(X, labeled if labeled is not None else X[:0], budget, seed)
    top2 = np.sort(proba, axis=1)[:, -2:] if proba.shape[1] > 1 else np.hstack([np.zeros((n, 1)), proba])
    margin = top2[:, 1] - top2[:, 0]
    if strategy == "random":
        return np.random.default_rng(seed).choice(n, size=budget, replace=False)
    if strategy == "margin" or budget == n:
        return np.argsort(margin, kind="stable")[:budget]
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    clusters = KMeans(n_clusters=budget, n_init=3, random_state=seed).fit_predict(normalize(X))
    picks = [min(np.flatnonzero(clusters == c), key=lambda i: margin[i]) for c in np.unique(clusters)]
    return np.asarray(sorted(picks, key=lambda i: margin[i]))


def typical(X: np.ndarray, labeled: np.ndarray, budget: int, seed: int = 0, neighbours: int = 20) -> np.ndarray:
    """TypiClust (Hacohen et al., ICML 2022), for budgets of a few labels per class: k-means on the labeled
    and pool images together into ``len(labeled) + budget`` clusters; cluster by cluster, those holding the
    fewest labeled (and already picked) images first, the largest first among them, the pool image of highest
    typicality (inverse mean distance to its ``neighbours`` nearest in the cluster)."""
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import normalize

    Z = normalize(np.vstack([labeled, X]))
    k = min(len(Z), len(labeled) + budget)
    clusters = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(Z)
    covered = np.bincount(clusters[:len(labeled)], minlength=k)
    pool_clusters, Zp = clusters[len(labeled):], Z[len(labeled):]
    members = [np.flatnonzero(pool_clusters == c) for c in range(k)]
    sizes = np.array([len(m) for m in members])
    free_left = sizes.copy()
    rng = np.random.default_rng(seed)
    picks: list[int] = []
    taken = np.zeros(len(X), dtype=bool)
    while len(picks) < budget:
        order = np.lexsort((-sizes, covered))  # fewest labeled, then largest
        c = int(next(c for c in order if free_left[c]))
        idx = members[c]
        free = idx[~taken[idx]]
        # typicality on at most MAX_REFERENCE images of the cluster (unit vectors: distance² = 2 − 2 cos)
        ref = idx if len(idx) <= MAX_REFERENCE else rng.choice(idx, MAX_REFERENCE, replace=False)
        cand = free if len(free) <= MAX_REFERENCE else rng.choice(free, MAX_REFERENCE, replace=False)
        D = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * Zp[ref] @ Zp[cand].T))
        D[ref[:, None] == cand[None, :]] = np.inf  # an image is not its own neighbour
        near = np.sort(D, axis=0)[:min(neighbours, max(1, len(ref) - 1))]
        score = np.where(np.isfinite(near), near, 0.0).mean(axis=0) if len(ref) > 1 else np.zeros(len(cand))
        best = int(cand[np.argmin(score)])
        picks.append(best)
        taken[best] = True
        free_left[c] -= 1
        covered[c] += 1
    return np.asarray(picks)


def suggest(data_dir: str | os.PathLike, models_dir: str | os.PathLike = "models", budget: int = 50,
            strategy: str = DEFAULT_STRATEGY, out: str | os.PathLike | None = None, store=None,
            seed: int = 0) -> dict[str, Any]:
    """Pick ``budget`` pool images and write ``suggestions.csv`` and ``suggestions.html`` into ``out``."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}", hint=f"choose from {', '.join(STRATEGIES)}")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ConfigError(f"--budget must be a positive integer, got {budget!r}")
    root, models = data_root(data_dir), Path(models_dir)
    st = Store.of(store)
    ds, X, proba, algo, XL = pool_probabilities(root, models, st)
    idx = select(X, proba, budget, strategy, seed, labeled=XL)
    rows = [{"path": ds.pool.paths[i].relative_to(root).as_posix(),
             "suggested_label": ds.classes[int(proba[i].argmax())], "confidence": round(float(proba[i].max()), 6)}
            for i in idx]
    out_dir = Path(out) if out else models / "labeling"
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = ["path", "suggested_label", "confidence"]  # formula-like cells escaped, read back as written
    write_text_atomic(out_dir / CSV_NAME, csv_text(columns, ([r[c] for c in columns] for r in rows)))
    intro = (f"{len(rows)} of {len(ds.pool)} unlabeled images ({strategy}), with {algo}'s guess. Copy {CSV_NAME}, "
             f"add a 'label' column with the true class, then: labeling.py apply --data-dir {root} --labels FILE")
    write_text_atomic(out_dir / HTML_NAME, contact_sheet("Images to label", intro, rows, root,
                                                    ["suggested_label", "confidence"]))
    return {"strategy": strategy, "algorithm": algo, "pool_size": len(ds.pool), "suggestions": rows,
            "csv": str(out_dir / CSV_NAME), "html": str(out_dir / HTML_NAME)}
