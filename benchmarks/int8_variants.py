"""Does a different int8 recipe hold on real photos with few labels? Agreement of the guard's classifier.

Takes one draw of ``real_photos.py`` (its dataset folder and the extractor training shipped for it) and
measures, for int8 variants of that extractor, what the training guard measures: the share of images whose
labeled-only logistic regression (fitted on float32 features) predicts the same class from int8 features,
over every labeled image and a seeded sample of the pool; plus the features' cosine to float32 and the times.
Variants: the training recipe (64 calibration images, first 2 convolutions in float32), 256 calibration
images, the last 1 or 3 convolutions also in float32.

    python benchmarks/int8_variants.py --data /tmp/real-photos/k3-d0 \\
        --extractor /tmp/real-photos/models-k3-d0/feature_extractor.pth [--store /tmp/real-photos/store] [--pool 557]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.real_photos import add_draw_arguments, read_draw  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_draw_arguments(p)
    p.add_argument("--pool", type=int, default=557, help="pool images compared besides the labeled ones")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    import onnx

    from src.core.store import Store, sha256_file
    from src.features import onnx_runtime as orx
    from src.features.extraction import _Serial, extract, load_batch
    from src.features.int8_calibration import calibration_sample
    from src.learning.semi_supervised import fit_baseline

    fp32 = orx.ensure_onnx(a.extractor, sha256_file(a.extractor), Store(a.store) if a.store else None)
    classes, labeled, y, pool = read_draw(a.data)
    sample = [pool[i] for i in np.random.default_rng(0).choice(len(pool), min(a.pool, len(pool)), replace=False)]
    paths = labeled + sample
    ex32 = orx.OrtExtractor(fp32, "float32")
    F32 = extract(ex32, paths, progress=False)
    clf = fit_baseline(F32[:len(y)], y, 0)
    p32 = clf.predict(F32)
    every = labeled + pool
    marks = np.concatenate([y, np.full(len(pool), -1)])
    convs = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]
    first = orx._first_convs
    print(f"{len(y)} labeled + {len(sample)} pool images, {len(classes)} classes")
    for name, n_cal, last in (("training recipe", 64, 0), ("256 calibration images", 256, 0),
                              ("last conv float32", 64, 1), ("last 3 convs float32", 64, 3)):
        orx._first_convs = lambda path, n, last=last: first(path, n) + (convs[-last:] if last else [])
        batch = load_batch([every[i] for i in calibration_sample(marks, marks >= 0, n=n_cal, seed=42)],
                           ex32.preprocessing, _Serial)
        out = Path(f"/tmp/int8-variant-{n_cal}-{last}.onnx")
        t0 = time.perf_counter()
        orx.quantize_int8(fp32, ex32.preprocessing, out, batch=batch)
        tq = time.perf_counter() - t0
        t0 = time.perf_counter()
        F8 = extract(orx.OrtExtractor(out, name), paths, progress=False)
        te = time.perf_counter() - t0
        cos = (F8 * F32).sum(1) / np.linalg.norm(F8, axis=1) / np.linalg.norm(F32, axis=1)
        print(f"{name:24s} agreement {(clf.predict(F8) == p32).mean():.4f}  cosine mean {cos.mean():.4f} "
              f"min {cos.min():.4f}  quantise {tq:.1f} s  extract {len(paths) / te:.0f} img/s", flush=True)
        out.unlink(missing_ok=True)
    orx._first_convs = first
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
