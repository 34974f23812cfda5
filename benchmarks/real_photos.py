"""Real-photo benchmark: the suite's default training on the Grocery Store Dataset at k labels per class.

For each k and seeded draw: k photos per class of the dataset's ``train/`` are the labeled ``train/``,
the rest of ``train/`` is the ``unlabeled/`` pool (renamed, so no file name tells its class), and
``val/`` (other store visits) is ``test/``. ``all``: every training label, no pool (the ceiling).
Each run is ``run_training`` with the defaults (W&B disabled); one store is shared, so features and
fine-tunes cached by one run serve the next. Printed per run and as means per k: what validation picked
and its test (``val/``) accuracy, the labeled-only baseline's, the validation estimate with its standard
error, the pool's pseudo-labels (accuracy and coverage at a few confidences), wall time.

``--suggest BUDGET`` measures the labeling loop's ``suggest`` against random picks of the same budget: after
each draw's run (not ``all``, which has no pool), BUDGET x classes pool images chosen by ``suggest`` (the
first run's model, the defaults of ``labeling.py suggest``) move into ``train/<true class>/`` of a copy of
the draw's folder (``<tag>-suggest``) and training runs again (same defaults, seed and store); so does a
second copy (``<tag>-random``) with as many pool images picked at random (seeded by the draw). Printed per
draw and per k: the ``val/`` accuracy of the first run, of each retraining, and suggest's gain over random
in points (mean, min, and on how many draws suggest won).

    python benchmarks/real_photos.py [--source ../shared/datasets/grocery-store] [--k 1 3 5 10 all] [--draws 3] [--first-draw 0]
        [--work /tmp/real-photos] [--json out.json] [--iconic] [--suggest BUDGET]

    python benchmarks/real_photos.py --k 2 --draws 3 --suggest 2   # issue #28: suggest vs random at 2 per class

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

from src.curation.suggest import DEFAULT_STRATEGY  # noqa: E402  (after the path above)

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


def add_draw_arguments(p: argparse.ArgumentParser) -> None:
    """``--data``, ``--extractor``, ``--store``: one draw of this benchmark, for the scripts that study it."""
    p.add_argument("--data", type=Path, required=True, help="a real_photos.py draw: train/<class>/, unlabeled/")
    p.add_argument("--extractor", type=Path, required=True, help="the feature_extractor.pth trained on it")
    p.add_argument("--store", type=Path, default=None, help="store holding (or receiving) its float32 export")


def read_draw(data: Path) -> tuple[list[str], list[Path], np.ndarray, list[Path]]:
    """(classes, labeled photos, their class indices, pool photos) of one draw's folder, in a fixed order."""
    classes = sorted(d.name for d in (data / "train").iterdir())
    lab = [(f, i) for i, c in enumerate(classes) for f in sorted((data / "train" / c).iterdir())]
    return classes, [f for f, _ in lab], np.array([c for _, c in lab]), sorted((data / "unlabeled").iterdir())


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


def _train(data: Path, models: Path, store: Path, seed: int, runtime: str, options: dict | None = None
           ) -> tuple[dict, float]:
    """``run_training`` with the defaults (but ``options``) on ``data``; the results and the wall time."""
    from src.training.config import TrainConfig
    from src.training.pipeline import run_training

    t0 = time.perf_counter()
    res = run_training(TrainConfig.from_options(data_dir=str(data), models_dir=str(models), store=str(store),
                                                seed=seed, wandb_mode="disabled", progress=False, runtime=runtime,
                                                **(options or {})))
    return res, time.perf_counter() - t0


def _tag(k: int | None, draw: int, iconic: bool) -> str:
    return f"k{k or 'all'}-d{draw}{'-iconic' if iconic else ''}"


def one_run(source: Path, work: Path, k: int | None, draw: int, store: Path, runtime: str,
            iconic: bool = False, options: dict | None = None) -> tuple[dict, dict[str, str]]:
    """One draw's run: its figures and the pool's truth."""
    tag = _tag(k, draw, iconic)
    data = work / tag
    truth = build(source, data, k, seed=draw, iconic=iconic)
    models = work / f"models-{tag}"
    res, seconds = _train(data, models, store, draw, runtime, options)
    s = res["summary"]
    r = res["extractor"].get("pseudo_label_round") or {}
    return {"k": k or "all", "draw": draw, "seconds": seconds, "picked": s["best_algorithm"],
            "picked_test": s["best_test_accuracy"], "baseline_test": s["baseline_test_accuracy"],
            "val_estimate": s["best_val_accuracy"], "val_images": s.get("val_images"),
            "round_kept": r.get("kept"), "round_pseudo_label_accuracy": r.get("pseudo_label_accuracy"),
            "precision": res["extractor"]["precision"],
            "recommended": (res.get("pseudo_labels") or {}).get("recommended_min_confidence"),
            **pool_report(models, truth)}, truth


def copy_draw(data: Path, out: Path) -> None:
    """``out``: a copy of the draw's folder (files linked, so moves in it leave ``data`` as it is)."""
    shutil.rmtree(out, ignore_errors=True)
    for f in sorted(data.rglob("*")):
        if f.is_file():
            _link(f, out / f.relative_to(data))


def label_pool(data: Path, picks: list[str], truth: dict[str, str]) -> None:
    """Move each picked pool image (path relative to ``data``) into ``train/<its true class>/``."""
    for rel in picks:
        dst = data / "train" / truth[rel] / Path(rel).name
        if dst.exists():
            raise FileExistsError(dst)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(data / rel, dst)


