"""GPTQ rounding of the int8 weights: smaller layer error than nearest rounding, the quantiser's own grid,
and a record that rebuilds the same int8 model without the calibration images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from src.features import gptq

onnx = pytest.importorskip("onnx")


class _Tiny(nn.Module):
    """stem (full 3×3, left to nearest rounding) → pointwise → ReLU6 → depthwise stride 2 → pointwise."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.pw = nn.Conv2d(8, 24, 1)
        self.dw = nn.Conv2d(24, 24, 3, stride=2, padding=1, groups=24)
        self.pwl = nn.Conv2d(24, 12, 1)

    def forward(self, x):
        return self.pwl(nn.functional.relu6(self.dw(nn.functional.relu6(self.pw(nn.functional.relu6(self.stem(x)))))))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.manual_seed(0)
    net = _Tiny().eval()
    with torch.no_grad():  # a few large weights per row, as fine-tuned layers have
        for conv in (net.pw, net.dw, net.pwl):
            conv.weight.mul_(1 + 6 * (torch.rand_like(conv.weight) > 0.97))
    path = tmp_path_factory.mktemp("gptq") / "tiny.onnx"
    torch.onnx.export(net, (torch.zeros(1, 3, 16, 16),), str(path), dynamo=False, input_names=["x"],
                      output_names=["y"], dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, opset_version=17)
    rng = np.random.default_rng(0)
    batch = (rng.normal(size=(20, 3, 16, 16)) + rng.normal(size=(20, 3, 1, 1))).astype(np.float32)
    return onnx.load(str(path)), batch


def _weights(model):
    from onnx import numpy_helper

    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def test_rounds_pointwise_and_depthwise_convolutions_only(tiny):
    model, _ = tiny
    kinds = [kind for _, kind in gptq.rounded_convs(model)]
    assert kinds == ["pointwise", "depthwise", "pointwise"]  # the full 3×3 stem is left to nearest rounding
    first = next(n.name for n in model.graph.node if n.op_type == "Conv")
    assert len(gptq.rounded_convs(model, skip={first})) == 3


def test_layer_error_is_smaller_than_nearest_rounding_on_the_calibration_images(tiny):
    model, batch = tiny
    convs = gptq.rounded_convs(model)
    moments = gptq.input_moments(model, batch, convs, "x")
    ints = gptq.round_model(model, batch, "x")
    w = _weights(model)
    for node, kind in convs:
        W = w[node.input[1]]
        rows = W.reshape(W.shape[0], -1).astype(np.float64)
        scale = np.abs(rows).max(1, keepdims=True) / 127
        H = moments[node.name]
        assert H.shape == ((rows.shape[1],) * 2 if kind == "pointwise" else (W.shape[0], 9, 9))

        def err(q):  # E‖(W − Wq) x‖² over the layer's inputs on the batch
            d = rows - q.reshape(rows.shape) * scale
            return float(np.einsum("oi,ij,oj->", d, H, d) if H.ndim == 2 else np.einsum("oi,oij,oj->", d, H, d))

        ours, nearest = err(ints[node.input[1]]), err(gptq.nearest(W))
        assert ours < 0.8 * nearest, (node.name, ours, nearest)
        q = ints[node.input[1]].reshape(rows.shape[0], -1)
        anchors = q[np.arange(len(q)), np.abs(rows).argmax(1)]
        assert (np.abs(anchors) == 127).all()  # each row's largest weight fixes the grid and stays on it
        assert np.abs(q.astype(int) - gptq.nearest(W).reshape(q.shape)).max() <= 8  # small moves, not new weights


