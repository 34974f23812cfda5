"""Where int8 loses fidelity on real photos, and what GPTQ rounding gives back (G5 in benchmarks/README.md).

Takes one draw of ``real_photos.py`` (its dataset folder and the extractor training shipped for it) and
measures, over every labeled and pool photo, what the training guard measures: the share of photos whose
labeled-only logistic regression (fitted on float32 features) predicts the same class from the variant's
features, next to the features' SQNR to float32 (10·log10 of signal over error power, in dB):

- ``nearest 64`` — the recipe before D30: nearest rounding, min-max ranges on 64 calibration images;
- ``weights only: nearest`` / ``weights only: GPTQ`` — int8 weights, float32 activations (the float32
  graph with its weights replaced by their int8 values): what the weights alone cost;
- ``int8 activations, 16-bit weights`` — what the activations alone cost (slow: ORT computes it in float);
- ``training recipe`` — :func:`src.features.onnx_runtime.quantize_int8` on the 128 calibration images
  training uses: GPTQ rounding, batch-averaged ranges.

    python benchmarks/int8_rounding.py --data /tmp/real-photos/k3-d0 \\
        --extractor /tmp/real-photos/models-k3-d0/feature_extractor.pth [--store /tmp/real-photos/store]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
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
    p.add_argument("--skip-16bit", action="store_true", help="leave out the slow 16-bit-weights variant")
    a = p.parse_args(argv)
    warnings.simplefilter("ignore")
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from src.core.store import Store, sha256_file
    from src.features import gptq
    from src.features import onnx_runtime as orx
    from src.features.extraction import _Serial, extract, load_batch
    from src.features.int8_calibration import CALIBRATION_IMAGES, calibration_sample
    from src.learning.semi_supervised import fit_baseline

    fp32 = orx.ensure_onnx(a.extractor, sha256_file(a.extractor), Store(a.store) if a.store else None)
    ex32 = orx.OrtExtractor(fp32, "float32")
    pre = ex32.preprocessing
    classes, labeled, y, pool = read_draw(a.data)
    paths = labeled + pool
    marks = np.concatenate([y, np.full(len(pool), -1)])
    F32 = extract(ex32, paths, progress=False)
    clf = fit_baseline(F32[:len(y)], y, 0)
    p32 = clf.predict(F32)
    print(f"{len(y)} labeled + {len(pool)} pool photos, {len(classes)} classes")

    def batch(n):
        return load_batch([paths[i] for i in calibration_sample(marks, marks >= 0, n=n, seed=42)], pre, _Serial)

    def report(name, path, seconds=None):
        t0 = time.perf_counter()
        F = extract(orx.OrtExtractor(path, name), paths, progress=False)
        rate = len(paths) / (time.perf_counter() - t0)
        sqnr = 10 * np.log10((F32 ** 2).sum() / ((F - F32) ** 2).sum())
        took = f"  quantise {seconds:.1f} s" if seconds is not None else ""
        print(f"{name:36s} agreement {(clf.predict(F) == p32).mean():.4f}  SQNR {sqnr:5.2f} dB  "
              f"extract {rate:.0f} img/s{took}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        prepped = tmp / "pre.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            quant_pre_process(str(fp32), str(prepped), skip_symbolic_shape=True)
        exclude = orx._first_convs(prepped, orx.FLOAT_CONVS)

        def static(model_path, cal, out, **kw):
            class Reader(CalibrationDataReader):
                def __init__(self):
                    self._it = iter([{orx.INPUT_NAME: cal[i:i + 16]} for i in range(0, len(cal), 16)])

                def get_next(self):
                    return next(self._it, None)

            raw = tmp / "raw.onnx"
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                quantize_static(str(model_path), str(raw), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude, **kw)
            orx._publish(raw, pre, out)
            return time.perf_counter() - t0

        cal64 = batch(64)
        s = static(prepped, cal64, tmp / "v2.onnx", activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        report("nearest 64 (the recipe before D30)", tmp / "v2.onnx", s)

        base = onnx.load(str(prepped))
        for name, ints in (("weights only: nearest", {n.input[1]: gptq.nearest(
                               onnx.numpy_helper.to_array(next(i for i in base.graph.initializer if i.name == n.input[1])))
                               for n, _ in gptq.rounded_convs(base, set(exclude))}),
                           ("weights only: GPTQ", gptq.round_model(base, batch(CALIBRATION_IMAGES), orx.INPUT_NAME,
                                                                   skip=set(exclude)))):
            model = onnx.ModelProto()
            model.CopyFrom(base)
            gptq.apply(model, ints)
            onnx.save(model, str(tmp / "w.onnx"))
            orx._publish(tmp / "w.onnx", pre, tmp / "weights.onnx")
            report(name, tmp / "weights.onnx")

        if not a.skip_16bit:
            s = static(prepped, cal64, tmp / "w16.onnx", activation_type=QuantType.QUInt8,
                       weight_type=QuantType.QInt16, extra_options={"UseQDQContribOps": True})
            report("int8 activations, 16-bit weights", tmp / "w16.onnx", s)

        cal = batch(CALIBRATION_IMAGES)
        t0 = time.perf_counter()
        orx.quantize_int8(fp32, pre, tmp / "v3.onnx", batch=cal)
        report(f"training recipe (GPTQ, {CALIBRATION_IMAGES} images)", tmp / "v3.onnx", time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
