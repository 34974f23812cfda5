"""Real-photo benchmark: the suite's default training on the Grocery Store Dataset at k labels per class.

For each k and seeded draw: k photos per class of the dataset's ``train/`` are the labeled ``train/``,
the rest of ``train/`` is the ``unlabeled/`` pool (renamed, so no file name tells its class), and
``val/`` (other store visits) is ``test/``. ``all``: every training label, no pool (the ceiling).
Each run is ``run_training`` with the defaults (W&B disabled); one store is shared, so features and
fine-tunes cached by one run serve the next. Printed per run and as means per k: what validation picked
and its test (``val/``) accuracy, the labeled-only baseline's, the validation estimate with its standard
error, the pool's pseudo-labels (accuracy and coverage at a few confidences), wall time.

    python benchmarks/real_photos.py [--source ../shared/datasets/grocery-store] [--k 1 3 5 10 all] [--draws 3]
        [--work /tmp/real-photos] [--json out.json] [--iconic]

Skips with one line (exit 0) when the dataset folder is absent. Judged on ``val/``, never chosen on it.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIDENCES = (0.5, 0.7, 0.9, 0.95, 0.99)


def listing(source: Path, split: str) -> dict[str, list[str]]:
    with open(source / "classes.csv", newline="") as f:
        names = {int(r[1]): r[0] for r in list(csv.reader(f))[1:]}
    out: dict[str, list[str]] = defaultdict(list)
    for line in (source / f"{split}.txt").read_text().splitlines():
        if line.strip():
            path, fine, _ = (s.strip() for s in line.split(","))
            out[names[int(fine)]].append(path)
    return {c: sorted(v) for c, v in out.items()}


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def iconic_images(source: Path) -> dict[str, Path]:
    """Each class's catalogue photo (``classes.csv``'s iconic image path)."""
    with open(source / "classes.csv", newline="") as f:
        return {r[0]: source / r[4].lstrip("/") for r in list(csv.reader(f))[1:]}


def build(source: Path, out: Path, k: int | None, seed: int, iconic: bool = False) -> dict[str, str]:
    """The dataset folder for one draw (with ``iconic``: each class's catalogue photo in ``iconic/<class>/``);
    returns the pool's truth (path relative to ``out`` → class)."""
    train, val = listing(source, "train"), listing(source, "val")
    shutil.rmtree(out, ignore_errors=True)
    if iconic:
        for c, f in iconic_images(source).items():
            if c in train:
                _link(f, out / "iconic" / c / f.name)
    rng = np.random.default_rng(seed)
    pool: list[tuple[str, str]] = []
    for c, photos in train.items():
        pick = set(rng.choice(len(photos), size=min(k, len(photos)), replace=False).tolist()) if k else set(
            range(len(photos)))
        for i, p in enumerate(photos):
            if i in pick:
                _link(source / p, out / "train" / c / Path(p).name)
            else:
                pool.append((p, c))
    for c, photos in val.items():
        for p in photos:
            _link(source / p, out / "test" / c / Path(p).name)
    truth = {}
    for i in rng.permutation(len(pool)):
        p, c = pool[i]
        name = f"unlabeled/photo_{len(truth):05d}.jpg"
        _link(source / p, out / name)
        truth[name] = c
    return truth


def pool_report(models: Path, truth: dict[str, str]) -> dict[str, float]:
    """Accuracy and coverage of ``pseudo_labels.csv`` at each of :data:`CONFIDENCES`."""
    f = models / "pseudo_labels.csv"
    if not truth or not f.is_file():
        return {}
    from src.learning.calibration import reliability

    rows = list(csv.DictReader(open(f, newline="")))
    conf = np.array([float(r["confidence"]) for r in rows])
    raw = np.array([float(r["raw_confidence"]) for r in rows])
    right = np.array([truth[r["path"]] == r["label"] for r in rows])
    accept = np.array([r["accept"] == "1" for r in rows])
    out = {"pool_accuracy": float(right.mean()), "accepted": int(accept.sum()),
           "acc@accept": float(right[accept].mean()) if accept.any() else None, "cov@accept": float(accept.mean()),
           "ece_raw": reliability(raw, right)["ece"], "ece_calibrated": reliability(conf, right)["ece"]}
    for c in CONFIDENCES:  # on the raw confidences, as the model gives them
        sel = raw >= c
        out[f"acc@{c}"] = float(right[sel].mean()) if sel.any() else None
        out[f"cov@{c}"] = float(sel.mean())
    return out


def one_run(source: Path, work: Path, k: int | None, draw: int, store: Path, runtime: str,
            iconic: bool = False) -> dict:
    from src.training.config import TrainConfig
    from src.training.pipeline import run_training

    tag = f"k{k or 'all'}-d{draw}{'-iconic' if iconic else ''}"
    data = work / tag
    truth = build(source, data, k, seed=draw, iconic=iconic)
    models = work / f"models-{tag}"
    t0 = time.perf_counter()
    res = run_training(TrainConfig(data_dir=str(data), models_dir=str(models), store=str(store), seed=draw,
                                   wandb_mode="disabled", progress=False, runtime=runtime))
    s = res["summary"]
    r = res["extractor"].get("pseudo_label_round") or {}
    return {"k": k or "all", "draw": draw, "seconds": time.perf_counter() - t0, "picked": s["best_algorithm"],
            "picked_test": s["best_test_accuracy"], "baseline_test": s["baseline_test_accuracy"],
            "val_estimate": s["best_val_accuracy"], "val_images": s.get("val_images"),
            "round_kept": r.get("kept"), "round_pseudo_label_accuracy": r.get("pseudo_label_accuracy"),
            "precision": res["extractor"]["precision"],
            "recommended": (res.get("pseudo_labels") or {}).get("recommended_min_confidence"),
            **pool_report(models, truth)}


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=ROOT.parent / "shared/datasets/grocery-store",
                   help="the Grocery Store Dataset folder (train.txt, val.txt, classes.csv)")
    p.add_argument("--k", nargs="+", default=["1", "3", "5", "10", "all"], help="labels per class: integers and/or 'all'")
    p.add_argument("--draws", type=int, default=3, help="seeded draws per k (default 3)")
    p.add_argument("--work", type=Path, default=Path("/tmp/real-photos"), help="dataset copies, models, store")
    p.add_argument("--runtime", default="auto", help="feature extraction runtime (default auto, as training)")
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    p.add_argument("--iconic", action="store_true",
                   help="also give training each class's catalogue photo in iconic/<class>/ (as a retailer's product shots)")
    a = p.parse_args(argv)
    if not (a.source / "train.txt").is_file():
        print(f"real_photos: skipped: no Grocery Store Dataset at {a.source}", file=sys.stderr)
        return 0
    logging.basicConfig(level=logging.WARNING)
    a.work.mkdir(parents=True, exist_ok=True)
    runs = []
    cols = ["k", "draw", "picked", "picked_test", "baseline_test", "val_estimate", "val_images", "round_kept",
            "pool_accuracy", "acc@0.99", "cov@0.99", "recommended", "acc@accept", "cov@accept", "ece_raw",
            "ece_calibrated", "seconds"]
    print("  ".join(cols), flush=True)
    for k in a.k:
        kk = None if k == "all" else int(k)
        for d in range(1 if kk is None else a.draws):
            r = one_run(a.source, a.work, kk, d, a.work / "store", a.runtime, a.iconic)
            runs.append(r)
            print("  ".join(_fmt(r.get(c)) for c in cols), flush=True)
            if a.json:
                a.json.write_text(json.dumps(runs, indent=1))
    print("\nmeans per k (val/ accuracy):")
    for k in dict.fromkeys(r["k"] for r in runs):
        rs = [r for r in runs if r["k"] == k]
        m = {c: float(np.mean([np.nan if r[c] is None else r[c] for r in rs]))  # no estimate below 3 labels
             for c in ("picked_test", "baseline_test", "val_estimate", "seconds")}
        below = sum(r["picked_test"] < r["baseline_test"] for r in rs)
        print(f"k={k}: picked {m['picked_test']:.3f}, baseline {m['baseline_test']:.3f} "
              f"(gain {m['picked_test'] - m['baseline_test']:+.3f}, below the baseline on {below} of {len(rs)}), "
              f"validation said {m['val_estimate']:.3f}, {m['seconds']:.0f} s per run")
        pool = [r for r in rs if r.get("cov@accept") is not None]
        if pool:
            n_acc = sum(r["accepted"] for r in pool)
            right = sum(r["accepted"] * (r["acc@accept"] or 0) for r in pool)
            print(f"      pseudo-labels recommended: {n_acc} in {len(pool)} runs "
                  f"(coverage {np.mean([r['cov@accept'] for r in pool]):.1%}), "
                  f"{right / n_acc if n_acc else float('nan'):.1%} right; recommended minimum per run "
                  f"{[r.get('recommended') for r in pool]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
