"""Style-shift evaluation: ``--shift-dir``, an ImageFolder split in another style of the same classes.

Its images are scanned with the dataset scanner (:func:`src.data.dataset.image_split`: links
leaving the folder are never read, a class folder that is not a training class is an error),
their features come from the same extractor and feature cache as the test split, and every
algorithm and the labeled-only baseline report ``shift_accuracy`` on them next to
``test_accuracy``. They are never used for fitting, validation or selection: report only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.core.store import Store
from src.data.dataset import Split, image_split
from src.features.extraction import FeatureCache, cached_features
from src.tracking import Tracker
from src.training.config import SHIFT_DIR, TrainConfig


@dataclass
class ShiftSet:
    """The shifted-style images, their labels (training class indices) and, once extracted, features."""

    root: Path
    split: Split
    X: np.ndarray | None = None

    def accuracy(self, model, X: np.ndarray | None = None) -> float:
        """Accuracy of a fitted classifier on the shifted images' features ``X`` (default: ``self.X``, the
        run's extractor), with the same decision rule as ``evaluate``."""
        pred = model.classes_[model.predict_proba(self.X if X is None else X).argmax(1)]
        return float((pred == self.split.labels).mean())

    def record(self, classes: list[str]) -> dict:
        """What the results file says about the shift set."""
        present = sorted(set(self.split.labels.tolist()))
        return {"root": str(self.root), "samples": len(self.split), "classes": [classes[i] for i in present]}


def load_shift_set(cfg: TrainConfig, classes: list[str], store: Store | None) -> ShiftSet | None:
    """The validated ``cfg.shift_dir`` (``None`` without one); raises :class:`DataError` on bad input."""
    if cfg.shift_dir is None:
        return None
    split = image_split(cfg.shift_dir, classes, store=store, progress=cfg.progress, what=SHIFT_DIR)
    return ShiftSet(Path(cfg.shift_dir).expanduser(), split)


def shift_features(cfg: TrainConfig, shift: ShiftSet | None, extractor, store: Store,
                   tracker: Tracker) -> ShiftSet | None:
    """Extract (or take from the feature cache) the shifted images' features with the run's extractor."""
    if shift is None:
        return None
    t0 = time.perf_counter()
    shift.X, n_new = cached_features(extractor, shift.split.paths, shift.split.digests, FeatureCache(store),
                                     cfg.batch_size, cfg.progress, "shift features")
    tracker.log({"dataset/shift_samples": len(shift.split), "timing/shift_extract_seconds": time.perf_counter() - t0,
                 "timing/shift_images_extracted": n_new})
    return shift
