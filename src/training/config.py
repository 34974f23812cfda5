"""The training configuration: the one place where training defaults are written.

``train_with_wandb``'s keywords, its command-line flags (defaults and ``choices``), the sweep
overrides and ``wandb_config.DEFAULT_CONFIG`` are all derived from :class:`TrainConfig`.
"""

from __future__ import annotations

import numbers
import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

from src.core.errors import ConfigError, quote
from src.core.paths import DEFAULT_DATA_DIR
from src.core.store import validate_name
from src.data.scan import check_split_dir
from src.data.splits import validate_labeled_ratio
from src.data.version_store import default_dataset_name
from src.features.finetune import BLOCKS, FROZEN_BLOCKS
from src.features.runtimes import RUNTIMES
from src.learning.semi_supervised import ALGORITHMS, validate_algorithms

SHIFT_DIR = "shift dir"  # how errors name TrainConfig.shift_dir (--shift-dir)
DEFAULT_ALGORITHMS = ("label_propagation", "label_spreading", "self_training")
ALGORITHM_NAMES = tuple(sorted(ALGORITHMS))
# Parameters a W&B sweep may set through ``wandb.config`` (``algorithm`` is the sweep's singular spelling).
SWEEP_KEYS = ("labeled_ratio", "algorithm", "algorithms", "n_neighbors", "fine_tune_epochs", "fine_tune_lr", "seed",
              "pseudo_finetune_epochs", "pseudo_labels_per_class", "fine_tune_frozen_blocks")
INT_FIELDS = ("fine_tune_epochs", "n_neighbors", "batch_size", "image_size", "seed", "pseudo_finetune_epochs",
              "pseudo_labels_per_class", "pseudo_labels_per_epoch", "fine_tune_frozen_blocks",
              "pseudo_finetune_image_size")
MAX_IMAGE_SIZE = 1024
# Every label a user gives is used: hiding some (``labeled_ratio`` < 1) simulates scarce labels on a fully
# labeled folder, and only when asked for; the unlabeled/ pool is what makes training semi-supervised.
DEFAULT_LABELED_RATIO = 1.0


