"""What the training stages hand each other: one typed record instead of a loose dict."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from src.data.dataset import ImageDataset
from src.features.backbone import Preprocessing
from src.tracking import Tracker
from src.training.config import TrainConfig
from src.training.shift import ShiftSet


@dataclass
class TrainState:
    """The dataset, its features and labels, and where outputs and metrics go."""

    cfg: TrainConfig
    ds: ImageDataset
    X: np.ndarray              # train features, then the pool's (rows len(ds.train):)
    Xt: np.ndarray             # test features
    mask: np.ndarray           # True where a training label is used (False for every pool row)
    ext_digest: str            # sha256 of feature_extractor.pth
    version: str | None        # dataset version (name:vN) for lineage
    tracker: Tracker
    models_dir: Path           # where outputs are written (staging; published to cfg.models_dir)
    pre: Preprocessing
    precision: str             # extractor precision (float32 / int8)
    int8_guard: dict[str, Any] | None = None        # the precision guard's figures (training/precision.py)
    int8_calibration: dict[str, Any] | None = None  # int8 calibration record when precision is int8
    # The labeled-only baseline's features when a pseudo-label round replaced the extractor: the baseline
    # is the pipeline that never sees an unlabeled image (train+pool rows, test rows, --shift-dir rows).
    baseline_features: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None  # (+ the shift set's)
    pool_predictions: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # algo → (labels, conf)
    shift: ShiftSet | None = None  # --shift-dir images and features: shift_accuracy, report only
    code_version: str | None = None  # the source commit, read once per run (bundles and results agree)
    # Which labeled rows validation scores (fold >= 0; learning/validation.py) and what it measured per algorithm.
    val_folds: np.ndarray | None = None
    calibration_folds: np.ndarray | None = None  # what the pool's pseudo-labels are calibrated on (every labeled photo)
    validations: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train(self) -> int:
        return len(self.ds.train)

    @property
    def truth(self) -> np.ndarray:
        """A label per row of ``X``: the train labels, ``-1`` for the pool (no truth there)."""
        from src.learning.semi_supervised import UNLABELED

        return np.concatenate([self.ds.train.labels, np.full(len(self.X) - self.n_train, UNLABELED)])

    @property
    def hidden(self) -> np.ndarray:
        """Rows whose label exists but is hidden by ``labeled_ratio``: where unlabeled accuracy can be measured."""
        return ~self.mask & (np.arange(len(self.X)) < self.n_train)

    @property
    def y_partial(self) -> np.ndarray:
        """Training labels with ``-1`` where the label is hidden or absent (the pool)."""
        from src.learning.semi_supervised import UNLABELED

        return np.where(self.mask, self.truth, UNLABELED)

    def dataset_record(self) -> dict[str, Any]:
        return {"digest": self.ds.digest, "version": self.version, "root": str(self.ds.root)}
