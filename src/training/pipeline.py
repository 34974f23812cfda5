"""The training pipeline behind ``train_with_wandb``: one function per stage.

scan (or generate) the dataset → pin its version → seeded labeled/unlabeled split (the
``unlabeled/`` pool joins as unlabeled rows; ``labeled_ratio`` is resolved from the data) →
fine-tune the backbone on the labeled images (cached) → extract features (cached) → fit,
evaluate, log and save each algorithm and the labeled-only baseline → pseudo-labels for
the pool from the best algorithm → results, and each model as a W&B ``model`` artifact (lineage:
``training/lineage.py``). Outputs are written to a staging folder and published to
``--models-dir`` only when every stage succeeded (``training/outputs.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from src.core import leases
from src.core.ownership import HELD_EXTRACTOR
from src.core.paths import EXTRACTOR_FILE, clean_pid_siblings, tree_bytes
from src.core.store import Store
from src.data.dataset import ImageDataset, image_dataset
from src.data.splits import holdout_split, labeled_split
from src.features.backbone import Preprocessing, save_extractor
from src.features.extraction import FeatureCache, cached_features
from src.features.pixel_cache import pixel_cache
from src.features.finetune import (
    ExtractorCache,
    FineTuneSpec,
    fine_tune,
    finetune_key,
    weights_digest,
)
from src.features.runtimes import load_runtime
from src.learning.groups import labeled_groups, near_duplicate_groups
from src.learning.semi_supervised import UNLABELED, validate_n_neighbors
from src.learning.validation import holdout_folds, labeled_folds
from src.tracking import Tracker, in_sweep
from src.training.config import DEFAULT_DATA_DIR, TrainConfig, apply_sweep_overrides
from src.training.fitting import BASELINE, code_version, run_algorithm, ship_baseline
from src.training.lineage import log_models, use_dataset
from src.training.outputs import RESULTS_FILE, copy_best_model, publish, staged_outputs
from src.training.precision import choose_precision, float32_runtime
from src.training.pseudo_labels import export_pseudo_labels
from src.training.refine import Refinement, refine_extractor
from src.training.results import build_results, log_summary, run_summary
from src.training.runs import record_run
from src.training.shift import ShiftSet, load_shift_set, shift_features
from src.training.state import TrainState

log = logging.getLogger(__name__)
EpochCallback = Callable[[int, float], None]


SAMPLE_DIR = Path(__file__).resolve().parents[1] / "data" / "grocery_sample"  # shipped real photos (MIT)


def ensure_dataset(cfg: TrainConfig) -> Path:
    """The default dataset is copied from the shipped real-photo sample when missing (``src/data/grocery_sample``:
    Grocery Store Dataset photos with an ``unlabeled/`` pool, MIT); an explicit folder must exist."""
    root = Path(cfg.data_dir)
    if cfg.data_dir == DEFAULT_DATA_DIR:
        clean_pid_siblings(root, ".tmp-")  # left by killed copies; a live one's stays
    if not root.exists() and cfg.data_dir == DEFAULT_DATA_DIR:
        log.info("%s not found: copying the shipped sample of real grocery photos (%s)", root, SAMPLE_DIR.name)
        # Copy beside the target and rename into place, so a concurrent process (two sweep agents on a
        # fresh machine) never sees a half-written dataset: the folder appears complete or not at all.
        tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            shutil.copytree(SAMPLE_DIR, tmp, symlinks=False)
            try:
                os.rename(tmp, root)
            except OSError:
                if not root.is_dir():
                    raise
                log.info("%s was created by another process meanwhile; using it", root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _report_epoch(tracker: Tracker, entry: dict, epoch_callback: EpochCallback | None) -> None:
    """Log one fine-tuning epoch and pass its held-out accuracy to the caller (a sweep's pruner).

    Under ``wandb agent`` the held-out accuracy is also logged as ``val_accuracy``: W&B's
    online hyperband reads the history of the sweep metric, and the final validation accuracy
    only exists at the end (it is logged last, and it is the run summary's value).
    """
    metrics = {f"finetune/{k}": v for k, v in entry.items()}
    if "val_accuracy" in entry and in_sweep():
        metrics["val_accuracy"] = entry["val_accuracy"]
    tracker.log(metrics)
    if epoch_callback and "val_accuracy" in entry:
        epoch_callback(entry["epoch"], entry["val_accuracy"])


def finetune_spec(cfg: TrainConfig) -> FineTuneSpec:
    return FineTuneSpec(cfg.fine_tune_epochs, cfg.fine_tune_lr, cfg.seed, Preprocessing.for_size(cfg.image_size),
                        cfg.finetune_batch_size, cfg.fine_tune_frozen_blocks)


def labeled_holdout(cfg: TrainConfig, ds: ImageDataset, mask: np.ndarray, store: Store, tracker: Tracker
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) positions among the labeled images: the fine-tune's split, which also judges the
    pseudo-label round and validates every algorithm. Near-identical labeled photos (learning/groups.py, on
    the pretrained backbone's features, cached) stay on one side of it."""
    lab_idx = np.flatnonzero(mask)
    photos = np.flatnonzero(~ds.catalogue[lab_idx])  # catalogue shots (iconic/) always train, never judge
    lab_photos = lab_idx[photos]
    labels = ds.train.labels[lab_photos]
    groups = None
    if cfg.fine_tune_epochs > 0 and (np.bincount(labels) >= 3).any():  # below 3 labels nothing is held out
        from src.features.runtimes import pretrained_extractor

        pretrained = pretrained_extractor(Preprocessing.for_size(cfg.image_size), store, len(lab_photos), cfg.runtime)
        X, _ = cached_features(pretrained, [ds.train.paths[i] for i in lab_photos],
                               [ds.train.digests[i] for i in lab_photos], FeatureCache(store), cfg.batch_size,
                               cfg.progress, "near-duplicate check")
        groups = near_duplicate_groups(X)
        _log_near_duplicates(groups, tracker)
    fit, val = holdout_split(labels, cfg.val_fraction, cfg.seed, groups)
    fit = np.union1d(photos[fit], np.flatnonzero(ds.catalogue[lab_idx]))
    return fit.astype(np.int64), photos[val]


def _log_near_duplicates(groups: np.ndarray, tracker: Tracker) -> None:
    sizes = np.bincount(groups)
    grouped = int(sizes[sizes > 1].sum())
    tracker.log({"data/labeled_near_duplicates": grouped})
    if grouped:
        log.info("%d labeled images are near-identical to another (%d groups): each group stays on one side "
                 "of the validation split", grouped, int((sizes > 1).sum()))


def build_extractor(cfg: TrainConfig, ds: ImageDataset, mask: np.ndarray, holdout: tuple[np.ndarray, np.ndarray],
                    store: Store, tracker: Tracker, epoch_callback: EpochCallback | None, models_dir: Path):
    """Fine-tune (or fetch from cache), save ``feature_extractor.pth``; returns (path, result, cache key)."""
    spec = finetune_spec(cfg)
    lab_idx = np.flatnonzero(mask)
    paths = [ds.train.paths[i] for i in lab_idx]
    labels = ds.train.labels[lab_idx]
    digests = [ds.train.digests[i] for i in lab_idx]
    fit_idx, val_idx = holdout
    key = finetune_key(digests, labels.tolist(), spec, held_out=[digests[i] for i in val_idx])
    cache = ExtractorCache(store)
    out = models_dir / EXTRACTOR_FILE
    tracker.define_metric("finetune/*", step_metric="finetune/epoch")  # epochs get their own x axis
    hit = cache.get(key)
    if hit:
        blob, _, result = hit
        shutil.copyfile(blob, out)
        for entry in result.history:  # replay, so a sweep's pruner sees the same curve
            _report_epoch(tracker, entry, epoch_callback)
        log.info("fine-tuned extractor taken from the cache (%s)", key[:12])
    else:
        model, result = fine_tune(paths, labels, fit_idx, val_idx, len(ds.classes), spec, progress=cfg.progress,
                                  epoch_callback=lambda entry: _report_epoch(tracker, entry, epoch_callback))
        save_extractor(model, out, spec.pre, meta={"fine_tune_epochs": cfg.fine_tune_epochs,
                                                   "fine_tune_lr": cfg.fine_tune_lr, "seed": cfg.seed})
        cache.put(key, out, weights_digest(model), result)
    return out, result, key


def float32_extractor(cfg: TrainConfig, path: Path, store: Store):
    """(extractor, digest) of the extractor saved at ``path``, in the runtime training extracts with first."""
    from src.core.store import sha256_file

    digest = sha256_file(path)
    return load_runtime(path, digest, runtime=float32_runtime(cfg.runtime), store=store), digest


def pseudo_label_round(cfg: TrainConfig, ds: ImageDataset, mask: np.ndarray, holdout: tuple[np.ndarray, np.ndarray],
                       path: Path, key: str, ft, store: Store, tracker: Tracker,
                       shift: ShiftSet | None) -> tuple[Refinement, tuple | None]:
    """The pseudo-label fine-tuning round (training/refine.py) where there are unlabeled rows; returns its
    record and, when it replaced the extractor at ``path``, the first round's features for the baseline."""
    n_unlabeled = int((~mask).sum()) + (len(ds.pool) if ds.has_pool else 0)
    if cfg.pseudo_finetune_epochs <= 0 or cfg.fine_tune_epochs <= 0 or n_unlabeled == 0:
        return Refinement(reason="off" if n_unlabeled else "no unlabeled images"), None
    extractor, _ = float32_extractor(cfg, path, store)
    X1, Xt1 = _features(cfg, ds, extractor, store, tracker)
    Xs1 = shift_features(cfg, shift, extractor, store, tracker).X if shift is not None else None

    def featurize(candidate: Path) -> np.ndarray:  # the candidate's training + pool features, judged by refine
        return _train_features(cfg, ds, float32_extractor(cfg, candidate, store)[0], FeatureCache(store))[0]

    spec = replace(finetune_spec(cfg), train_size=cfg.round_image_size())  # the round's batches at fewer pixels
    r = refine_extractor(ds, mask, X1, path, key, ft, spec, cfg.pseudo_finetune_epochs,
                         cfg.n_neighbors, holdout, store, featurize, cfg.pseudo_labels_per_class,
                         cfg.pseudo_labels_per_epoch, progress=cfg.progress)
    tracker.log({f"refine/{k}": (int(v) if isinstance(v, bool) else v) for k, v in r.record().items()
                 if k not in ("reason", "history")})
    return r, ((X1, Xt1, Xs1) if r.kept else None)


def run_training(cfg: TrainConfig, epoch_callback: EpochCallback | None = None) -> dict[str, Any]:
    """Train and evaluate every algorithm of ``cfg``, tracked as one W&B run; returns the results.

    Stages: the default ``DS2GROCERIES`` is generated if missing; the dataset is scanned and
    versioned in the local store; the extractor is fine-tuned (``cfg.fine_tune_epochs``) and
    features extracted (cached by image digest); each algorithm (and the labeled-only baseline)
    is fitted, cross-validated and tested. ``cfg`` is a :class:`~src.training.config.TrainConfig`
    (``TrainConfig.from_options(**kwargs)`` from keyword options); it is validated first.

    Writes into ``cfg.models_dir``: ``<algorithm>_model.skops`` per algorithm,
    ``best_model.skops``, ``feature_extractor.pth``, confusion matrices and
    ``training_results.json`` (the returned dict: ``config``, ``dataset``, ``run``, per-algorithm
    metrics and ``summary``). They replace the previous set only once every stage succeeded.
    ``epoch_callback(epoch, val_accuracy)`` is called after each fine-tuning epoch (a sweep's
    pruner may raise from it). Bad input raises :class:`~src.core.errors.GroceryError` subclasses
    before expensive work; ``cfg.progress=False`` draws no progress bars.
    """
    cfg = cfg.validated()
    ensure_dataset(cfg)
    store = Store(cfg.store)
    ds = image_dataset(cfg.data_dir, store=store, progress=cfg.progress)
    shift = load_shift_set(cfg, ds.classes, store)  # --shift-dir, validated before any expensive work
    # the previous set stays untouched until publish; gc keeps what this run uses until it is recorded
    with staged_outputs(cfg.models_dir) as out, leases.working(store) as work:
        tracker = Tracker("train", cfg.tracked(), mode=cfg.wandb_mode, name=cfg.run_name, group=cfg.group,
                          tags=cfg.tags)
        try:
            with pixel_cache() as pixels:  # each image decoded once per size, not once per stage
                results = _train(cfg, ds, store, out, tracker, epoch_callback, shift)
            log.debug("decoded pixels: %d reused, %d decoded, %.0f MB kept", pixels.hits, pixels.misses,
                      pixels.bytes / 2 ** 20)
        except BaseException:
            tracker.finish(exit_code=1)
            raise
        results["run"]["dir"] = tracker.run_dir
        results["extractor"]["used"] = sorted(work.held(HELD_EXTRACTOR))  # every round's: gc keeps the newest run's
        tracker.finish()
        results["run"]["local_id"] = record_run(store, results, name=cfg.run_name or cfg.group,
                                                group=cfg.group, tags=cfg.tags, files_dir=out)
        results["store"] = {"root": str(store.root), "bytes": tree_bytes(store.root)}  # it grows with every run
        (out / RESULTS_FILE).write_text(json.dumps(results, indent=2, default=float))
        publish(out, cfg.models_dir)
    return results


def _train(cfg: TrainConfig, ds: ImageDataset, store: Store, out_dir: Path, tracker: Tracker,
           epoch_callback: EpochCallback | None, shift: ShiftSet | None = None) -> dict[str, Any]:
    if in_sweep():
        cfg = apply_sweep_overrides(cfg, tracker.config)
    cfg = cfg.resolved(ds.has_pool)
    n_classes, n_pool = len(ds.classes), len(ds.pool) if ds.has_pool else 0
    validate_n_neighbors(cfg.n_neighbors, len(ds.train) + n_pool)
    mask = ds.catalogue.copy()  # catalogue shots (iconic/) are always labeled; the ratio draws among the photos
    mask[~ds.catalogue] = labeled_split(ds.train.labels[~ds.catalogue], cfg.labeled_ratio, n_classes, cfg.seed)
    version = use_dataset(cfg.data_dir, cfg.dataset_name, store, tracker, ds.scan)  # config offline, use online
    per_class = _labeled_per_class(ds, mask)
    leaked = leaked_test_images(ds)
    if mask.all() and not n_pool:
        log.info("every training image is labeled and there is no unlabeled/ pool: the three algorithms fit "
                 "as supervised classifiers (nothing to propagate to)")
    tracker.update_config({"dataset_digest": ds.digest, "dataset_version": version, "classes": ds.classes,
                           "labeled_ratio": cfg.labeled_ratio})
    tracker.log({"dataset/train_samples": len(ds.train), "dataset/test_samples": len(ds.test),
                 "dataset/num_classes": n_classes, "data/labeled_samples": int(mask.sum()),
                 "data/unlabeled_samples": int((~mask).sum()) + n_pool, "data/pool_samples": n_pool,
                 "data/leaked_test_images": len(leaked), "data/catalogue_samples": int(ds.catalogue.sum()),
                 **{f"data/labeled_per_class/{c}": n for c, n in per_class.items()}})

    holdout = labeled_holdout(cfg, ds, mask, store, tracker)
    ext_path, ft, ft_key = build_extractor(cfg, ds, mask, holdout, store, tracker, epoch_callback, out_dir)
    refinement, baseline_features = pseudo_label_round(cfg, ds, mask, holdout, ext_path, ft_key, ft, store, tracker,
                                                       shift)
    extractor, ext_digest = float32_extractor(cfg, ext_path, store)
    choice = choose_precision(cfg, ds, mask, extractor, out_dir / EXTRACTOR_FILE, ext_digest, store, tracker)
    extractor, precision = choice.extractor, choice.precision
    tracker.update_config({"extractor_precision": precision})
    tracker.log({"timing/fine_tune_seconds": ft.seconds, "training/fine_tune_epochs": cfg.fine_tune_epochs,
                 "training/fine_tune_cached": int(ft.cached)})
    X, Xt = _features(cfg, ds, extractor, store, tracker)
    every_labeled = every_labeled_folds(cfg, ds, mask, X)
    state = TrainState(cfg=cfg, ds=ds, X=X, Xt=Xt, mask=np.concatenate([mask, np.zeros(n_pool, dtype=bool)]),
                       ext_digest=ext_digest, version=version, tracker=tracker, models_dir=out_dir,
                       pre=extractor.preprocessing, precision=precision, int8_guard=choice.guard,
                       int8_calibration=choice.calibration, baseline_features=baseline_features,
                       shift=shift_features(cfg, shift, extractor, store, tracker), code_version=code_version(),
                       val_folds=validation_folds(cfg, ds, mask, X, holdout, every_labeled),
                       calibration_folds=every_labeled)
    per_algo = {name: run_algorithm(name, state) for name in cfg.algorithms}
    baseline = run_algorithm(BASELINE, state)
    summary = run_summary(state, per_algo, baseline)
    best = summary["best_algorithm"]
    shipped = ship_baseline(state) if best == BASELINE else per_algo[best]
    if best == BASELINE:
        log.info("validation could not show a model using the unlabeled images better than the labeled-only "
                 "baseline (%s right / %s wrong where they differ): the baseline ships",
                 summary.get("val_won_vs_baseline"), summary.get("val_lost_vs_baseline"))
    log_summary(state, summary, per_algo, baseline)
    results = build_results(state, per_algo, baseline, summary, ft)
    results["best_model"] = {"algorithm": best, "path": copy_best_model(out_dir, shipped["model_path"]),
                             "digest": shipped["model_digest"]}
    if best == BASELINE:
        results["shipped_baseline"] = shipped
    results["dataset"].update(pool_samples=n_pool, labeled_per_class=per_class, leaked_test_images=leaked,
                              catalogue_samples=int(ds.catalogue.sum()))
    results["extractor"]["pseudo_label_round"] = refinement.record()
    results["pseudo_labels"] = export_pseudo_labels(state, best)
    log_models(state, per_algo, best, store)  # one W&B `model` artifact per algorithm, last: the run succeeded
    return results


def validation_folds(cfg: TrainConfig, ds: ImageDataset, mask: np.ndarray, X: np.ndarray,
                     holdout: tuple[np.ndarray, np.ndarray], every: np.ndarray | None = None) -> np.ndarray:
    """The labeled rows validation scores (learning/validation.py): the fine-tune's held-out images
    (``holdout``, from :func:`labeled_holdout`; none with 1-2 labels per class) when the backbone trained on
    the labeled ones, else 3-fold cross-validation over every labeled image, near-identical photos (on the
    features ``X``) in one fold (``every``, :func:`every_labeled_folds`, where the caller has them)."""
    if cfg.fine_tune_epochs > 0:
        return holdout_folds(len(X), np.flatnonzero(mask)[holdout[1]])
    return every if every is not None else every_labeled_folds(cfg, ds, mask, X)


def every_labeled_folds(cfg: TrainConfig, ds: ImageDataset, mask: np.ndarray, X: np.ndarray) -> np.ndarray:
    """3 folds over every labeled photo, near-identical photos (on ``X``) in one fold: validation without
    fine-tuning, and the evidence the pool's pseudo-labels are calibrated on (P15: with the fine-tune's
    held-out photos alone it was too little to recommend at 10 labels per class)."""
    lab_idx = np.flatnonzero(mask)
    y = np.full(len(X), UNLABELED, dtype=np.int64)
    y[lab_idx] = ds.train.labels[lab_idx]
    folds = labeled_folds(y, seed=cfg.seed, groups=labeled_groups(X, lab_idx))
    folds[np.flatnonzero(ds.catalogue)] = -1  # catalogue shots (iconic/) train in every fold, never judge
    return folds


def leaked_test_images(ds: ImageDataset) -> list[str]:
    """Test images byte-identical to a training or pool image (same sha256), said once as a warning: the
    test accuracy counts them as if unseen, and photo folders often hold such copies."""
    seen = set(ds.train.digests) | (set(ds.pool.digests) if ds.has_pool else set())
    leaked = [str(Path(p).relative_to(ds.root)) for p, d in zip(ds.test.paths, ds.test.digests) if d in seen]
    if leaked:
        log.warning("%d test image(s) are byte-identical to training or pool images (e.g. %s): the test accuracy "
                    "is inflated by them; remove the copies (data_versioning.py --quality-check lists them)",
                    len(leaked), leaked[0])
    return leaked


def _labeled_per_class(ds: ImageDataset, mask: np.ndarray) -> dict[str, int]:
    counts = np.bincount(ds.train.labels[mask], minlength=len(ds.classes))
    return {c: int(n) for c, n in zip(ds.classes, counts)}


def _features(cfg: TrainConfig, ds: ImageDataset, extractor, store: Store, tracker: Tracker):
    """Train features with the pool's appended (same cache), and test features."""
    cache = FeatureCache(store)
    t0 = time.perf_counter()
    X, n_new = _train_features(cfg, ds, extractor, cache)
    Xt, n_new_te = cached_features(extractor, ds.test.paths, ds.test.digests, cache, cfg.batch_size,
                                   cfg.progress, "test features")
    tracker.log({"timing/extract_seconds": time.perf_counter() - t0, "timing/images_extracted": n_new + n_new_te})
    return X, Xt


def _train_features(cfg: TrainConfig, ds: ImageDataset, extractor, cache: FeatureCache) -> tuple[np.ndarray, int]:
    """(features of the training rows then the pool's, number extracted)."""
    X, n_new = cached_features(extractor, ds.train.paths, ds.train.digests, cache, cfg.batch_size, cfg.progress,
                               "train features")
    if ds.has_pool:
        Xp, n_pool = cached_features(extractor, ds.pool.paths, ds.pool.digests, cache, cfg.batch_size, cfg.progress,
                                     "pool features")
        X, n_new = np.concatenate([X, Xp]), n_new + n_pool
    return X, n_new
