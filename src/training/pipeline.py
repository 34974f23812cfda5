"""The training pipeline behind ``train_with_wandb``: one function per stage."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from src.features.backbone import Preprocessing, save_extractor
from src.data.dataset import ImageDataset, dataset_digest, holdout_split, labeled_split, scan_dataset, validate_labeled_ratio
from src.core.errors import ConfigError
from src.learning.evaluation import evaluate, save_confusion_png
from src.features.extraction import FeatureCache, TorchExtractor, cached_features, digest_files
from src.features.finetune import ExtractorCache, FineTuneResult, fine_tune, finetune_key, weights_digest
from src.learning.bundles import save_model_bundle
from src.learning.semi_supervised import (UNLABELED, fit_baseline, fit_semi_supervised, transduced_labels,
                                 validate_algorithms, validate_n_neighbors)
from src.core.store import PROJECT_ROOT, Store, sha256_file
from src.wandb_config import Tracker

log = logging.getLogger(__name__)
SWEEP_KEYS = ("labeled_ratio", "algorithm", "algorithms", "n_neighbors", "fine_tune_epochs", "fine_tune_lr", "seed")
REFERENCE_SAMPLE = 1000


@dataclass(frozen=True)
class TrainConfig:
    labeled_ratio: float = 0.1
    algorithms: tuple[str, ...] = ("label_propagation", "label_spreading", "self_training")
    fine_tune_epochs: int = 5
    fine_tune_lr: float = 1e-4
    n_neighbors: int = 10
    run_name: str | None = None
    data_dir: str = "DS2GROCERIES"
    models_dir: str = "models"
    seed: int = 42
    wandb_mode: str | None = None
    store: str | None = None
    group: str | None = None
    tags: tuple[str, ...] = ()
    batch_size: int = 32
    image_size: int = 224
    progress: bool = True
    val_fraction: float = 0.2
    dataset_name: str = "grocery-dataset"
    runtime: str = "auto"  # feature extraction: auto (ONNX Runtime, torch fallback), onnx, onnx-int8, torch

    def validated(self) -> "TrainConfig":
        import numbers

        ints: dict[str, int] = {}
        for key in ("fine_tune_epochs", "n_neighbors", "batch_size", "image_size", "seed"):
            v = getattr(self, key)
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                if type(v) is not int:
                    ints[key] = int(v)
            elif isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer():
                ints[key] = int(v)  # a sweep's q_uniform or a YAML `5.0`: 5.0 → 5
            else:
                raise ConfigError(f"{key} must be an integer, got {v!r}")
        if ints:
            return replace(self, **ints).validated()
        validate_labeled_ratio(self.labeled_ratio)
        validate_algorithms(self.algorithms)
        if self.fine_tune_epochs < 0:
            raise ConfigError(f"fine_tune_epochs must be >= 0, got {self.fine_tune_epochs}")
        if self.fine_tune_lr < 0:
            raise ConfigError(f"fine_tune_lr must be >= 0, got {self.fine_tune_lr}")
        if self.batch_size < 1 or self.image_size < 32:
            raise ConfigError("batch_size must be >= 1 and image_size >= 32")
        from src.features.runtimes import RUNTIMES

        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        return self

    def tracked(self) -> dict[str, Any]:
        d = asdict(self)
        d["algorithms"] = list(self.algorithms)
        for k in ("progress", "store", "wandb_mode", "tags"):
            d.pop(k)
        return d


def apply_sweep_overrides(cfg: TrainConfig, run_config: dict[str, Any]) -> TrainConfig:
    """Under ``wandb agent`` the sweep's parameters live in ``wandb.config`` too."""
    upd = {k: run_config[k] for k in SWEEP_KEYS if k in run_config}
    if "algorithm" in upd:
        upd["algorithms"] = upd.pop("algorithm")
    if isinstance(upd.get("algorithms"), str):
        upd["algorithms"] = (upd["algorithms"],)
    if "algorithms" in upd:
        upd["algorithms"] = tuple(upd["algorithms"])
    return replace(cfg, **upd).validated() if upd else cfg


