"""Pseudo-label fine-tuning: a second round that lets the unlabeled images shape the features.

The first fine-tune sees only the labeled images: at 3–6 labels per class the features never
see the other 95 %. This stage, run when there are unlabeled rows (hidden labels or the
``unlabeled/`` pool), uses them:

1. label spreading and self-training are fitted on the first round's features of every
   training and pool image, with the fine-tune's held-out labeled images hidden (they judge
   the result);
2. an unlabeled image gets a pseudo-label where both views agree (they make different
   mistakes); per class the ``pseudo_labels_per_class`` most confident ones (label spreading's
   confidence; :func:`select_pseudo_labels`) are kept, so a frequent class cannot swamp the rest;
3. the extractor is fine-tuned again *from the first round's weights* for
   ``pseudo_finetune_epochs`` epochs on the labeled fit images plus the pseudo-labeled images,
   at most ``pseudo_labels_per_epoch`` per epoch (all of them at the defaults up to 20 classes, a fresh seeded sample
   beyond: the cost stays bounded however large the pool is); the pseudo-labeled images are seen
   under strong augmentation (RandAugment-style operations and a cut-out, as in Noisy Student and
   FixMatch), the labeled ones under the light one;
4. the best epoch on the held-out labeled images (true labels) is kept, and the new extractor
   replaces the first round's only where the classifiers that use the features do better on the
   held-out images: label spreading and self-training are fitted on each extractor's features
   (held-out labels hidden) and :func:`keep_round` compares their held-out judgements (the stage
   is judged on validation, never on ``test/``).

The labeled-only baseline keeps the first round's features: it is the pipeline that never
sees an unlabeled image. Results are cached in the store like the first round (key: the first
round's key, the chosen pseudo-labels and this stage's settings). Measured: MLOPS.md,
"Few labels".
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from src.core.store import Store
from src.data.dataset import ImageDataset
from src.features.finetune import (
    ExtractorCache,
    FineTuneResult,
    FineTuneSpec,
    PseudoLabeled,
    fine_tune,
    finetune_key,
    weights_digest,
)
from src.learning.semi_supervised import UNLABELED, fit_semi_supervised
from src.learning.validation import image_losses

log = logging.getLogger(__name__)

MIN_UNLABELED = 20  # fewer unlabeled rows than this: nothing to learn from, the stage is skipped
RECIPE = 2  # 2: pseudo-labeled images under strong augmentation (1: the light one)
JUDGES = ("label_spreading", "self_training")


@dataclass
class Refinement:
    """What the stage did: recorded in the results (``refine``) and logged as ``refine/*``."""

    ran: bool = False
    kept: bool = False
    reason: str = ""
    pseudo_labels: int = 0
    pseudo_label_accuracy: float | None = None   # where truth exists (labels hidden by labeled_ratio)
    # The judges: held-out labeled images, predicted by label spreading and self-training fitted on each
    # extractor's features with their labels hidden (mean of the two); the decision is made on these.
    heldout_accuracy_before: float | None = None
    heldout_accuracy_after: float | None = None
    heldout_log_loss_before: float | None = None
    heldout_log_loss_after: float | None = None
    heldout_p_worse: float | None = None   # keep_round's p-value that the round is worse on the judges
    finetune_heldout_accuracy: float | None = None  # the round's own classification head, best epoch
    seconds: float = 0.0
    cached: bool = False
    image_size: int | None = None   # the pixels the round trained at (its held-out images: the extractor's)
    history: list[dict] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return asdict(self)


def fit_views(X: np.ndarray, y_partial: np.ndarray, n_neighbors: int, seed: int) -> tuple:
    """Label spreading and self-training fitted on ``X``: the two views that pick pseudo-labels and judge."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter; the fits themselves are checked by their use
        return tuple(fit_semi_supervised(name, X, y_partial, n_neighbors, seed) for name in JUDGES)


def select_pseudo_labels(views: tuple, X: np.ndarray, y_partial: np.ndarray, per_class: int
                         ) -> tuple[np.ndarray, np.ndarray]:
    """(rows, labels): the pseudo-labels the round trains on. Unlabeled rows (``-1`` in ``y_partial``) where
    the two :func:`fit_views` (label spreading, self-training) agree; per class the ``per_class`` most
    confident by label spreading's confidence; in row order."""
    ls, st = views
    graph = ls[-1]
    trans, conf = graph.transduction_, graph.label_confidence_
    agree = (y_partial == UNLABELED) & (trans == st.predict(X))
    rows: list[int] = []
    for c in np.unique(y_partial[y_partial != UNLABELED]):
        idx = np.flatnonzero(agree & (trans == c))
        rows += idx[np.argsort(-conf[idx], kind="stable")][:per_class].tolist()
    rows_arr = np.asarray(sorted(rows), dtype=np.int64)
    return rows_arr, trans[rows_arr].astype(np.int64)


def heldout_scores(views: tuple, X: np.ndarray, rows: np.ndarray, truth: np.ndarray
                   ) -> tuple[float, float, np.ndarray]:
    """(accuracy, log-loss, right) on ``X[rows]``: accuracy and log-loss are each the mean over
    ``views`` (:func:`~src.learning.validation.image_losses`); ``right`` is one row per view, True where it was
    right."""
    right, losses = [], []
    for model in views:
        proba = model.predict_proba(X[rows])
        col = {c: i for i, c in enumerate(model.classes_)}
        p_true = np.array([proba[i, col[t]] if t in col else 0.0 for i, t in enumerate(truth)])
        right.append(model.classes_[proba.argmax(1)] == truth)
        losses.append(float(image_losses(p_true).mean()))
    right_arr = np.asarray(right, dtype=bool)
    return float(right_arr.mean()), float(np.mean(losses)), right_arr


def keep_round(before: np.ndarray, after: np.ndarray, loss_before: float | None = None,
               loss_after: float | None = None) -> tuple[bool, float]:
    """(keep, p): the round is kept only where the judges show it better.

    ``before``/``after`` say, per view and held-out image, whether it was right. Only the judgements
    that changed count: the round must win more of them than it loses, or as many with a lower
    log-loss (``loss_before``/``loss_after``). On real photos the earlier rule — keep unless worse
    beyond chance — kept the round in 21 runs of 21 although the held-out score fell in 10, and the
    pool's pseudo-labels then pulled the model below the labeled-only one. ``p`` is the one-sided
    sign-test probability of losing at least that many by chance, recorded for the reader.
    """
    from scipy.stats import binomtest

    lost, won = int((before & ~after).sum()), int((~before & after).sum())
    p = float(binomtest(lost, lost + won, 0.5, alternative="greater").pvalue) if lost > won else 1.0
    lower_loss = loss_before is not None and loss_after is not None and loss_after < loss_before
    return won > lost or (won == lost and lower_loss), p


def refine_key(first_key: str, digests: list[str], labels: list[int], spec: FineTuneSpec, per_class: int,
               per_epoch: int) -> str:
    """The first round's key, the pseudo-labeled images with their labels (the first round's
    :func:`finetune_key`, over this round's spec) and this stage's own settings."""
    pseudo = finetune_key(digests, labels, spec)
    own = json.dumps({"per_class": per_class, "per_epoch": per_epoch, "recipe": RECIPE})
    return hashlib.sha256(f"{first_key}\n{pseudo}\n{own}".encode()).hexdigest()


def refine_extractor(ds: ImageDataset, mask: np.ndarray, X: np.ndarray, path: Path, first_key: str,
                     first: FineTuneResult, spec: FineTuneSpec, epochs: int, n_neighbors: int,
                     holdout: tuple[np.ndarray, np.ndarray], store: Store, featurize: Callable[[Path], np.ndarray],
                     per_class: int, per_epoch: int, progress: bool = True) -> Refinement:
    """Run the stage on the first round's extractor saved at ``path``, which the refined one
    replaces when it is kept (``Refinement.kept``).

    ``X`` holds the first round's features of the training rows then the pool's; ``mask`` marks
    the training labels in use; ``first_key``/``first`` are the first round's cache key and result;
    ``holdout`` its (fit, held-out) positions among the labeled images;
    ``featurize(path)`` returns the same rows' features under the extractor saved at ``path``.
    """
    r = Refinement()
    n_train = len(ds.train)
    lab_idx = np.flatnonzero(mask)
    y_partial = np.full(len(X), UNLABELED, dtype=np.int64)
    y_partial[lab_idx] = ds.train.labels[lab_idx]
    fit_pos, val_pos = holdout  # the first round's split
    if epochs <= 0:
        r.reason = "pseudo_finetune_epochs is 0"
        return r
    if int((y_partial == UNLABELED).sum()) < MIN_UNLABELED:
        r.reason = f"fewer than {MIN_UNLABELED} unlabeled images"
        return r
    if not len(val_pos) or first.best_val_accuracy is None:
        r.reason = "no held-out labeled images to judge a second round"
        return r
    y_sel = y_partial.copy()
    y_sel[lab_idx[val_pos]] = UNLABELED  # the judges stay unseen
    t0 = time.perf_counter()
    judges, truth = lab_idx[val_pos], ds.train.labels[lab_idx[val_pos]]
    views = fit_views(X, y_sel, n_neighbors, spec.seed)
    rows, labels = select_pseudo_labels(views, X, y_sel, per_class)
    keep = ~np.isin(rows, lab_idx[val_pos])  # never train on a judge, even under its pseudo-label
    rows, labels = rows[keep], labels[keep]
    r.ran, r.pseudo_labels, r.image_size = True, int(len(rows)), spec.train_pre().image_size
    truth_rows = rows[rows < n_train]
    if len(truth_rows):
        r.pseudo_label_accuracy = float((labels[rows < n_train] == ds.train.labels[truth_rows]).mean())
    r.heldout_accuracy_before, r.heldout_log_loss_before, right_before = heldout_scores(views, X, judges, truth)
    all_paths = list(ds.train.paths) + (list(ds.pool.paths) if ds.has_pool else [])
    all_digests = list(ds.train.digests) + (list(ds.pool.digests) if ds.has_pool else [])
    round_spec = replace(spec, epochs=epochs)
    key = refine_key(first_key, [all_digests[i] for i in rows], labels.tolist(), round_spec, per_class, per_epoch)
    cache = ExtractorCache(store)
    hit = cache.get(key)
    second = path.with_name(f".refined-{path.name}")
    if hit:
        shutil.copyfile(hit[0], second)
        result = hit[2]
        r.cached = True
    else:
        from src.features.backbone import save_extractor

        paths = [ds.train.paths[i] for i in lab_idx]
        extra = PseudoLabeled([all_paths[i] for i in rows], labels, per_epoch, strong=True)
        model, result = fine_tune(paths, ds.train.labels[lab_idx], fit_pos, val_pos, len(ds.classes), round_spec,
                                  progress=progress, start=path, extra=extra)
        meta = {"pseudo_finetune_epochs": epochs, "pseudo_labels": len(rows), "train_size": r.image_size}
        save_extractor(model, second, spec.pre, meta=meta)
        cache.put(key, second, weights_digest(model), result)
    r.history, r.finetune_heldout_accuracy = result.history, result.best_val_accuracy
    X2 = featurize(second)
    r.heldout_accuracy_after, r.heldout_log_loss_after, right_after = heldout_scores(
        fit_views(X2, y_sel, n_neighbors, spec.seed), X2, judges, truth)
    r.seconds = time.perf_counter() - t0
    r.kept, r.heldout_p_worse = keep_round(right_before, right_after, r.heldout_log_loss_before,
                                           r.heldout_log_loss_after)
    if r.kept:
        r.reason = (f"better on the held-out images (accuracy {r.heldout_accuracy_before:.3f} → "
                    f"{r.heldout_accuracy_after:.3f}, log-loss {r.heldout_log_loss_before:.3f} → "
                    f"{r.heldout_log_loss_after:.3f})")
        second.replace(path)
    else:
        r.reason = (f"not better on the held-out images (accuracy {r.heldout_accuracy_before:.3f} → "
                    f"{r.heldout_accuracy_after:.3f}, log-loss {r.heldout_log_loss_before:.3f} → "
                    f"{r.heldout_log_loss_after:.3f}): the first extractor is used")
        second.unlink(missing_ok=True)
    log.info("pseudo-label fine-tuning: %d pseudo-labels, held-out %.3f → %.3f (log-loss %.3f → %.3f), %s",
             len(rows), r.heldout_accuracy_before, r.heldout_accuracy_after, r.heldout_log_loss_before,
             r.heldout_log_loss_after, "kept" if r.kept else "dropped")
    return r