def _explicit_moments(model, batch, convs):
    """E[x xᵀ] from the layers' activations in numpy: patches at the grid the probe uses."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [node.input[0] for node, _ in convs]
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    acts = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(names, {"x": batch})
    out = {}
    for (node, kind), x in zip(convs, acts):
        kh, kw = gptq._weight_dims(model, convs)[node.name][2:4]
        (sh, sw), n = gptq._grid(node, x.shape[2:], (kh, kw), kind)
        top, left, bottom, right = gptq._attrs(node).get("pads", [0, 0, 0, 0])
        x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)))
        rows = range(0, x.shape[2] - kh + 1, sh)
        cols = range(0, x.shape[3] - kw + 1, sw)
        assert len(rows) * len(cols) == n
        patches = np.stack([x[:, :, r:r + kh, c:c + kw].reshape(len(x), x.shape[1], -1) for r in rows for c in cols], 1)
        if kind == "pointwise":  # (images, positions, C, 1)
            v = patches[..., 0].reshape(-1, x.shape[1])
            out[node.name] = v.T @ v / len(v)
        else:
            v = patches.transpose(2, 0, 1, 3).reshape(x.shape[1], -1, kh * kw)
            out[node.name] = np.einsum("cni,cnj->cij", v, v) / v.shape[1]
    return out


@pytest.mark.parametrize("max_side", [3, 14])
def test_moments_measured_inside_the_network_equal_the_activations_own(tiny, monkeypatch, max_side):
    model, batch = tiny
    monkeypatch.setattr(gptq, "MAX_SIDE", max_side)  # 3: a strided grid of positions (16-px layers), 14: all
    monkeypatch.setattr(gptq, "DEPTHWISE_SIDE", 17 - max_side)  # depthwise layers on the other grid
    monkeypatch.setattr(gptq, "CHUNK", 6)             # chunks of unequal size are summed and averaged right
    convs = gptq.rounded_convs(model)
    got, want = gptq.input_moments(model, batch, convs, "x"), _explicit_moments(model, batch, convs)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5 * np.abs(want[name]).max())


def test_the_lazy_block_update_gives_the_column_by_column_integers(tiny, monkeypatch):
    model, batch = tiny
    convs = gptq.rounded_convs(model)
    moments = gptq.input_moments(model, batch, convs, "x")
    w = _weights(model)
    for node, _ in convs:
        rows = w[node.input[1]].reshape(w[node.input[1]].shape[0], -1)
        monkeypatch.setattr(gptq, "BLOCK", 1)      # every error moves the later columns at once
        one = gptq.round_rows(rows, moments[node.name])
        monkeypatch.setattr(gptq, "BLOCK", 5)      # blocks that split the 8 and 24 input channels unevenly
        five = gptq.round_rows(rows, moments[node.name])
        monkeypatch.setattr(gptq, "BLOCK", 128)
        assert (one == five).all() and (five == gptq.round_rows(rows, moments[node.name])).all(), node.name


def test_the_record_gives_back_the_same_integers_and_refuses_another_model(tiny):
    model, batch = tiny
    ints = gptq.round_model(model, batch, "x")
    text = gptq.encode(model, ints)
    back = gptq.decode(model, text)
    assert back.keys() == ints.keys()
    for name in ints:
        np.testing.assert_array_equal(back[name], ints[name])
    other = onnx.ModelProto()
    other.CopyFrom(model)
    other.graph.initializer[-1].name = "renamed"
    name = next(iter(ints))
    victim = next(i for i in other.graph.initializer if i.name == name)
    victim.name = "gone"
    with pytest.raises(ValueError, match="does not have"):
        gptq.decode(other, text)
    import json

    record = json.loads(text)
    with pytest.raises(ValueError, match="version"):
        gptq.decode(model, json.dumps({**record, "version": 99}))
    with pytest.raises(ValueError, match="shorter|longer"):
        gptq.decode(model, json.dumps({**record, "weights": record["weights"][:-1]}))


def test_the_quantiser_keeps_exactly_these_integers_and_a_rebuild_from_the_record_is_identical(tmp_path, monkeypatch):
    """Through quantize_int8 on a real (pretrained, 64-px) export: the int8 weights in the QDQ model are the
    GPTQ integers, features are closer to float32 than with nearest rounding, and the ranges + rounding
    files alone rebuild the same model."""
    from onnx import numpy_helper

    from src.core.store import Store, sha256_file
    from src.features import onnx_runtime as orx
    from src.features.backbone import Preprocessing, create_model, save_extractor
    from src.features.extraction import extract

    pre = Preprocessing.for_size(64)
    ext = tmp_path / "ext.pth"
    save_extractor(create_model(num_classes=0, pretrained=True).eval(), ext, pre)
    fp32 = orx.ensure_onnx(ext, sha256_file(ext), Store(tmp_path / "store"))
    batch = orx.calibration_batch(pre, 16)
    ranges, rounding = tmp_path / "r.ranges.json", tmp_path / "r.rounding.json"
    q1 = orx.quantize_int8(fp32, pre, tmp_path / "q1.onnx", batch=batch, ranges_path=ranges, rounding_path=rounding)
    ints = gptq.decode(onnx.load(str(fp32)), rounding.read_text())
    assert len(ints) >= 40
    stored = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(q1)).graph.initializer}
    w = _weights(onnx.load(str(fp32)))
    rows = regridded = 0
    for name, q in ints.items():
        ours = np.abs(w[name].reshape(len(q), -1)).max(1) / 127
        same = np.isclose(stored[f"{name}_scale"], ours, rtol=1e-5, atol=0)
        # where a row's weights are so small that its bias would overflow int32, ORT widens the row's scale
        assert (np.abs(w[name].reshape(len(q), -1)).max(1)[~same] < 1e-5).all()
        np.testing.assert_array_equal(stored[f"{name}_quantized"][same], q[same])
        rows, regridded = rows + len(q), regridded + int((~same).sum())
    assert regridded < 0.02 * rows
    q2 = orx.quantize_int8(fp32, pre, tmp_path / "q2.onnx", ranges_path=ranges, rounding_path=rounding)
    again = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(q2)).graph.initializer}
    assert again.keys() == stored.keys()
    for name in stored:
        np.testing.assert_array_equal(again[name], stored[name])

    monkeypatch.setattr(gptq, "round_model", lambda model, batch, name, skip=frozenset(): {})
    plain = orx.quantize_int8(fp32, pre, tmp_path / "plain.onnx", batch=batch)
    images = [tmp_path / f"{i}.png" for i in range(12)]
    from PIL import Image

    for i, p in enumerate(images):  # the calibration batch's own pictures, as images on disk
        Image.fromarray(np.clip((batch[i] * np.array(pre.std) + np.array(pre.mean)) * 255, 0, 255)
                        .astype(np.uint8)).save(p)
    f32 = extract(orx.OrtExtractor(fp32, "f"), images, progress=False)

    def sqnr(path):
        f = extract(orx.OrtExtractor(path, str(path)), images, progress=False)
        return 10 * np.log10((f32 ** 2).sum() / ((f - f32) ** 2).sum())

    assert sqnr(q1) > sqnr(plain) + 1.0
