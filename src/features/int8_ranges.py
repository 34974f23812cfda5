"""The activation ranges of the int8 export: ONNX Runtime's MinMax calibration, on an optimised session.

ONNX Runtime's calibrator adds a ReduceMin and a ReduceMax after every tensor the quantiser will
quantise, runs the batches through and averages each batch's minimum and maximum (``CalibMovingAverage``).
It runs that graph with every graph optimisation off; the same graph with them on (NCHWc convolutions,
the reductions keep every tensor they read) gives the same ranges within float32 rounding (relative
difference ≤ 2e-7 on real photos) in 60 % of the time (benchmarks/README.md, T11). The calibrator's own
classes select the tensors and build the graph, so the ranges name exactly the tensors
``quantize_static`` looks up in the file written here (its ``calibration_cache_path``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

BATCH = 16  # images per calibration batch: each batch's minimum and maximum are averaged


def write_activation_ranges(model_path: str | os.PathLike, batch: np.ndarray, input_name: str,
                            ranges_path: str | os.PathLike) -> None:
    """Calibrate the model at ``model_path`` on ``batch`` (NHWC float32) and write its ranges to ``ranges_path``
    in ONNX Runtime's calibration-cache format."""
    import onnxruntime as ort
    from onnxruntime.quantization.calibrate import CalibrationDataReader, MinMaxCalibrater, save_tensors_data
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{input_name: batch[i:i + BATCH]} for i in range(0, len(batch), BATCH)])

        def get_next(self):
            return next(self._it, None)

    ops = sorted(set(QLinearOpsRegistry) | set(QDQRegistry))  # quantize_static's default op types
    with tempfile.TemporaryDirectory(prefix="int8-ranges-") as tmp:
        augmented = Path(tmp) / "augmented.onnx"
        calibrator = MinMaxCalibrater(str(model_path), ops, augmented_model_path=str(augmented), moving_average=True)
        calibrator.augment_graph()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        calibrator.infer_session = ort.InferenceSession(str(augmented), opts, providers=["CPUExecutionProvider"])
        calibrator.collect_data(Reader())
        save_tensors_data(calibrator.compute_data(), ranges_path)
