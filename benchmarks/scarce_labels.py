"""Few labels measured: the pseudo-label fine-tuning round against today's pipeline; prints JSON lines.

For each labeled ratio and label draw (``--seeds``: the seed draws the labeled images and seeds
training), two runs of ``train_with_wandb`` on the same data and store:

- ``off``: ``pseudo_finetune_epochs=0`` (the pipeline before the round) — cold: fine-tunes and
  extracts everything;
- ``on``: the round (``--epochs``) — the first fine-tune and its features come from the cache the
  ``off`` run filled, so its wall time is the round's own cost (selection, second fine-tune,
  re-extraction); ``cost_ratio`` = (off + on) / off is what a cold run with the round costs.

Each line: test accuracy per algorithm and of the labeled-only baseline, the validation-picked
best, the hidden labels' accuracy (``unlabeled_accuracy`` of the best, i.e. its pseudo-labels),
the shifted-style accuracy when ``--shift-dir`` is given, and wall times. A final line
aggregates mean and spread (max - min) across draws.

    python benchmarks/scarce_labels.py --data DIR [--shift-dir DIR] --ratios 0.025 0.05 0.1 --seeds 0 1 2 \
        [--runtime onnx]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _run(a, ratio: float, seed: int, epochs: int, tag: str) -> dict:
    from src.train_with_wandb import train_with_wandb

    opts = {}
    if a.shift_dir:
        opts["shift_dir"] = a.shift_dir
    t0 = time.perf_counter()
    r = train_with_wandb(data_dir=a.data, models_dir=a.work / f"models_{tag}_{ratio}_{seed}", store=a.work / "store",
                         wandb_mode="disabled", progress=False, labeled_ratio=ratio, seed=seed,
                         pseudo_finetune_epochs=epochs, runtime=a.runtime, **opts)
    wall = time.perf_counter() - t0
    s, algos = r["summary"], r["algorithms"]
    best = s["best_algorithm"]
    out = {"run": tag, "ratio": ratio, "seed": seed, "labeled": r["dataset"]["labeled_samples"], "seconds": wall,
           "best": best, "best_test": s["best_test_accuracy"], "baseline_test": s["baseline_test_accuracy"],
           "best_pseudo": algos[best]["unlabeled_accuracy"],
           "test": {k: v["test_accuracy"] for k, v in algos.items()},
           "round": r["extractor"].get("pseudo_label_round")}
    if a.shift_dir:
        out["best_shift"] = algos[best].get("shift_accuracy")
        out["baseline_shift"] = r["baseline"].get("shift_accuracy")
    if out["round"]:
        out["round"] = {k: out["round"][k] for k in ("ran", "kept", "pseudo_labels", "pseudo_label_accuracy",
                                                      "heldout_accuracy_before", "heldout_accuracy_after",
                                                      "heldout_log_loss_before", "heldout_log_loss_after",
                                                      "heldout_p_worse", "finetune_heldout_accuracy", "seconds", "cached")}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path)
    p.add_argument("--rows", type=Path, default=None,
                   help="aggregate the JSON lines of an earlier run (this script's stdout) instead of training")
    p.add_argument("--shift-dir", default=None)
    p.add_argument("--work", type=Path, default=Path("/tmp/scarce_labels"))
    p.add_argument("--ratios", type=float, nargs="+", default=[0.025, 0.05, 0.1])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=2, help="pseudo_finetune_epochs of the `on` runs")
    p.add_argument("--runtime", default="auto", help="training's --runtime (onnx: float32 without the int8 guard, "
                   "whose extra int8 pass doubles extraction; accuracy figures are float32 then)")
    a = p.parse_args(argv)
    if a.rows is not None:
        return _aggregate_file(a.rows)
    if a.data is None:
        p.error("--data is required (or --rows FILE to aggregate earlier lines)")
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for ratio in a.ratios:
        for seed in a.seeds:
            off = _run(a, ratio, seed, 0, "off")
            on = _run(a, ratio, seed, a.epochs, "on")
            on["cost_ratio"] = (off["seconds"] + on["seconds"]) / off["seconds"]
            for row in (off, on):
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps({"aggregate": _aggregate(rows)}), flush=True)
    return 0


def _aggregate_file(path: Path) -> int:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        parsed = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as e:
        print(f"error: cannot read rows from {path}: {e}", file=sys.stderr)
        return 2
    rows = [r for r in parsed if not (isinstance(r, dict) and "aggregate" in r)]
    if not rows or any(not isinstance(r, dict) or not {"ratio", "run", "best_test", "baseline_test"} <= r.keys()
                       for r in rows):
        print(f"error: {path} holds no rows of this benchmark (ratio, run, best_test, baseline_test)", file=sys.stderr)
        return 2
    print(json.dumps({"aggregate": _aggregate(rows)}), flush=True)
    return 0


def _spread(vals) -> dict:
    import numpy as np

    return {"mean": float(np.mean(vals)), "spread": float(np.ptp(vals)),
            "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0}


def done_when(agg: dict) -> dict:
    """Issue 15's done-when on one ratio's aggregate: the mean gain of the pick over the baseline
    against the spread across label draws, read both ways — as standard deviations and as ranges
    (max − min) of the picked accuracy, the baseline's and the paired gain."""
    out = {"margin": agg["gain"]["mean"]}
    for how in ("sd", "spread"):
        worst = max(agg[k][how] for k in ("best_test", "baseline_test", "gain"))
        out[f"largest_{how}"] = worst
        out[f"holds_as_{how}"] = bool(agg["gain"]["mean"] > worst)
    return out


def _aggregate(rows: list[dict]) -> list[dict]:
    import numpy as np

    out = []
    for ratio in sorted({r["ratio"] for r in rows}):
        tags = {r["run"] for r in rows if r["ratio"] == ratio}
        for tag in sorted(tags, key=lambda t: (t != "off", t != "on", t)):  # off, on, then any other run's tag
            sel = [r for r in rows if r["ratio"] == ratio and r["run"] == tag]
            agg = {"ratio": ratio, "run": tag, "draws": len(sel)}
            for key in ("best_test", "baseline_test", "best_pseudo", "best_shift", "baseline_shift", "seconds"):
                vals = [r[key] for r in sel if r.get(key) is not None]
                if vals:
                    agg[key] = _spread(vals)
            gains = [r["best_test"] - r["baseline_test"] for r in sel]
            # paired per draw: the draw's own difficulty moves the pick and the baseline together
            agg["gain"] = {**_spread(gains), "min": float(np.min(gains)), "per_draw": [float(g) for g in gains]}
            agg["done_when"] = done_when(agg)
            out.append(agg)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
