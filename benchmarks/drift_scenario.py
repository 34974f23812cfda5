"""Issue 6 scenario: same-style images raise no drift, other-style images do.

Uses the trained default model (``make run`` first, or it trains one), monitors the 400
DS2GROCERIES test images, then the same 400 redrawn in another style (grayscale contour
sketch, or ``--style posterize``), and prints both verdicts as JSON.

    python benchmarks/drift_scenario.py [--model models/label_spreading_model.skops]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from PIL import Image, ImageFilter, ImageOps

STYLES = {
    "sketch": lambda im: ImageOps.grayscale(im).filter(ImageFilter.CONTOUR).convert("RGB"),
    "posterize": lambda im: ImageOps.posterize(ImageOps.invert(im), 2),
}


def restyle(src: Path, dst: Path, style: str) -> Path:
    for p in src.rglob("*.jpg"):
        out = dst / p.parent.name / p.name
        out.parent.mkdir(parents=True, exist_ok=True)
        STYLES[style](Image.open(p).convert("RGB")).save(out, quality=90)
    return dst


def monitor(model: str, test_dir: Path, store: Path) -> dict:
    from src.inference_monitor import InferenceMonitor, sample_images

    mon = InferenceMonitor(model, store=store, wandb_mode="disabled", window=400)
    for path, label in sample_images(test_dir, 400, seed=0):
        mon.predict(path, label)
    s = mon.finish()
    d = s["drift"]
    return {"accuracy": s.get("monitor/accuracy"), "avg_confidence": s["monitor/avg_confidence"],
            "latency_p50_ms": s["latency"]["p50_ms"], "inference_p50_ms": s["latency"]["inference_p50_ms"],
            "throughput": s["monitor/throughput_samples_per_sec"], "is_drift": d["is_drift"],
            "drift_score": d["drift_score"], "drifted": d["drifted"],
            "p_values": {k: v["p_val"] for k, v in d["signals"].items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/label_spreading_model.skops")
    ap.add_argument("--data-dir", default="DS2GROCERIES")
    ap.add_argument("--style", choices=sorted(STYLES), default="sketch")
    a = ap.parse_args()
    if not Path(a.model).is_file():
        from src.train_with_wandb import train_with_wandb

        train_with_wandb(data_dir=a.data_dir, wandb_mode="disabled", progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        same = monitor(a.model, Path(a.data_dir) / "test", tmp / "store")
        other = monitor(a.model, restyle(Path(a.data_dir) / "test", tmp / a.style, a.style), tmp / "store")
    print(json.dumps({"same_style": same, f"other_style_{a.style}": other}, indent=2))


if __name__ == "__main__":
    main()
