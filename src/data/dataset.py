"""ImageFolder scanning, validation and the seeded labeled/unlabeled split.

Layout: ``DATA_DIR/{train,test[,val]}/{class_name}/{image files}``. Class names come from
the train split's folder names. Problems a user can fix (missing folders, a split or
class with no images, zero-byte files, test classes unknown to train, a labeled ratio
that leaves a class without a labeled image) raise :class:`DataError`/:class:`ConfigError`
with one actionable line; files that are not images by extension are skipped with a warning.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.core.errors import ConfigError, DataError
from src.core.images import is_image_name

log = logging.getLogger(__name__)
SPLITS = ("train", "test", "val")
REQUIRED_SPLITS = ("train", "test")


@dataclass
class Split:
    paths: list[Path]
    labels: np.ndarray  # int class indices

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ImageDataset:
    root: Path
    classes: list[str]
    splits: dict[str, Split] = field(default_factory=dict)

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    def class_counts(self, split: str) -> dict[str, int]:
        counts = np.bincount(self.splits[split].labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


def _list_class_dir(d: Path) -> list[Path]:
    files, skipped = [], []
    for p in sorted(d.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        (files if is_image_name(p) else skipped).append(p)
    if skipped:
        log.warning("skipping %d non-image file(s) in %s (e.g. %s)", len(skipped), d, skipped[0].name)
    for p in files:
        if p.stat().st_size == 0:
            raise DataError(f"{p}: file is empty (0 bytes)", hint="remove or replace it")
    return files


def scan_dataset(data_dir: str | os.PathLike) -> ImageDataset:
    """Scan an ImageFolder dataset with train and test splits (val optional)."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist",
                        hint="pass --data-dir pointing at DIR/{train,test}/{class}/*.jpg")
    for split in REQUIRED_SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"{root} has no '{split}' folder",
                            hint=f"expected {root}/{split}/<class_name>/<images>")
    train_classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith("."))
    if not train_classes:
        raise DataError(f"{root / 'train'} has no class folders", hint="add one folder of images per class")
    index = {c: i for i, c in enumerate(train_classes)}
    ds = ImageDataset(root=root, classes=train_classes)
    for split in SPLITS:
        sdir = root / split
        if not sdir.is_dir():
            continue
        paths, labels = [], []
        for cdir in sorted(p for p in sdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if cdir.name not in index:
                raise DataError(f"class '{cdir.name}' in {split} has no folder in train",
                                hint="every class needs training images; rename or remove the folder")
            files = _list_class_dir(cdir)
            if not files and split == "train":
                raise DataError(f"class '{cdir.name}' has no images in {cdir}",
                                hint="add images or remove the empty class folder")
            paths += files
            labels += [index[cdir.name]] * len(files)
        if not paths:
            raise DataError(f"the '{split}' split in {sdir} has no images", hint="add images per class folder")
        ds.splits[split] = Split(paths, np.asarray(labels, dtype=np.int64))
    return ds


def validate_labeled_ratio(ratio: float) -> float:
    if not isinstance(ratio, (int, float)) or not (0 < float(ratio) <= 1):
        raise ConfigError(f"labeled_ratio must be in (0, 1], got {ratio!r}", hint="for example --labeled-ratio 0.1")
    return float(ratio)


def labeled_split(labels: np.ndarray, ratio: float, n_classes: int, seed: int) -> np.ndarray:
    """Boolean mask of labeled samples: stratified, seeded, at least one per class.

    Raises ConfigError when ``ratio`` is outside (0, 1] or gives fewer labeled
    samples than there are classes.
    """
    ratio = validate_labeled_ratio(ratio)
    wanted = int(round(ratio * len(labels)))
    if wanted < n_classes:
        raise ConfigError(
            f"labeled_ratio {ratio} gives {wanted} labeled images for {n_classes} classes",
            hint=f"use at least {n_classes / max(1, len(labels)):.3f} so every class has a labeled image")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) == 0:
            continue
        k = min(len(idx), max(1, int(round(ratio * len(idx)))))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split labeled indices into (fit, validation) for fine-tuning; classes with one
    labeled image stay in the fit part, the others give about ``fraction`` to validation."""
    rng = np.random.default_rng(seed + 1)
    fit, val = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(fraction * len(idx))) if len(idx) >= 3 else 0
        val += idx[:k].tolist()
        fit += idx[k:].tolist()
    return np.asarray(sorted(fit), dtype=np.int64), np.asarray(sorted(val), dtype=np.int64)


def dataset_digest(ds: ImageDataset, digests: dict[Path, str]) -> str:
    """Content digest of the dataset, the same formula dataset versions use."""
    from src.data.scan import dataset_digest as manifest_digest

    return manifest_digest([{"path": p.relative_to(ds.root).as_posix(), "sha256": digests[p]}
                            for s in ds.splits.values() for p in s.paths])
