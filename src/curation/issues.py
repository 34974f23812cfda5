"""Labeled images whose class folder is probably wrong, most suspicious first.

Features come from the pretrained ImageNet backbone, not from an extractor fine-tuned on
these labels: a network fine-tuned on a wrong folder learns the mistake and hides it.
(``--models-dir`` is used only when its extractor was not fine-tuned, i.e. it is the same
backbone, so its cached features serve.) Out-of-fold class probabilities from a
logistic regression (``cross_val_predict``: no image is scored by a model that saw its
label) go to cleanlab's ``find_label_issues`` (confident learning), ranked by
self-confidence: the lower the probability of the given label, the more suspicious.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from src.core.errors import DataError
from src.core.paths import EXTRACTOR_FILE
from src.core.store import Store, sha256_file
from src.curation.paths import data_root

log = logging.getLogger(__name__)
DEFAULT_IMAGE_SIZE = 224


def _unfinetuned_extractor(models_dir: Path, store: Store):
    """The models dir's extractor when it is the pretrained backbone (fine_tune_epochs 0), else None."""
    from src.features.runtimes import load_runtime

    results = models_dir / "training_results.json"
    try:
        fine = json.loads(results.read_text())["extractor"]["fine_tune"]["epochs"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    path = models_dir / EXTRACTOR_FILE
    if fine != 0 or not path.is_file():
        log.info("the extractor in %s was fine-tuned on the labels under test; using the pretrained backbone",
                 models_dir)
        return None
    return load_runtime(path, sha256_file(path), store=store)


def out_of_fold_probabilities(X: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0) -> np.ndarray:
    """Class probabilities for each row from a model fitted on the other folds."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    folds = int(min(5, np.bincount(y, minlength=n_classes).min()))
    n_comp = max(1, min(128, len(X) - len(X) // folds - 1, X.shape[1]))
    model = make_pipeline(Normalizer(), PCA(n_components=n_comp, random_state=seed), Normalizer(),
                          LogisticRegression(C=10.0, max_iter=3000, random_state=seed))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(model, X, y, cv=cv, method="predict_proba")


def find_issues(data_dir: str | os.PathLike, models_dir: str | os.PathLike | None = None, store=None,
                image_size: int = DEFAULT_IMAGE_SIZE, seed: int = 0) -> dict[str, Any]:
    """``{"issues": [{path, given_label, likely_label, score}...], ...}`` in rank order (score: the
    out-of-fold probability of the given label; low is suspicious)."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    from src.data.dataset import image_dataset
    from src.features.backbone import Preprocessing
    from src.features.extraction import FeatureCache, cached_features
    from src.features.runtimes import pretrained_extractor

    root = data_root(data_dir)
    st = Store.of(store)
    ds = image_dataset(root, store=st)
    y, n_classes = ds.train.labels, len(ds.classes)
    counts = np.bincount(y, minlength=n_classes)
    if n_classes < 2 or counts.min() < 2:
        small = ds.classes[int(counts.argmin())]
        raise DataError(f"class {small!r} has {counts.min()} labeled image(s); finding label issues needs at least "
                        "2 per class and 2 classes", hint="label more images of it first")
    extractor = (_unfinetuned_extractor(Path(models_dir), st) if models_dir else None) or \
        pretrained_extractor(Preprocessing.for_size(image_size), st, len(ds.train.paths))
    X, _ = cached_features(extractor, ds.train.paths, ds.train.digests, FeatureCache(st), 32, False,
                           "train features")
    proba = out_of_fold_probabilities(X, y, n_classes, seed)
    ranked = find_label_issues(labels=y, pred_probs=proba, return_indices_ranked_by="self_confidence", n_jobs=1)
    scores = get_label_quality_scores(y, proba, method="self_confidence")
    issues = [{"path": ds.train.paths[i].relative_to(root).as_posix(), "given_label": ds.classes[int(y[i])],
               "likely_label": ds.classes[int(proba[i].argmax())], "score": round(float(scores[i]), 6)}
              for i in ranked]
    return {"data_dir": str(root), "checked": len(y), "extractor": extractor.key, "issues": issues}
