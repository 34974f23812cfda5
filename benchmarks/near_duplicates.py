"""Which grouping finds the near-identical photos that make validation optimistic, and does grouping close the gap?

On the Grocery Store Dataset's ``train/`` (frozen ImageNet EfficientNet-Lite0 features, every label): for each
candidate grouping of near-identical shots — feature cosine similarity (learning/groups.py), a 64-bit DCT
perceptual hash, file-number order, EXIF time — how many photos it joins and whether any group mixes classes,
and the 3-fold cross-validated accuracy (logistic regression, the baseline's model) with each group kept in
one fold, next to the accuracy on ``val/`` (other store visits) of the same model fitted on all of ``train/``.

    python benchmarks/near_duplicates.py [--source ../shared/datasets/grocery-store] [--work /tmp/near-dups]

Skips with one line (exit 0) when the dataset folder is absent. Features are cached in ``--work``.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def listing(source: Path, split: str) -> tuple[list[Path], np.ndarray]:
    rows = [ln.split(",") for ln in (source / f"{split}.txt").read_text().splitlines() if ln.strip()]
    return [source / r[0].strip() for r in rows], np.array([int(r[1]) for r in rows])


def features(source: Path, work: Path) -> dict[str, np.ndarray]:
    cache = work / "features.npz"
    if cache.is_file():
        return dict(np.load(cache))
    from PIL import Image
    from scipy.fft import dctn

    from src.features.backbone import Preprocessing
    from src.features.extraction import extract
    from src.features.runtimes import pretrained_extractor

    ptr, ytr = listing(source, "train")
    pva, yva = listing(source, "val")
    ex = pretrained_extractor(Preprocessing())

    def phash(p: Path) -> np.ndarray:
        a = np.asarray(Image.open(p).convert("L").resize((32, 32), Image.BILINEAR), dtype=np.float32)
        d = dctn(a, norm="ortho")[:8, :8].ravel()[1:]
        return d > np.median(d)

    out = {"Xtr": extract(ex, ptr, progress=False), "ytr": ytr, "Xva": extract(ex, pva, progress=False), "yva": yva,
           "phash": np.array([phash(p) for p in ptr]),
           "number": np.array([int(re.search(r"_(\d+)\.", p.name).group(1)) for p in ptr]),
           "exif": np.array([bool(Image.open(p).getexif()) for p in ptr])}
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def components(adjacent: np.ndarray) -> np.ndarray:
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    return connected_components(csr_matrix(adjacent), directed=False)[1]


def grouped_cv(X: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int = 0) -> float:
    from src.learning.semi_supervised import UNLABELED, fit_baseline
    from src.learning.validation import labeled_folds

    folds = labeled_folds(y, 3, seed, groups=groups)
    right = []
    for f in range(3):
        held = folds == f
        model = fit_baseline(X, np.where(held, UNLABELED, y), seed)
        right.append(model.predict(X[held]) == y[held])
    return float(np.concatenate(right).mean())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=ROOT.parent / "shared/datasets/grocery-store")
    p.add_argument("--work", type=Path, default=Path("/tmp/near-dups"))
    a = p.parse_args(argv)
    if not (a.source / "train.txt").is_file():
        print(f"near_duplicates: skipped: no Grocery Store Dataset at {a.source}", file=sys.stderr)
        return 0
    warnings.simplefilter("ignore")
    from src.learning.groups import near_duplicate_groups
    from src.learning.semi_supervised import fit_baseline

    d = features(a.source, a.work)
    X, y, n = d["Xtr"], d["ytr"], len(d["ytr"])
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    cos = Xn @ Xn.T
    hamming = (d["phash"][:, None, :] != d["phash"][None, :, :]).sum(2)
    same = y[:, None] == y[None, :]
    nxt = np.array([i for i in range(n - 1) if same[i, i + 1] and d["number"][i + 1] == d["number"][i] + 1])
    rng = np.random.default_rng(0)
    pairs = [(i, j) for i, j in rng.integers(0, n, (20000, 2)) if i != j and same[i, j]]
    print(f"train/ {n} photos, val/ {len(d['yva'])}; EXIF present in {int(d['exif'].sum())}")
    print(f"consecutive file numbers (same class): median cosine {np.median(cos[nxt, nxt + 1]):.3f}, median pHash "
          f"distance {np.median(hamming[nxt, nxt + 1]):.0f}; random same-class pairs: "
          f"{np.median([cos[i, j] for i, j in pairs]):.3f}, {np.median([hamming[i, j] for i, j in pairs]):.0f}")
    val_acc = float((fit_baseline(X, y, 0).predict(d["Xva"]) == d["yva"]).mean())
    print(f"val/ accuracy of the model fitted on all of train/: {val_acc:.3f}\n")
    thirds = np.zeros(n, dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        for t, part in enumerate(np.array_split(idx[np.argsort(d["number"][idx])], 3)):
            thirds[part] = c * 3 + t
    schemes = {"none (random folds)": np.arange(n), "file order: thirds of each class": thirds,
               "file order: runs of 5": y * 10000 + d["number"] // 5}
    for t in (8, 12):
        schemes[f"pHash within {t} bits"] = components(hamming <= t)
    for t in (0.95, 0.92, 0.90):
        schemes[f"features cosine >= {t}"] = (near_duplicate_groups(X, t) if t == 0.92 else components(cos >= t))
    print(f"{'grouping':34s} {'grouped photos':>14s} {'groups':>7s} {'largest':>7s} {'mixed':>5s} {'3-fold CV':>9s}")
    for name, g in schemes.items():
        sizes = np.bincount(np.unique(g, return_inverse=True)[1])
        ids = np.unique(g, return_inverse=True)[1]
        mixed = sum(len(np.unique(y[ids == k])) > 1 for k in np.flatnonzero(sizes > 1))
        print(f"{name:34s} {int(sizes[sizes > 1].sum()):14d} {int((sizes > 1).sum()):7d} {int(sizes.max()):7d} "
              f"{mixed:5d} {grouped_cv(X, y, g):9.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
