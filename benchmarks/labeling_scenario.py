"""The labeling loop measured on generated data with a pool; prints one JSON document.

Per seed: a synthetic set with ``--labels`` labeled images per class, a test split and an
unlabeled pool of ``--pool`` images whose true classes are known (``synth --pool-truth``).

1. train (one command) → test accuracy of the best algorithm vs the labeled-only baseline,
   and the accuracy of ``models/pseudo_labels.csv`` against the truth (all rows, and the
   rows at confidence >= ``--min-confidence`` with their coverage);
2. ``suggest --budget B`` (``--strategy``, suggest's default) vs ``--strategy random``: the suggested images get their
   true labels (a simulated person), ``apply``, retrain → test accuracy of each;
3. ``issues``: ``--planted`` labeled images moved to a wrong class folder among
   ``--issues-images``; how many are in its top 2×planted.

    python benchmarks/labeling_scenario.py --seeds 0 1 2 --pool 2000 [--image-size 96]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path


def _truth(path: Path) -> dict[str, str]:
    with open(path) as f:
        return {r["path"]: r["label"] for r in csv.DictReader(f)}


def _train(data: Path, models: Path, store: Path, a) -> dict:
    from src.train_with_wandb import train_with_wandb

    return train_with_wandb(data_dir=data, models_dir=models, store=store, wandb_mode="disabled", progress=False,
                            fine_tune_epochs=a.fine_tune_epochs, image_size=a.image_size, seed=a.train_seed)


def _pseudo_accuracy(models: Path, truth: dict[str, str], thresholds: list[float]) -> dict:
    with open(models / "pseudo_labels.csv") as f:
        rows = list(csv.DictReader(f))
    ok = [r["label"] == truth[r["path"]] for r in rows]
    out = {"pseudo_label_accuracy": sum(ok) / len(ok), "pseudo_labels": len(ok)}
    for t in thresholds:  # what `apply --min-confidence t` would accept
        kept = [r["label"] == truth[r["path"]] for r in rows if float(r["confidence"]) >= t]
        out[f"accuracy_at_conf_{t}"] = sum(kept) / len(kept) if kept else None
        out[f"coverage_at_conf_{t}"] = len(kept) / len(ok)
    return out


def _label_round(work: Path, base: Path, store: Path, truth: dict[str, str], strategy: str, a) -> float:
    """Copy the dataset, label ``budget`` pool images picked by ``strategy`` with the truth, retrain."""
    from src.curation import apply_labels, suggest

    data = work / f"data_{strategy}"
    shutil.copytree(base / "data", data)
    models = work / f"models_{strategy}"
    shutil.copytree(base / "models", models)
    r = suggest(data, models, a.budget, strategy, out=work / f"sugg_{strategy}", store=store, seed=a.train_seed)
    labels = work / f"labels_{strategy}.csv"
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows([[s["path"], truth[s["path"]]] for s in r["suggestions"]])
    apply_labels(data, labels, store=store, wandb_mode="disabled", artifact_name=f"ds-{strategy}")
    return _train(data, models, store, a)["summary"]["best_test_accuracy"]


def _issues(work: Path, store: Path, seed: int, a) -> dict:
    from src.curation import find_issues
    from src.data.synth import generate_dataset

    per_class = a.issues_images // a.classes
    data = generate_dataset(work / "issues_data", a.classes, per_class, 2, a.image_size, seed=1000 + seed)
    rng = random.Random(seed)
    classes = sorted(p.name for p in (data / "train").iterdir())
    files = sorted((data / "train").rglob("*.jpg"))
    planted = set()
    for p in rng.sample(files, a.planted):
        wrong = rng.choice([c for c in classes if c != p.parent.name])
        dst = data / "train" / wrong / p.name
        shutil.move(p, dst)
        planted.add(dst.relative_to(data).as_posix())
    t0 = time.perf_counter()
    found = find_issues(data, store=store, image_size=a.image_size, seed=seed)["issues"]
    top = [i["path"] for i in found[: 2 * a.planted]]
    return {"labeled_images": len(files), "planted": a.planted, "flagged": len(found),
            f"planted_in_top_{2 * a.planted}": len(planted & set(top)),
            "planted_flagged": len(planted & {i["path"] for i in found}), "seconds": round(time.perf_counter() - t0, 1)}


def run_seed(seed: int, a) -> dict:
    from src.data.synth import generate_dataset

    work = Path(a.work) / f"seed{seed}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store = work / "store"
    t0 = time.perf_counter()
    generate_dataset(work / "data", a.classes, a.labels, a.test_per_class, a.image_size, seed=seed,
                     unlabeled=a.pool, pool_truth=work / "truth.csv")
    truth = _truth(work / "truth.csv")
    res = _train(work / "data", work / "models", store, a)
    out = {"seed": seed, "labeled_per_class": a.labels, "pool": a.pool,
           "test_accuracy": res["summary"]["best_test_accuracy"], "best_algorithm": res["summary"]["best_algorithm"],
           "baseline_test_accuracy": res["baseline"]["test_accuracy"],
           **_pseudo_accuracy(work / "models", truth, a.min_confidence)}
    out["train_seconds"] = round(time.perf_counter() - t0, 1)
    if a.budget:
        out["budget"] = a.budget
        for strategy in (a.strategy, "random"):
            out[f"test_accuracy_after_{strategy}"] = _label_round(work, work, store, truth, strategy, a)
    if a.planted:
        out["issues"] = _issues(work, store, seed, a)
    print(json.dumps(out), file=sys.stderr)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--labels", type=int, default=6, help="labeled images per class")
    p.add_argument("--test-per-class", type=int, default=10)
    p.add_argument("--pool", type=int, default=2000)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--fine-tune-epochs", type=int, default=0)
    p.add_argument("--train-seed", type=int, default=42)
    p.add_argument("--min-confidence", type=float, nargs="+", default=[0.9, 0.99, 0.999])
    p.add_argument("--budget", type=int, default=40)
    from src.curation.suggest import DEFAULT_STRATEGY

    p.add_argument("--strategy", default=DEFAULT_STRATEGY, help="suggest's strategy (default: suggest's own)")
    p.add_argument("--issues-images", type=int, default=800)
    p.add_argument("--planted", type=int, default=12)
    p.add_argument("--work", default="/tmp/labeling_scenario")
    a = p.parse_args()
    os.environ.setdefault("MLOPS_STORE", str(Path(a.work) / "store"))
    runs = [run_seed(s, a) for s in a.seeds]
    keys = [k for k, v in runs[0].items() if isinstance(v, float)]
    mean = {k: sum(r[k] for r in runs if r.get(k) is not None) / max(1, sum(r.get(k) is not None for r in runs))
            for k in keys}
    print(json.dumps({"args": vars(a), "mean": mean, "runs": runs, "load_average": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    main()