def suggested(data: Path, models: Path, store: Path, n: int, strategy: str = DEFAULT_STRATEGY) -> list[str]:
    """The ``n`` pool images ``labeling.py suggest --strategy STRATEGY`` names for the run in ``models``."""
    from src.curation import suggest

    return [r["path"] for r in suggest(data, models, n, strategy=strategy, store=store)["suggestions"]]


def random_picks(truth: dict[str, str], n: int, seed: int) -> list[str]:
    """``n`` pool images drawn uniformly at random (seeded)."""
    pool = sorted(truth)
    return [pool[i] for i in np.random.default_rng(seed).choice(len(pool), size=min(n, len(pool)), replace=False)]


def relabeled_run(work: Path, tag: str, how: str, picks: list[str], truth: dict[str, str], store: Path,
                  seed: int, runtime: str, options: dict | None = None) -> dict:
    """Train on a copy of the draw's folder (``<tag>-<how>``) with ``picks`` labeled by their truth."""
    data = work / f"{tag}-{how}"
    copy_draw(work / tag, data)
    label_pool(data, picks, truth)
    res, seconds = _train(data, work / f"models-{tag}-{how}", store, seed, runtime, options)
    return {f"{how}_test": res["summary"]["best_test_accuracy"], f"{how}_picked": res["summary"]["best_algorithm"],
            f"{how}_seconds": seconds}


def suggest_vs_random(work: Path, tag: str, draw: int, truth: dict[str, str], budget: int, store: Path,
                      runtime: str, options: dict | None = None, strategy: str = DEFAULT_STRATEGY) -> dict:
    """Suggest's picks and random picks, ``budget`` per class, each labeled and trained on: their figures."""
    n = budget * sum(1 for c in (work / tag / "train").iterdir() if c.is_dir())
    picks = {"suggest": suggested(work / tag, work / f"models-{tag}", store, n, strategy),
             "random": random_picks(truth, n, seed=draw)}
    out = {"suggest_budget": budget, "suggest_images": len(picks["suggest"]), "random_images": len(picks["random"]),
           "suggest_random_overlap": len(set(picks["suggest"]) & set(picks["random"]))}
    for how, chosen in picks.items():
        out.update(relabeled_run(work, tag, how, chosen, truth, store, draw, runtime, options))
    out["suggest_gain"] = 100 * (out["suggest_test"] - out["random_test"])  # points
    return out


def _option(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` → (key, value): JSON where it parses (numbers, true/false), else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=ROOT.parent / "shared/datasets/grocery-store",
                   help="the Grocery Store Dataset folder (train.txt, val.txt, classes.csv)")
    p.add_argument("--k", nargs="+", default=["1", "3", "5", "10", "all"], help="labels per class: integers and/or 'all'")
    p.add_argument("--draws", type=int, default=3, help="seeded draws per k (default 3)")
    p.add_argument("--first-draw", type=int, default=0, metavar="N",
                   help="the draws' seeds start at N (default 0): --first-draw 6 --draws 3 runs draws 6-8")
    p.add_argument("--work", type=Path, default=Path("/tmp/real-photos"), help="dataset copies, models, store")
    p.add_argument("--runtime", default="auto", help="feature extraction runtime (default auto, as training)")
    p.add_argument("--json", type=Path, help="also write every run's figures here")
    p.add_argument("--iconic", action="store_true",
                   help="also give training each class's catalogue photo in iconic/<class>/ (as a retailer's product shots)")
    p.add_argument("--suggest", type=int, metavar="BUDGET",
                   help="also label BUDGET pool images per class chosen by suggest, and as many random ones, and "
                        "retrain on each (suggest vs random on val/)")
    p.add_argument("--strategy", default=DEFAULT_STRATEGY,
                   help=f"suggest's strategy for --suggest (default {DEFAULT_STRATEGY})")
    p.add_argument("--set", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="a training option other than its default, e.g. pseudo_finetune_epochs=1 (repeatable)")
    a = p.parse_args(argv)
    a.set = dict(a.set)
    if a.suggest is not None and a.suggest < 1:
        p.error("--suggest BUDGET must be a positive number of labels per class")
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
        for d in range(a.first_draw, a.first_draw + (1 if kk is None else a.draws)):
            r, truth = one_run(a.source, a.work, kk, d, a.work / "store", a.runtime, a.iconic, a.set)
            runs.append(r)
            print("  ".join(_fmt(r.get(c)) for c in cols), flush=True)
            if a.suggest and truth:
                r.update(suggest_vs_random(a.work, _tag(kk, d, a.iconic), d, truth, a.suggest, a.work / "store",
                                           a.runtime, a.set, a.strategy))
                print(f"  suggest {a.suggest} per class ({r['suggest_images']} images): first run "
                      f"{r['picked_test']:.3f}, suggest {r['suggest_test']:.3f}, random {r['random_test']:.3f} "
                      f"(gain {r['suggest_gain']:+.1f} points; {r['suggest_random_overlap']} images in both)",
                      flush=True)
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
        gains = [r["suggest_gain"] for r in rs if "suggest_gain" in r]
        if gains:
            print(f"      suggest vs random ({rs[0]['suggest_budget']} per class): mean gain {np.mean(gains):+.1f} "
                  f"points, min {min(gains):+.1f}, suggest won on {sum(g > 0 for g in gains)} of {len(gains)}")
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
