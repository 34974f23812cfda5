"""int8 extraction calibrated on the user's own images, portable through the model bundle.

The int8 export's activation ranges come from a fixed, seeded sample of the training images
(:func:`calibration_sample`: round-robin across the classes of the labeled images, topped up
with unlabeled ones), not from the generic synthetic set of :func:`~src.features.onnx_runtime.
calibration_batch`. The calibration set is named by its digest (:func:`calibration_digest`:
the sample's image digests, the preprocessing and the recipe), and the cache files carry both
digests: ``<store>/onnx/<extractor digest>-<size>-int8-<calibration digest[:16]>.onnx`` and
``….ranges.json`` (the activation ranges, a few tens of kB). The ranges also travel in each
model bundle (``int8_calibration``), so a predictor on another machine or store rebuilds the
very same int8 model without the training images. Features get their own cache key
(``<extractor key>:<recipe>:<calibration digest[:16]>``).

The rounding of the weights (:mod:`src.features.gptq`) is fitted on the same sample and recorded next
to the ranges (``….rounding.json``, ~0.58 MB: what changed against nearest rounding, compressed); it
travels in the bundle too (``int8_calibration["rounding"]``).

Measured on real photos at 3 labels per class (Grocery Store Dataset, 243 labeled + 2,397 pool photos,
3 draws; benchmarks/README.md, G5, ``benchmarks/int8_rounding.py``): the guard's agreement over all
2,640 photos with nearest rounding on 64 images was 0.9845 / 0.9678 / 0.9799; with GPTQ on 128 images and
batch-averaged ranges 0.9924 / 0.9894 / 0.9943 (feature SQNR to float32 22.9 / 21.0 / 23.6 → 30.1 / 29.9 /
29.5 dB), and in training the guard accepted int8 in all three. 128 images rather than 64 (measured before
the ranges were averaged): agreement 0.9936 / 0.9947 / 0.9951 against 0.9898 / 0.9928 / 0.9905, at the same
SQNR, so the gain is within the agreement's noise but never a loss. Quantisation takes 5.9–6.4 s on 2 cores
at 224 px (2.4 s with nearest rounding on 64 images).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from src.core.paths import write_text_atomic
from src.core.store import Store
from src.features.onnx_runtime import INT8_RECIPE, OrtExtractor, cached_onnx, ensure_onnx, quantize_int8

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 128  # the last layers' input statistics need them (measured above)
CALIBRATION_RECIPE = f"{INT8_RECIPE}:user-images-v3"  # v3: depthwise moments on a 7 × 7 grid


def calibration_sample(labels: np.ndarray, labeled: np.ndarray, n: int = CALIBRATION_IMAGES,
                       seed: int = 0) -> np.ndarray:
    """Indices of a fixed, seeded calibration sample: labeled images round-robin across their classes
    (shuffled within each class), then unlabeled ones at random until ``n`` (all images when fewer)."""
    rng = np.random.default_rng([seed, 8])
    labels, labeled = np.asarray(labels), np.asarray(labeled, dtype=bool)
    per_class = [list(rng.permutation(np.flatnonzero(labeled & (labels == c)))) for c in np.unique(labels[labeled])]
    picked: list[int] = []
    while len(picked) < n and any(per_class):
        for queue in per_class:
            if queue and len(picked) < n:
                picked.append(int(queue.pop(0)))
    rest = rng.permutation(np.flatnonzero(~labeled))
    picked += [int(i) for i in rest[:max(0, n - len(picked))]]
    return np.array(picked, dtype=np.int64)


def calibration_digest(image_digests: Sequence[str], preprocessing_key: str) -> str:
    """Names the calibration set: its images (in order), the preprocessing and the recipe."""
    text = json.dumps({"images": list(image_digests), "preprocessing": preprocessing_key,
                       "recipe": CALIBRATION_RECIPE}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def calibrated_paths(store: Store, extractor_digest: str, image_size: int, calib_digest: str
                     ) -> tuple[Path, Path, Path]:
    """(int8 export, activation ranges, weight rounding) for one extractor and one calibration set."""
    stem = f"{extractor_digest}-{image_size}-int8-{calib_digest[:16]}"
    folder = store.root / "onnx"
    return folder / f"{stem}.onnx", folder / f"{stem}.ranges.json", folder / f"{stem}.rounding.json"


def _cached(store: Store, extractor_digest: str, calib_digest: str) -> Path | None:
    folder = store.root / "onnx"
    pattern = re.compile(rf"{re.escape(extractor_digest)}-\d+-int8-{re.escape(calib_digest[:16])}\.onnx")
    hits = sorted(p for p in folder.glob(f"{extractor_digest}-*-int8-*.onnx") if pattern.fullmatch(p.name)) \
        if folder.is_dir() else []
    return hits[0] if hits else None


def _attach(path: Path, extractor_digest: str, calibration: dict[str, Any]) -> OrtExtractor:
    ext = OrtExtractor(path, key="")
    ext.key = f"{extractor_digest}:{ext.preprocessing.key()}:{INT8_RECIPE}:{calibration['digest'][:16]}"
    ext.precision = "int8"
    ext.calibration = calibration
    return ext


def calibrate_int8(extractor_path: str | os.PathLike, extractor_digest: str, paths: Sequence[Path],
                   image_digests: Sequence[str], store: Store | None = None) -> OrtExtractor:
    """The int8 extractor calibrated on ``paths`` (cached per extractor and calibration set)."""
    from src.features.extraction import decode_workers, load_batch

    store = store or Store()
    fp32 = cached_onnx(extractor_digest, store) or ensure_onnx(extractor_path, extractor_digest, store)
    pre = OrtExtractor(fp32, key="", threads=1).preprocessing
    calib = calibration_digest(image_digests, pre.key())
    qpath, ranges, rounding = calibrated_paths(store, extractor_digest, pre.image_size, calib)
    if not qpath.is_file() or not rounding.is_file():
        from concurrent.futures import ThreadPoolExecutor

        log.info("calibrating int8 on %d of the user's images (%s)", len(paths), qpath.name)
        with ThreadPoolExecutor(decode_workers()) as pool:
            batch = load_batch([Path(p) for p in paths], pre, pool)
        quantize_int8(fp32, pre, qpath, batch=batch, ranges_path=ranges, rounding_path=rounding)
    return _attach(qpath, extractor_digest, {"digest": calib, "images": len(paths), "recipe": CALIBRATION_RECIPE,
                                             "ranges": ranges.read_text(), "rounding": rounding.read_text()})


def load_calibrated_int8(extractor_path: str | os.PathLike, extractor_digest: str, calibration: dict[str, Any],
                         store: Store | None = None) -> OrtExtractor:
    """The int8 extractor a model was trained with, from the cache or rebuilt from its recorded ranges."""
    store = store or Store()
    calib = str(calibration["digest"])
    path = _cached(store, extractor_digest, calib)
    if path is None:
        fp32 = cached_onnx(extractor_digest, store) or ensure_onnx(extractor_path, extractor_digest, store)
        pre = OrtExtractor(fp32, key="", threads=1).preprocessing
        path, ranges, rounding = calibrated_paths(store, extractor_digest, pre.image_size, calib)
        write_text_atomic(ranges, calibration["ranges"])
        if calibration.get("rounding"):  # absent in records made before GPTQ: nearest rounding, as then
            write_text_atomic(rounding, calibration["rounding"])
        log.info("rebuilding the model's int8 extractor from its recorded calibration (%s)", path.name)
        quantize_int8(fp32, pre, path, ranges_path=ranges, rounding_path=rounding)
    return _attach(path, extractor_digest, dict(calibration))
