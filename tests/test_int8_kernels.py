"""int8 weights as uint8 where ONNX Runtime's U8S8 kernels saturate (x86 without VNNI): the same real weights."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from src.features import int8_kernels


def _qdq_conv(weights: np.ndarray, scale: np.ndarray) -> onnx.ModelProto:
    """x (float) → Conv whose weights come through DequantizeLinear from per-channel int8."""
    inits = [numpy_helper.from_array(weights, "w_q"), numpy_helper.from_array(scale, "w_scale"),
             numpy_helper.from_array(np.zeros(len(scale), dtype=np.int8), "w_zp")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["w"], axis=0),
             helper.make_node("Conv", ["x", "w"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: bytes, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(["y"], {"x": x})[0]


@pytest.fixture()
def model():
    rng = np.random.default_rng(0)
    return _qdq_conv(rng.integers(-127, 128, size=(4, 2, 3, 3)).astype(np.int8), np.array([0.01, 0.02, 0.5, 1e-3],
                                                                                              dtype=np.float32))


def test_unsigned_weights_are_the_same_real_weights(model):
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert int8_kernels.unsigned_weights(model) == 1
    after = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert after["w_q"].dtype == np.uint8 and after["w_zp"].tolist() == [128] * 4
    real = lambda q, zp, s: (q.astype(np.float64) - zp.reshape(-1, 1, 1, 1)) * s.reshape(-1, 1, 1, 1)  # noqa: E731
    np.testing.assert_array_equal(real(after["w_q"], after["w_zp"], after["w_scale"]),
                                  real(before["w_q"], before["w_zp"], before["w_scale"]))
    assert int8_kernels.unsigned_weights(model) == 0  # already unsigned: nothing to do


def test_runnable_converts_only_where_the_kernels_saturate(model, monkeypatch, tmp_path):
    x = np.random.default_rng(1).normal(size=(1, 2, 3, 3)).astype(np.float32)
    raw = model.SerializeToString()
    monkeypatch.setenv(int8_kernels.OVERRIDE, "0")
    assert int8_kernels.runnable(raw) is raw and int8_kernels.runnable("any/path.onnx") == "any/path.onnx"
    monkeypatch.setenv(int8_kernels.OVERRIDE, "1")
    converted = int8_kernels.runnable(raw)
    assert converted != raw
    np.testing.assert_allclose(_run(converted, x), _run(raw, x), rtol=1e-5, atol=1e-6)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert isinstance(int8_kernels.runnable(str(path)), bytes)
    float_model = tmp_path / "f.onnx"  # nothing quantised: the path itself, no copy
    onnx.save(helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])),
              str(float_model))
    assert int8_kernels.runnable(str(float_model)) == str(float_model)


def test_the_cpu_check_reads_the_vnni_flags(monkeypatch, tmp_path):
    monkeypatch.delenv(int8_kernels.OVERRIDE, raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(int8_kernels.platform, "machine", lambda: "x86_64")
    real_path = int8_kernels.Path
    monkeypatch.setattr(int8_kernels, "Path", lambda p: cpuinfo if p == "/proc/cpuinfo" else real_path(p))
    for flags, saturates in (("fpu avx avx2 fma", True), ("fpu avx2 avx512f avx512_vnni", False),
                             ("fpu avx2 avx_vnni", False)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        int8_kernels._cpu_saturates.cache_clear()
        assert int8_kernels.saturates() is saturates, flags
    monkeypatch.setattr(int8_kernels.platform, "machine", lambda: "aarch64")
    int8_kernels._cpu_saturates.cache_clear()
    assert int8_kernels.saturates() is False
    int8_kernels._cpu_saturates.cache_clear()
