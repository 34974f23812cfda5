"""Batch monitoring: a sample of a folder of images through the monitor, and its summary."""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.core.errors import DataError, GroceryError, ModelError
from src.core.paths import DEFAULT_DATA_DIR
from src.monitoring.monitor import DriftDetected, InferenceMonitor, check_settings, score_text
from src.monitoring.settings import DEFAULTS

log = logging.getLogger(__name__)


def sample_images(test_dir: str | os.PathLike, n: int, seed: int) -> list[tuple[Path, str | None]]:
    """(path, true label) pairs: an ImageFolder split gives labels, a flat folder gives none.

    Walked as training walks a split (:func:`src.data.walk.walk`, no recursion: ``rglob`` raised
    ``RecursionError`` ~1,000 folders deep): a folder nested over 100 levels below its class folder,
    one that cannot be read or a path over the system's limit is the same one-line refusal (exit 2),
    naming the path; links leading outside ``test_dir`` are left out."""
    from src.core.images import is_image_name
    from src.data.walk import MAX_DEPTH, shown, walk, walk_problem

    root = Path(test_dir)
    if not root.is_dir():
        raise DataError(f"test folder {root} does not exist", hint="pass `test_dir=DIR`", params=("test_dir",))
    notes: list[str] = []
    found = walk(root, root, Path(os.path.realpath(root)), notes, max_depth=MAX_DEPTH + 1)  # +1: class folders
    for kind, _, where in (n.partition(":") for n in notes):
        problem = walk_problem(f"{kind}:{root / where}")
        if problem:
            raise problem
    links = [n.partition(":")[2] for n in notes if n.startswith("outside_link:")]
    if links:
        log.warning("left out %d link(s) leading outside %s (e.g. %s); they are never read", len(links), root,
                    shown(links[0]))
    items = [(p, p.parent.name if p.parent != root else None) for p, _ in sorted(found)
             if p.is_file() and is_image_name(p) and not p.name.startswith(".")]
    if not items:
        raise DataError(f"no images in {root}", hint="pass a folder of images or class folders of images")
    random.Random(seed).shuffle(items)
    return items[:n] if n else items


@dataclass(frozen=True)
class BatchOptions:
    """One batch monitoring session: which model, which images, how drift is judged."""

    model: str
    test_dir: str = f"{DEFAULT_DATA_DIR}/test"
    extractor_path: str | None = None
    n_samples: int = 200
    window: int = DEFAULTS.window
    alpha: float = DEFAULTS.alpha
    seed: int = 0
    run_name: str | None = None
    store: str | None = None
    wandb_mode: str | None = None
    progress: bool = True
    runtime: str = "auto"  # feature extraction; auto follows the model's extractor precision


def run_batch(o: BatchOptions) -> dict[str, Any]:
    """Monitor a sample of ``o.test_dir``; unreadable images are skipped and listed in ``summary["skipped"]``."""
    from src.core.progress import progress_bar

    check_settings(o.window, o.alpha, 1)
    if o.n_samples < 0:
        raise DataError(f"`n_samples` must be >= 0, got {o.n_samples}", params=("n_samples",))
    items = sample_images(o.test_dir, o.n_samples, o.seed)
    mon = InferenceMonitor(o.model, o.extractor_path, store=o.store, wandb_mode=o.wandb_mode,
                           window=o.window, alpha=o.alpha, run_name=o.run_name, seed=o.seed, runtime=o.runtime)
    known = set(mon.predictor.class_names)
    unmatched = sorted({label for _, label in items if label is not None and label not in known})
    if unmatched:
        log.warning("test folders %s are not classes of the model (%s): their images are monitored without "
                    "labels", ", ".join(unmatched), ", ".join(mon.predictor.class_names))
    skipped: list[dict[str, str]] = []
    try:
        for path, label in progress_bar(items, progress=o.progress, minimum=50, desc="monitoring", unit="img"):
            try:
                mon.predict(path, label if label in known else None)
            except DataError as e:  # one unreadable image must not end the batch
                log.info("skipped %s: %s", path, e)
                skipped.append({"image": str(path), "error": str(e)})
    except BaseException as e:
        mon.abort(f"{type(e).__name__}: {e}", exit_code=130 if isinstance(e, KeyboardInterrupt) else 1)  # never masks it
        raise
    summary = mon.finish()
    summary["skipped"] = skipped
    return summary


def format_summary(s: dict[str, Any]) -> str:
    lat, d = s["latency"], s.get("drift")
    lines = [f"model {s['model']}  ({s['monitor/samples']} images, session {s['session']})",
             f"accuracy            {s['monitor/accuracy']:.4f}" if "monitor/accuracy" in s else "accuracy            - (no labels)",
             f"avg confidence      {s['monitor/avg_confidence']:.4f}",
             f"latency p50/p95/p99 {lat['p50_ms']:.1f} / {lat['p95_ms']:.1f} / {lat['p99_ms']:.1f} ms "
             f"(without decode {lat['inference_p50_ms']:.1f} / {lat['inference_p95_ms']:.1f} / {lat['inference_p99_ms']:.1f} ms)",
             f"throughput          {s['monitor/throughput_samples_per_sec']:.1f} images/s"]
    if d:
        verdict = "DRIFT in " + ", ".join(d["drifted"]) if d["is_drift"] else "no drift"
        sig = "; ".join(f"{k} p={v['p_val']:.4f}" if v["p_val"] is not None else f"{k} unavailable"
                        for k, v in d["signals"].items())
        lines.append(f"drift               {verdict} (score {score_text(d['drift_score'])}, window {d['n']}, {sig})")
    if s.get("skipped"):
        lines.append(f"skipped             {len(s['skipped'])} unreadable: "
                     + ", ".join(Path(x["image"]).name for x in s["skipped"]))
    if s.get("wandb_run"):
        lines.append(f"W&B run             {s['wandb_run']}")
    return "\n".join(lines)


def default_model() -> str:
    """The best model of the last training run in ``models/``."""
    results = Path("models/training_results.json")
    if not results.is_file():
        raise ModelError("no `model` given and models/training_results.json does not exist",
                         hint="train first (python src/train_with_wandb.py) or pass `model=PATH`", params=("model",))
    from src.learning.bundles import model_file_name

    record = json.loads(results.read_text())
    best = record["summary"]["best_algorithm"]
    info = (record.get("algorithms") or {}).get(best) if isinstance(record.get("algorithms"), dict) else None
    recorded = info.get("model_path") if isinstance(info, dict) else None  # an old record names a .pkl
    return str(results.parent / (recorded if isinstance(recorded, str) and recorded else model_file_name(best)))


def outcome_error(summary: dict[str, Any], fail_on_drift: bool) -> GroceryError | None:
    """The error a batch ends with: unreadable images (exit 2), or drift with ``--fail-on-drift`` (exit 6)."""
    drift = fail_on_drift and summary.get("drift", {}).get("is_drift")
    if summary["skipped"]:
        names = [Path(x["image"]).name for x in summary["skipped"]]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        also = f"; also drift detected in {', '.join(summary['drift']['drifted'])}" if drift else ""
        return DataError(f"{len(names)} of {len(names) + summary['monitor/samples']} images could not be read and "
                         f"were skipped: {', '.join(names[:5])}{more} (first: {summary['skipped'][0]['error']}){also}")
    if drift:
        return DriftDetected(f"drift detected in {', '.join(summary['drift']['drifted'])} "
                             f"(score {score_text(summary['drift']['drift_score'])}, "
                             f"p={summary['drift']['p_val']:.4f})", hint="see `alerts`", params=("alerts",))
    return None