def ensure_dataset(cfg: TrainConfig) -> Path:
    """The default dataset is generated when missing; an explicit folder must exist."""
    root = Path(cfg.data_dir)
    if not root.exists() and cfg.data_dir == "DS2GROCERIES":
        from src.synth import generate_dataset

        log.info("%s not found: generating the synthetic grocery dataset", root)
        # Generate beside the target and rename into place, so a concurrent process (two sweep agents on a
        # fresh machine) never sees a half-written dataset: the folder appears complete or not at all.
        tmp = root.with_name(f".{root.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            generate_dataset(tmp, seed=0)
            try:
                os.rename(tmp, root)
            except OSError:
                if not root.is_dir():
                    raise
                log.info("%s was generated by another process meanwhile; using it", root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def code_version() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def dataset_version(cfg: TrainConfig, store: Store, tracker: Tracker) -> str | None:
    """The dataset version whose content matches (created if none), for lineage."""
    try:
        from src.data_versioning import find_or_create_version
    except ImportError:
        return None
    info = find_or_create_version(cfg.data_dir, artifact_name=cfg.dataset_name, store=store.root, tracker=tracker)
    ref = f"{info['name']}:{info['version']}"
    tracker.use_artifact(ref)
    return ref


def _report_epoch(tracker: Tracker, entry: dict, epoch_callback) -> None:
    """Log one fine-tuning epoch and pass its held-out accuracy to the caller (a sweep's pruner).

    Under ``wandb agent`` the held-out accuracy is also logged as ``test_accuracy``: W&B's
    online hyperband reads the history of the sweep metric, and the true test accuracy
    only exists at the end (it is logged last, and it is the run summary's value).
    """
    metrics = {f"finetune/{k}": v for k, v in entry.items()}
    if "val_accuracy" in entry and os.environ.get("WANDB_SWEEP_ID"):
        metrics["test_accuracy"] = entry["val_accuracy"]
    tracker.log(metrics)
    if epoch_callback and "val_accuracy" in entry:
        epoch_callback(entry["epoch"], entry["val_accuracy"])


def build_extractor(cfg, ds: ImageDataset, digests, mask, store: Store, tracker: Tracker, epoch_callback,
                    models_dir: Path) -> tuple[TorchExtractor, FineTuneResult, str]:
    """Fine-tune (or fetch from cache), save ``feature_extractor.pth``; returns (extractor, result, digest)."""
    pre = Preprocessing.for_size(cfg.image_size)
    lab_idx = np.flatnonzero(mask)
    paths = [ds.train.paths[i] for i in lab_idx]
    labels = ds.train.labels[lab_idx]
    key = finetune_key([digests[p] for p in paths], labels.tolist(), cfg.fine_tune_epochs, cfg.fine_tune_lr,
                       cfg.seed, pre, 16)
    cache = ExtractorCache(store)
    out = models_dir / "feature_extractor.pth"
    hit = cache.get(key)
    if hit:
        blob, _, result = hit
        shutil.copyfile(blob, out)
        for entry in result.history:  # replay, so a sweep's pruner sees the same curve
            _report_epoch(tracker, entry, epoch_callback)
        log.info("fine-tuned extractor taken from the cache (%s)", key[:12])
    else:
        fit_idx, val_idx = holdout_split(labels, cfg.val_fraction, cfg.seed)
        model, result = fine_tune(paths, labels, fit_idx, val_idx, len(ds.classes), cfg.fine_tune_epochs,
                                  cfg.fine_tune_lr, cfg.seed, pre, progress=cfg.progress,
                                  epoch_callback=lambda entry: _report_epoch(tracker, entry, epoch_callback))
        save_extractor(model, out, pre, meta={"fine_tune_epochs": cfg.fine_tune_epochs,
                                              "fine_tune_lr": cfg.fine_tune_lr, "seed": cfg.seed})
        cache.put(key, out, weights_digest(model), result)
    digest = sha256_file(out)
    from src.features.runtimes import load_runtime

    return load_runtime(out, digest, runtime=cfg.runtime, store=store), result, digest


def _reference(feats: np.ndarray, labels: np.ndarray, confidences: np.ndarray, n_classes: int, seed: int) -> dict:
    """Reference statistics for drift detection, stored in each model bundle."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(feats), size=min(REFERENCE_SAMPLE, len(feats)), replace=False)
    return {"features": feats[idx].astype(np.float32),
            "class_distribution": (np.bincount(labels, minlength=n_classes) / max(1, len(labels))).tolist(),
            "confidences": confidences.astype(np.float32)}


def run_training(cfg: TrainConfig, epoch_callback=None) -> dict[str, Any]:
    cfg = cfg.validated()
    ensure_dataset(cfg)
    ds = scan_dataset(cfg.data_dir)
    store = Store(cfg.store)
    models_dir = Path(cfg.models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    tracker = Tracker("train", cfg.tracked(), mode=cfg.wandb_mode, name=cfg.run_name, group=cfg.group,
                      tags=cfg.tags)
    try:
        results = _train(cfg, ds, store, models_dir, tracker, epoch_callback)
    except BaseException:
        tracker.finish(exit_code=1)
        raise
    results["run"]["dir"] = tracker.run_dir
    tracker.finish()
    from src.training.runs import record_run

    results["run"]["local_id"] = record_run(store, results, name=cfg.run_name or cfg.group)
    (models_dir / "training_results.json").write_text(json.dumps(results, indent=2, default=float))
    return results


def _train(cfg, ds, store, models_dir, tracker, epoch_callback) -> dict[str, Any]:
    if os.environ.get("WANDB_SWEEP_ID"):
        cfg = apply_sweep_overrides(cfg, tracker.config)
    n_classes = len(ds.classes)
    validate_n_neighbors(cfg.n_neighbors, len(ds.train))
    all_paths = [p for s in ds.splits.values() for p in s.paths]
    digests = dict(zip(all_paths, digest_files(all_paths)))
    mask = labeled_split(ds.train.labels, cfg.labeled_ratio, n_classes, cfg.seed)
    ds_digest = dataset_digest(ds, digests)
    version = dataset_version(cfg, store, tracker)
    tracker.update_config({"dataset_digest": ds_digest, "dataset_version": version, "classes": ds.classes})
    tracker.log({"dataset/train_samples": len(ds.train), "dataset/test_samples": len(ds.test),
                 "dataset/num_classes": n_classes, "data/labeled_samples": int(mask.sum()),
                 "data/unlabeled_samples": int((~mask).sum())})

    extractor, ft, ext_digest = build_extractor(cfg, ds, digests, mask, store, tracker, epoch_callback, models_dir)
    precision = getattr(extractor, "precision", "float32")
    tracker.update_config({"extractor_precision": precision})
    tracker.log({"timing/fine_tune_seconds": ft.seconds, "training/fine_tune_epochs": cfg.fine_tune_epochs,
                 "training/fine_tune_cached": int(ft.cached)})
    cache = FeatureCache(store)
    t0 = time.perf_counter()
    X, n_new_tr = cached_features(extractor, ds.train.paths, [digests[p] for p in ds.train.paths], cache,
                                  cfg.batch_size, cfg.progress, "train features")
    Xt, n_new_te = cached_features(extractor, ds.test.paths, [digests[p] for p in ds.test.paths], cache,
                                   cfg.batch_size, cfg.progress, "test features")
    tracker.log({"timing/extract_seconds": time.perf_counter() - t0, "timing/images_extracted": n_new_tr + n_new_te})

    y_partial = np.where(mask, ds.train.labels, UNLABELED)
    context = {"cfg": cfg, "ds": ds, "X": X, "Xt": Xt, "y_partial": y_partial, "mask": mask,
               "ext_digest": ext_digest, "ds_digest": ds_digest, "version": version, "tracker": tracker,
               "models_dir": models_dir, "pre": extractor.preprocessing, "precision": precision}
    per_algo = {name: _fit_one(name, context) for name in cfg.algorithms}
    baseline = _fit_one("baseline", context)
    return _finalize(cfg, ds, per_algo, baseline, ft, ext_digest, ds_digest, version, mask, tracker, models_dir,
                     precision)


def _fit_one(name: str, c: dict) -> dict[str, Any]:
    cfg, ds, tracker = c["cfg"], c["ds"], c["tracker"]
    t0 = time.perf_counter()
    if name == "baseline":
        model = fit_baseline(c["X"], c["y_partial"], cfg.seed)
    else:
        model = fit_semi_supervised(name, c["X"], c["y_partial"], cfg.n_neighbors, cfg.seed)
    fit_s = time.perf_counter() - t0
    m = evaluate(model, c["Xt"], ds.test.labels, ds.classes)
    trans = transduced_labels(model)
    unl = ~c["mask"]
    if unl.any():  # labels given to the unlabeled images: transduced where assigned, else predicted
        assigned = model.predict(c["X"][unl])
        if trans is not None:
            assigned = np.where(trans[unl] != UNLABELED, trans[unl], assigned)
        m["unlabeled_accuracy"] = float((assigned == ds.train.labels[unl]).mean())
    else:
        m["unlabeled_accuracy"] = None
    m["fit_seconds"] = fit_s
    prefix = name
    tracker.log({f"{prefix}/test_accuracy": m["test_accuracy"], f"{prefix}/f1_score": m["f1_score"],
                 f"{prefix}/precision": m["precision"], f"{prefix}/recall": m["recall"],
                 f"{prefix}/fit_seconds": fit_s, f"{prefix}/unlabeled_accuracy": m["unlabeled_accuracy"]})
    if name == "baseline":
        m.pop("y_pred"), m.pop("confidences"), m.pop("per_class")
        return m
    tracker.confusion_matrix(f"{name}_confusion_matrix", ds.test.labels, m["y_pred"], ds.classes)
    png = c["models_dir"] / f"{name}_confusion_matrix.png"
    save_confusion_png(ds.test.labels, m["y_pred"], ds.classes, png, title=f"{name} (test accuracy {m['test_accuracy']:.3f})")
    tracker.image(f"{name}_confusion_matrix_png", png)
    tracker.table(f"{name}_per_class_report", ["class", "precision", "recall", "f1", "support"],
                  [[k, v["precision"], v["recall"], v["f1-score"], v["support"]] for k, v in m["per_class"].items()])
    metrics = {k: m[k] for k in ("test_accuracy", "f1_score", "precision", "recall", "unlabeled_accuracy", "fit_seconds")}
    bundle = {
        "algorithm": name, "classifier": model, "class_names": ds.classes, "extractor_digest": c["ext_digest"],
        "preprocessing": c["pre"].to_dict(), "extractor_precision": c["precision"], "metrics": dict(metrics),
        "config": cfg.tracked(), "seed": cfg.seed,
        "dataset": {"digest": c["ds_digest"], "version": c["version"], "root": str(ds.root)},
        "run_id": tracker.run_id, "code_version": code_version(), "created_at": time.time(),
        "reference": _reference(c["X"], model.predict(c["X"]), m["confidences"],
                                len(ds.classes), cfg.seed),
    }
    path = c["models_dir"] / f"{name}_model.pkl"
    metrics["model_path"] = path.name
    metrics["model_digest"] = save_model_bundle(path, bundle)
    metrics["confusion_matrix_png"] = png.name
    return metrics


def _finalize(cfg, ds, per_algo, baseline, ft, ext_digest, ds_digest, version, mask, tracker, models_dir,
              precision):
    best = max(per_algo, key=lambda a: per_algo[a]["test_accuracy"])
    best_acc = per_algo[best]["test_accuracy"]
    summary = {"best_algorithm": best, "best_test_accuracy": best_acc,
               "baseline_test_accuracy": baseline["test_accuracy"],
               "gain_over_baseline": best_acc - baseline["test_accuracy"]}
    tracker.log({"test_accuracy": best_acc, "summary/best_algorithm": best, "summary/best_test_accuracy": best_acc,
                 "summary/baseline_test_accuracy": baseline["test_accuracy"]})
    tracker.summary({"test_accuracy": best_acc, "best_algorithm": best, **{f"summary/{k}": v for k, v in summary.items()}})
    tracker.table("algorithm_comparison", ["algorithm", "test_accuracy", "f1_score", "precision", "recall",
                                           "unlabeled_accuracy", "fit_seconds"],
                  [[a, m["test_accuracy"], m["f1_score"], m["precision"], m["recall"], m["unlabeled_accuracy"],
                    m["fit_seconds"]] for a, m in {**per_algo, "baseline (labeled only)": baseline}.items()])
    results = {
        "config": cfg.tracked(), "seed": cfg.seed,
        "dataset": {"root": str(ds.root), "digest": ds_digest, "version": version, "classes": ds.classes,
                    "train_samples": len(ds.train), "test_samples": len(ds.test),
                    "labeled_samples": int(mask.sum()), "unlabeled_samples": int((~mask).sum())},
        "extractor": {"path": "feature_extractor.pth", "digest": ext_digest, "precision": precision, "fine_tune": {
            "epochs": cfg.fine_tune_epochs, "lr": cfg.fine_tune_lr, "seconds": ft.seconds, "cached": ft.cached,
            "history": ft.history, "best_val_accuracy": ft.best_val_accuracy}},
        "run": {"id": tracker.run_id, "mode": tracker.mode, "dir": None},
        "code_version": code_version(),
        "algorithms": per_algo, "baseline": baseline, "summary": summary,
        "models_dir": str(models_dir.resolve()),
    }
    return results
