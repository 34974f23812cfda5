"""The int8 export's activation ranges: ONNX Runtime's own MinMax calibration, on an optimised session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from src.features.int8_ranges import BATCH, write_activation_ranges

onnx = pytest.importorskip("onnx")


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.pw = nn.Conv2d(8, 16, 1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)

    def forward(self, x):
        h = nn.functional.relu6(self.dw(nn.functional.relu6(self.pw(nn.functional.relu6(self.stem(x))))))
        return h.mean((2, 3))


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ranges") / "net.onnx"
    torch.onnx.export(_Net().eval(), (torch.zeros(1, 3, 32, 32),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17)
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(40, 3, 32, 32)) * rng.uniform(0.5, 3, size=(40, 1, 1, 1))).astype(np.float32)
    return path, batch


def _ranges(path):
    from onnxruntime.quantization.calibrate import load_tensors_data

    return {k: tuple(float(np.ravel(v)[0]) for v in t.range_value) for k, t in load_tensors_data(path).data.items()}


def test_the_ranges_are_onnx_runtimes_own_calibration(export, tmp_path):
    """The same tensors and, within float32 rounding, the same ranges as ONNX Runtime's calibrator (graph
    optimisations off, as quantize_static runs it); the input's range is each batch's min/max, averaged."""
    from onnxruntime.quantization.calibrate import (CalibrationDataReader, CalibrationMethod, create_calibrator,
                                                    save_tensors_data)
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    path, batch = export
    ours = tmp_path / "ours.json"
    write_activation_ranges(path, batch, "x", ours)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter([{"x": batch[i:i + BATCH]} for i in range(0, len(batch), BATCH)])

        def get_next(self):
            return next(self._it, None)

    ops = list(set(QLinearOpsRegistry) | set(QDQRegistry))
    calibrator = create_calibrator(path, ops, augmented_model_path=str(tmp_path / "aug.onnx"),
                                   calibrate_method=CalibrationMethod.MinMax, extra_options={"moving_average": True})
    calibrator.collect_data(Reader())
    save_tensors_data(calibrator.compute_data(), tmp_path / "ort.json")
    a, b = _ranges(ours), _ranges(tmp_path / "ort.json")
    assert a.keys() == b.keys() and "x" in a and len(a) >= 6
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    chunks = [batch[i:i + BATCH] for i in range(0, len(batch), BATCH)]  # 16, 16, 8 images
    expected = (np.mean([c.min() for c in chunks]), np.mean([c.max() for c in chunks]))
    np.testing.assert_allclose(a["x"], expected, rtol=1e-6)
    assert a["x"][0] > batch.min() and a["x"][1] < batch.max()  # averaged, not the global extremes
