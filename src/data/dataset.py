"""The labeled images training uses, read from the dataset manifest (:mod:`src.data.scan`).

Layout: ``DATA_DIR/{train,test[,val]}/{class_name}/{image files}``, plus an optional pool
``DATA_DIR/unlabeled/**`` of images without labels (:attr:`ImageDataset.pool`: paths and digests;
its labels are all ``-1``), and optional catalogue shots ``DATA_DIR/iconic/{class_name}/*`` (a
retailer's product photos): they join ``train`` as labeled images, marked in
:attr:`ImageDataset.catalogue`, and never validate or test. Class names come from the train split's
folder names. There is one scanner: training takes paths, classes and sha256 digests from the same
manifest dataset versions store (stat-cached in the local store, so an unchanged image is never
hashed twice), and the dataset digest is the manifest's. Problems a user can fix (missing folders, a
split or class with no images, zero-byte, corrupt or oversized images, test classes unknown to
train, a single class) raise :class:`DataError` with one actionable line before any expensive work;
files that are not images by extension, and hidden files, are skipped with a warning; links leading
outside the dataset folder are never read (they are not in the manifest).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.core.errors import DataError
from src.core.paths import is_inside
from src.data.scan import ICONIC, POOL, REQUIRED_SPLITS, SHIFT, SPLITS, dataset_digest, scan_dataset, scan_split

log = logging.getLogger(__name__)
SKIPPED_ERRORS = ("non_image",)  # by extension or content: skipped with a warning, never trained on


@dataclass
class Split:
    paths: list[Path]
    labels: np.ndarray  # int class indices
    digests: list[str] = field(default_factory=list)  # sha256 per path, from the manifest

    def __len__(self) -> int:
        return len(self.paths)


@dataclass
class ImageDataset:
    root: Path
    classes: list[str]
    splits: dict[str, Split] = field(default_factory=dict)
    digest: str = ""  # the manifest digest, the same one dataset versions record
    scan: dict = field(default_factory=dict, repr=False)  # the manifest scan, handed on to dataset versioning
    pool: Split | None = None  # the unlabeled pool (labels all -1), None without an unlabeled/ folder
    n_catalogue: int = 0  # the last train rows came from iconic/<class>/ (catalogue shots)

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def test(self) -> Split:
        return self.splits["test"]

    @property
    def catalogue(self) -> np.ndarray:
        """True for the train rows that came from ``iconic/<class>/`` (appended after the ``train/`` photos)."""
        mask = np.zeros(len(self.train), dtype=bool)
        if self.n_catalogue:
            mask[-self.n_catalogue:] = True
        return mask

    @property
    def has_pool(self) -> bool:
        return self.pool is not None and len(self.pool) > 0

    def class_counts(self, split: str) -> dict[str, int]:
        counts = np.bincount(self.splits[split].labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}

    def digests(self) -> dict[Path, str]:
        parts = [*self.splits.values(), *([self.pool] if self.pool else [])]
        return {p: d for s in parts for p, d in zip(s.paths, s.digests)}


def _check_layout(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist",
                        hint="pass `data_dir` pointing at DIR/{train,test}/{class}/*.jpg", params=("data_dir",))
    for split in REQUIRED_SPLITS:
        if not (root / split).is_dir():
            raise DataError(f"{root} has no '{split}' folder", hint=f"expected {root}/{split}/<class_name>/<images>")
        if not is_inside(Path(os.path.realpath(root)), root / split):
            raise DataError(f"{root / split} is a link leading outside {root}; it is never read",
                            hint="copy the split into the dataset folder")
    classes = sorted(_class_dirs(root / "train"))
    if not classes:
        raise DataError(f"{root / 'train'} has no class folders", hint="add one folder of images per class")
    if len(classes) < 2:
        raise DataError(f"training needs at least 2 classes, {root / 'train'} has one ({classes[0]})",
                        hint="add a folder of images for each further class")
    return classes


def _usable(entries: list[dict], root: Path) -> list[dict]:
    """Entries training can use; unusable images stop here, non-images are skipped with a warning."""
    keep, skipped = [], []
    for e in entries:
        if any(part.startswith(".") for part in Path(e["path"]).parts[1 if e["split"] in (POOL, SHIFT) else 2:]):
            continue
        err = e.get("error")
        if err == "zero_byte":
            raise DataError(f"{root / e['path']}: file is empty (0 bytes)", hint="remove or replace it")
        if err in SKIPPED_ERRORS:
            skipped.append(e["path"])
        elif err:
            raise DataError(f"{root / e['path']}: {e.get('error_detail') or err}",
                            hint="remove or replace it (data_versioning.py --quality-check lists every such file)")
        else:
            keep.append(e)
    if skipped:
        log.warning("skipping %d non-image file(s) (e.g. %s)", len(skipped), skipped[0])
    return keep


def image_dataset(data_dir: str | os.PathLike, store=None, progress: bool = True) -> ImageDataset:
    """The labeled images of an ImageFolder dataset with train and test splits (val optional).

    ``progress=False`` draws no bar while hashing (see :func:`src.data.scan.scan_dataset`).
    """
    root = Path(data_dir).expanduser()
    classes = _check_layout(root)
    scan = scan_dataset(root, store=store, progress=progress)
    index = {c: i for i, c in enumerate(classes)}
    ds = ImageDataset(root=root, classes=classes, digest=dataset_digest(scan["manifest"]), scan=scan)
    by_split: dict[str, list[dict]] = {s: [] for s in (*SPLITS, POOL)}
    for e in _usable(scan["manifest"], root):
        if e["split"] in by_split and not e["class"].startswith("."):
            by_split[e["split"]].append(e)
    real_root = Path(os.path.realpath(root))
    if (root / POOL).is_dir():
        pool = by_split[POOL]
        ds.pool = Split([root / e["path"] for e in pool], np.full(len(pool), -1, dtype=np.int64),
                        [e["sha256"] for e in pool])
    for split in SPLITS:
        if not (root / split).is_dir() or not is_inside(real_root, root / split):
            continue
        entries = by_split[split]
        for cls in sorted({e["class"] for e in entries} | _class_dirs(root / split)):
            if cls not in index:
                raise DataError(f"class '{cls}' in {split} has no folder in train",
                                hint="every class needs training images; rename or remove the folder")
        if split == "train":
            present = {e["class"] for e in entries}
            for cls in classes:
                if cls not in present:
                    raise DataError(f"class '{cls}' has no images in {root / 'train' / cls}",
                                    hint="add images or remove the empty class folder")
        if not entries:
            raise DataError(f"the '{split}' split in {root / split} has no images", hint="add images per class folder")
        ds.splits[split] = Split([root / e["path"] for e in entries],
                                 np.asarray([index[e["class"]] for e in entries], dtype=np.int64),
                                 [e["sha256"] for e in entries])
    train, iconic = ds.splits["train"], ds.splits.pop(ICONIC, None)
    if iconic is not None:  # catalogue shots train as labeled images, after the photos
        ds.splits["train"] = Split(train.paths + iconic.paths, np.concatenate([train.labels, iconic.labels]),
                                   train.digests + iconic.digests)
        ds.n_catalogue = len(iconic)
    return ds


def image_split(split_dir: str | os.PathLike, classes: list[str], store=None, progress: bool = True,
                what: str = "split folder") -> Split:
    """The images of ONE ImageFolder split ``split_dir/<class>/<images>`` labeled by ``classes``' indices
    (e.g. training's ``--shift-dir``; a subset of the classes is fine), with a dataset split's rules: one
    actionable :class:`DataError` line for a missing folder, a class folder not in ``classes``, no
    images or an unusable image; links leading outside ``split_dir`` are never read."""
    scan = scan_split(split_dir, store=store, progress=progress, what=what)
    root, notes = Path(scan["root"]), scan["notes"]
    links = [n.partition(":")[2] for n in notes if n.startswith("outside_link:")]
    if links:
        log.warning("left out %d link(s) leading outside %s (e.g. %s); they are never read", len(links), root, links[0])
    index = {c: i for i, c in enumerate(classes)}
    found = {e["class"] for e in scan["manifest"]} | {n.partition(":")[2] for n in notes if n.startswith("empty_class:")}
    for cls in sorted(c for c in found if not c.startswith(".")):
        if cls not in index:
            raise DataError(f"{what} {root}: class folder '{cls}' is not a training class",
                            hint=f"use the training classes' folder names ({', '.join(classes[:5])}"
                                 f"{', ...' if len(classes) > 5 else ''}) or remove the folder")
    entries = [e for e in _usable(scan["manifest"], root) if not e["class"].startswith(".")]
    if not entries:
        raise DataError(f"{what} {root} has no images in class folders", hint=f"expected {root}/<class_name>/<images>")
    return Split([root / e["path"] for e in entries], np.asarray([index[e["class"]] for e in entries], dtype=np.int64),
                 [e["sha256"] for e in entries])


def _class_dirs(split_dir: Path) -> set[str]:
    """Class folders of a split; a link leading outside the dataset is none (see :mod:`src.data.scan`).

    Read with the walk's ``scandir``: a split folder that cannot be read (``chmod 000 train/``) is the
    walk's one line naming it, not a ``PermissionError`` traceback."""
    from src.data.walk import is_dir, scandir, walk_problem

    real_root = Path(os.path.realpath(split_dir.parent))
    notes: list[str] = []
    entries = scandir(split_dir, split_dir.parent, notes)
    if entries is None:
        raise walk_problem(f"{notes[0].partition(':')[0]}:{split_dir}")  # the whole path: training names it
    return {e.name for e in entries
            if is_dir(e) and not e.name.startswith(".") and (not e.is_symlink() or is_inside(real_root, e.path))}