@dataclass(frozen=True)
class TrainConfig:
    labeled_ratio: float | None = None  # None: every label (DEFAULT_LABELED_RATIO); < 1 hides labels
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    fine_tune_epochs: int = 5
    fine_tune_lr: float = 1e-4
    fine_tune_frozen_blocks: int = FROZEN_BLOCKS  # the stem and this many first blocks are not fine-tuned
    n_neighbors: int = 10
    run_name: str | None = None
    data_dir: str = DEFAULT_DATA_DIR
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
    dataset_name: str | None = None  # versioned as: grocery-dataset for DS2GROCERIES, else the folder name
    runtime: str = "auto"  # feature extraction: auto (ONNX Runtime, torch fallback), onnx, onnx-int8, torch
    finetune_batch_size: int = 16
    shift_dir: str | None = None  # an ImageFolder split in another style, same classes: shift_accuracy, report only
    # A second fine-tuning round on labeled + confident pseudo-labeled images (training/refine.py); 0 = off.
    pseudo_finetune_epochs: int = 2
    # The round's pseudo-labels (training/refine.py select_pseudo_labels): the most confident agreeing ones per
    # class, and how many of them one epoch draws (all of them at these defaults up to 20 classes).
    pseudo_labels_per_class: int = 60
    pseudo_labels_per_epoch: int = 1200
    # The pixels the round trains at (its held-out images and the extractor stay at image_size); 0: 5/7 of
    # image_size, 160 at 224 — half the pixels, the same accuracy on real photos (benchmarks/README.md, P10).
    pseudo_finetune_image_size: int = 0

    @classmethod
    def from_options(cls, **options: Any) -> "TrainConfig":
        """A config from keyword options (``train_with_wandb``'s), normalising the loose Python spellings."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown training option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        algos = options.get("algorithms")
        if algos is None:
            options.pop("algorithms", None)
        else:
            options["algorithms"] = (algos,) if isinstance(algos, str) else tuple(algos)
        for key in ("data_dir", "models_dir", "store", "shift_dir"):
            if options.get(key) is not None:
                options[key] = os.fspath(options[key])
        options["tags"] = tuple(options.get("tags") or ())
        return cls(**options)

    def validated(self) -> "TrainConfig":
        ints: dict[str, int] = {}
        for key in INT_FIELDS:
            v = getattr(self, key)
            if isinstance(v, numbers.Integral) and not isinstance(v, bool):
                if type(v) is not int:
                    ints[key] = int(v)
            elif isinstance(v, numbers.Real) and not isinstance(v, bool) and float(v).is_integer():
                ints[key] = int(v)  # a sweep's q_uniform or a YAML `5.0`: 5.0 → 5
            else:
                raise ConfigError(f"{key} must be an integer, got {quote(v)}")
        if ints:
            return replace(self, **ints).validated()
        if self.dataset_name is None:
            return replace(self, dataset_name=default_dataset_name(self.data_dir)).validated()
        validate_name(self.dataset_name, "dataset name")
        if self.labeled_ratio is not None:
            validate_labeled_ratio(self.labeled_ratio)
        validate_algorithms(self.algorithms)
        if self.n_neighbors < 1:  # the one rule: --n-neighbors, train_with_wandb() and every sweep value
            raise ConfigError(f"n_neighbors must be a positive integer, got {self.n_neighbors}",
                              hint="for example --n-neighbors 10")
        if self.fine_tune_epochs < 0:
            raise ConfigError(f"fine_tune_epochs must be >= 0, got {self.fine_tune_epochs}")
        if not 0 <= self.fine_tune_frozen_blocks <= BLOCKS:
            raise ConfigError(f"fine_tune_frozen_blocks must be in [0, {BLOCKS}], got {self.fine_tune_frozen_blocks}",
                              hint=f"0 fine-tunes every layer; the default {FROZEN_BLOCKS} keeps the stem and "
                                   f"blocks 0-{FROZEN_BLOCKS - 1}")
        if self.pseudo_finetune_epochs < 0:
            raise ConfigError(f"pseudo_finetune_epochs must be >= 0, got {self.pseudo_finetune_epochs}",
                              hint="0 turns the pseudo-label fine-tuning round off")
        for key in ("pseudo_labels_per_class", "pseudo_labels_per_epoch"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be >= 1, got {getattr(self, key)}",
                                  hint="pseudo_finetune_epochs 0 turns the round off")
        if not isinstance(self.fine_tune_lr, numbers.Real) or not (0 <= float(self.fine_tune_lr) < float("inf")):
            raise ConfigError(f"fine_tune_lr must be a finite number >= 0, got {quote(self.fine_tune_lr)}",
                              hint="for example --fine-tune-lr 1e-4")
        if self.seed < 0 or self.seed >= 2**32:
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}", hint="for example --seed 42")
        if self.batch_size < 1 or self.finetune_batch_size < 1:
            raise ConfigError("batch_size must be >= 1")
        if not 32 <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be in [32, {MAX_IMAGE_SIZE}], got {self.image_size}",
                              hint="EfficientNet-Lite0 was trained at 224")
        if self.pseudo_finetune_image_size and not 32 <= self.pseudo_finetune_image_size <= self.image_size:
            raise ConfigError(f"pseudo_finetune_image_size must be 0 or in [32, image_size {self.image_size}], "
                              f"got {self.pseudo_finetune_image_size}", hint="0 trains the round at 5/7 of image_size")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {quote(self.runtime)}")
        if self.shift_dir is not None:
            check_split_dir(self.shift_dir, SHIFT_DIR)  # before the dataset is generated or scanned
        return self

    def round_image_size(self) -> int:
        """The pixels the pseudo-label round trains at: :attr:`pseudo_finetune_image_size`, or for 0 5/7 of
        ``image_size`` on a 16-pixel step (160 at 224), at least 32."""
        if self.pseudo_finetune_image_size:
            return self.pseudo_finetune_image_size
        return min(self.image_size, max(32, round(self.image_size * 5 / 7 / 16) * 16))

    def resolved(self, has_pool: bool) -> "TrainConfig":
        """The config with ``labeled_ratio`` decided (an explicit value is kept; ``None`` uses every label,
        with or without a pool: ``has_pool`` is kept for callers)."""
        if self.labeled_ratio is not None:
            return self
        return replace(self, labeled_ratio=DEFAULT_LABELED_RATIO)

    def tracked(self) -> dict[str, Any]:
        """The config as W&B, the results file and every saved model record it."""
        d = asdict(self)
        d["algorithms"] = list(self.algorithms)
        for k in ("progress", "store", "wandb_mode", "tags"):
            d.pop(k)
        return d


def default_config() -> dict[str, Any]:
    """The defaults as a plain dict (``wandb_config.DEFAULT_CONFIG``), with the backbone named."""
    return {**TrainConfig().resolved(has_pool=False).tracked(), "backbone": "tf_efficientnet_lite0"}


def apply_sweep_overrides(cfg: TrainConfig, run_config: Mapping[str, Any]) -> TrainConfig:
    """Under ``wandb agent`` the sweep's parameters live in ``wandb.config`` too."""
    upd = {k: run_config[k] for k in SWEEP_KEYS if k in run_config}
    if "algorithm" in upd:
        upd["algorithms"] = upd.pop("algorithm")
    if isinstance(upd.get("algorithms"), str):
        upd["algorithms"] = (upd["algorithms"],)
    if "algorithms" in upd:
        upd["algorithms"] = tuple(upd["algorithms"])
    return replace(cfg, **upd).validated() if upd else cfg
