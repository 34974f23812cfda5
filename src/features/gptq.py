"""int8 weights rounded so that each layer's output, not each weight, stays closest to float32 (GPTQ).

What costs the int8 export its fidelity on a fine-tuned EfficientNet-Lite0 is the weights, not the
activations: on real photos at 3 labels per class, rounding every quantised convolution's weights to
nearest (per output channel, int8) and leaving activations in float32 keeps features at 23.5 dB SQNR to
float32, the same as the whole int8 model (22.9 dB), while 16-bit activations with int8 weights reach only
23.5 dB and int8 activations with 16-bit weights 31.4 dB (benchmarks/README.md, G5).

GPTQ (Frantar et al., 2022, the optimal-brain-quantisation update of Frantar & Alistarh, 2022) rounds the
input columns of a layer one at a time and spreads each column's rounding error over the columns not yet
rounded, weighted by the inverse of the layer's input second moment ``H = E[x xᵀ]`` measured on the
calibration images. Every quantised convolution of this network is pointwise (1×1: a matrix over input
channels) or depthwise (each channel its own row of k×k weights over its own input patches, its own H).

The grid is the quantiser's own: symmetric per output channel, scale ``max|w| / 127``. The largest weight
of each row sits on that grid already and is never moved, so the scale stays and ONNX Runtime maps the
returned weights onto exactly these integers. What the rounding changed is recorded compactly
(:func:`encode`: the integers' differences from round-to-nearest, compressed), so an int8 model rebuilt
elsewhere from a model bundle gets the very same weights without the training images.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np

DAMP = 0.01        # share of H's mean diagonal added to it: 0.01 measured best of 0.01 / 0.1 (33.7 / 32.6 dB)
IMAGES = 64        # of the calibration batch, the first this many measure the layers' inputs (64 vs 128 on real
                   # photos: SQNR 29.95 / 29.58 / 29.67 vs 29.91 / 29.58 / 29.84 dB, the same agreement; ~5 s less)
MAX_SIDE = 14      # positions per image and layer: at most a 14 × 14 grid (neighbours say little more)
DEPTHWISE_SIDE = 7  # a depthwise row has 9 or 25 weights: 7 × 7 positions measure its moment as well as 14 × 14
                    # (real photos, 3 draws: SQNR 29.23 / 28.94 / 29.10 dB either way, agreement 99.47 / 99.43 / 99.43 %
                    # vs 99.47 / 99.32 / 99.32 %) in three quarters of the time (benchmarks/README.md, T14)
CHUNK = 8          # images per pass when measuring the layers' inputs
BLOCK = 32         # columns per lazy batch update in round_rows (same integers at any size; 32 the fastest here:
                   # 0.62 s for Lite0's 47 layers against 0.72 at 128, in column-contiguous layout, T14)
RECORD_VERSION = 1


def _attrs(node) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _kind(node, weight_shape: tuple[int, ...]) -> str | None:
    """"pointwise", "depthwise" or None (left to round-to-nearest) for a Conv node."""
    a = _attrs(node)
    if any(d != 1 for d in a.get("dilations", [1, 1])) or len(weight_shape) != 4 \
            or a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return None
    group = a.get("group", 1)
    if group == 1 and tuple(weight_shape[2:]) == (1, 1):
        return "pointwise"
    if group == weight_shape[0] and weight_shape[1] == 1:
        return "depthwise"
    return None


def rounded_convs(model, skip: set[str] | frozenset[str] = frozenset()) -> list[tuple[Any, str]]:
    """(Conv node, kind) for every convolution whose weights GPTQ rounds, in graph order."""
    weights = {i.name: i for i in model.graph.initializer}
    out = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.name in skip or node.input[1] not in weights:
            continue
        kind = _kind(node, tuple(weights[node.input[1]].dims))
        if kind:
            out.append((node, kind))
    return out


def input_moments(model, batch: np.ndarray, convs: list[tuple[Any, str]], input_name: str) -> dict[str, np.ndarray]:
    """``E[x xᵀ]`` of each convolution's input on ``batch``: (in, in) for pointwise, (C, k², k²) for depthwise.

    Positions are a strided grid of at most :data:`MAX_SIDE` (:data:`DEPTHWISE_SIDE`) per side of each layer's
    output. The products are computed inside the network (:func:`_moment_probe`), so a pass returns matrices,
    not activations; they are summed in float64.
    """
    dims = _weight_dims(model, convs)
    sizes = _input_sizes(model, batch[:1], convs, input_name)
    session, outputs = _moment_probe(model, convs, sizes, dims)
    per_image = {node.name: _grid(node, sizes[node.input[0]], dims[node.name][2:4], kind)[1] for node, kind in convs}
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for start in range(0, len(batch), CHUNK):
        chunk = batch[start:start + CHUNK]
        for (node, _), moment in zip(convs, session.run(outputs, {input_name: chunk})):
            sums[node.name] = sums.get(node.name, 0) + moment.astype(np.float64)
            counts[node.name] = counts.get(node.name, 0) + len(chunk) * per_image[node.name]
    return {name: sums[name] / max(1, counts[name]) for name in sums}


def _weight_dims(model, convs: list[tuple[Any, str]]) -> dict[str, tuple[int, ...]]:
    """(out, in per group, kh, kw) of each convolution's weight, by convolution name."""
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    return {node.name: dims[node.input[1]] for node, _ in convs}


def _session(model):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _input_sizes(model, image: np.ndarray, convs: list[tuple[Any, str]], input_name: str
                 ) -> dict[str, tuple[int, int]]:
    """(height, width) of each convolution's input, from one image."""
    import onnx

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    wanted = list(dict.fromkeys(node.input[0] for node, _ in convs))
    present = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.ValueInfoProto(name=n) for n in wanted if n not in present)
    return {n: tuple(a.shape[2:]) for n, a in zip(wanted, _session(probe).run(wanted, {input_name: image}))}


def _grid(node, size: tuple[int, int], k: tuple[int, ...], kind: str = "pointwise") -> tuple[tuple[int, int], int]:
    """(stride of the position grid, positions per image) of a convolution with input ``size`` and kernel
    ``k``: the grid keeps every ``step``-th output position, at most :data:`MAX_SIDE` per side
    (:data:`DEPTHWISE_SIDE` for a depthwise ``kind``)."""
    a = _attrs(node)
    sh, sw = a.get("strides", [1, 1])
    top, left, bottom, right = a.get("pads", [0, 0, 0, 0])
    out_h, out_w = (size[0] + top + bottom - k[0]) // sh + 1, (size[1] + left + right - k[1]) // sw + 1
    side = DEPTHWISE_SIDE if kind == "depthwise" else MAX_SIDE
    step = (sh * -(-out_h // side), sw * -(-out_w // side))
    rows, cols = (size[0] + top + bottom - k[0]) // step[0] + 1, (size[1] + left + right - k[1]) // step[1] + 1
    return step, rows * cols


def _moment_probe(model, convs: list[tuple[Any, str]], sizes: dict[str, tuple[int, int]],
                  dims: dict[str, tuple[int, ...]]):
    """(session, output names): ``model`` extended with each convolution's input moment on a chunk, summed
    over its images and grid positions. Pointwise: the input sliced to the grid, (C, n) times its transpose.
    Depthwise: a grouped convolution with one-hot kernels lays each channel's k×k patches at the grid
    positions out as k² channels; each image's (C, k², n) times its transpose, per channel, summed over the
    images (no transpose of the patches: that copy took longer than the products)."""
    import onnx
    from onnx import helper, numpy_helper

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    g = probe.graph
    del g.output[:]

    def const(name: str, value: np.ndarray) -> str:
        g.initializer.append(numpy_helper.from_array(value, name))
        return name

    outputs = []
    for i, (node, kind) in enumerate(convs):
        k = dims[node.name][2:4]
        step, _ = _grid(node, sizes[node.input[0]], k, kind)
        channels = int(dims[node.name][0 if kind == "depthwise" else 1])  # the input's channels
        t, x = f"gptq_{i}", node.input[0]
        if kind == "pointwise":
            g.node.extend([
                helper.make_node("Slice", [x, const(t + "_s", np.array([0, 0], np.int64)),
                                           const(t + "_e", np.array([2**62, 2**62], np.int64)),
                                           const(t + "_a", np.array([2, 3], np.int64)),
                                           const(t + "_st", np.array(step, np.int64))], [t + "_grid"]),
                helper.make_node("Transpose", [t + "_grid"], [t + "_t"], perm=[1, 0, 2, 3]),
                helper.make_node("Reshape", [t + "_t", const(t + "_shape", np.array([channels, -1], np.int64))],
                                 [t + "_cols"]),
                helper.make_node("Transpose", [t + "_cols"], [t + "_colsT"], perm=[1, 0])])
        else:
            kk = k[0] * k[1]
            onehot = np.zeros((channels * kk, 1, *k), np.float32)
            onehot[np.arange(channels * kk), 0, *np.unravel_index(np.arange(channels * kk) % kk, k)] = 1.0
            a = _attrs(node)
            g.node.extend([
                helper.make_node("Conv", [x, const(t + "_w", onehot)], [t + "_patches"], group=channels,
                                 kernel_shape=list(k), strides=list(step), pads=list(a.get("pads", [0, 0, 0, 0]))),
                helper.make_node("Reshape", [t + "_patches", const(t + "_s4", np.array([0, channels, kk, -1],
                                                                                       np.int64))], [t + "_cols"]),
                helper.make_node("Transpose", [t + "_cols"], [t + "_colsT"], perm=[0, 1, 3, 2]),
                helper.make_node("MatMul", [t + "_cols", t + "_colsT"], [t + "_per_image"]),
                helper.make_node("ReduceSum", [t + "_per_image", const(t + "_n", np.array([0], np.int64))],
                                 [t + "_moment"], keepdims=0)])
            g.output.append(onnx.ValueInfoProto(name=t + "_moment"))
            outputs.append(t + "_moment")
            continue
        g.node.append(helper.make_node("MatMul", [t + "_cols", t + "_colsT"], [t + "_moment"]))
        g.output.append(onnx.ValueInfoProto(name=t + "_moment"))
        outputs.append(t + "_moment")
    return _session(probe), outputs


def _scales(rows: np.ndarray) -> np.ndarray:
    s = np.abs(rows).max(1) / 127.0
    s[s == 0] = 1.0
    return s


def nearest(weight: np.ndarray) -> np.ndarray:
    """Round-to-nearest int8 on the quantiser's grid (symmetric per output channel), as int8."""
    rows = weight.reshape(weight.shape[0], -1).astype(np.float64)
    return np.clip(np.round(rows / _scales(rows)[:, None]), -127, 127).astype(np.int8).reshape(weight.shape)


def round_rows(rows: np.ndarray, moments: np.ndarray, damp: float = DAMP) -> np.ndarray:
    """GPTQ on ``rows`` (out, cols) against ``moments``: (cols, cols) shared, or (out, cols, cols) per row.

    Returns int8 integers on the grid ``max|row| / 127``; each row's largest weight is kept as it is.
    Columns go in blocks of :data:`BLOCK`: within a block each column's error moves the block's later
    columns, and the block's errors move every later column in one matrix product (GPTQ's lazy batch
    update: the same arithmetic, reordered).
    """
    W = rows.astype(np.float64).T.copy()           # (cols, out): each column contiguous, as the loop reads it
    cols, out = W.shape
    s = _scales(rows.astype(np.float64))
    H = np.array(moments, dtype=np.float64)
    shared = H.ndim == 2
    H = H[None] if shared else H.copy()
    diag = np.arange(cols)
    perm = None
    if shared:  # pointwise: the inputs with the most energy first (for depthwise rows of 9 or 25 it did not pay)
        perm = np.argsort(-H[0, diag, diag], kind="stable")
        H, W = H[:, perm][:, :, perm], W[perm]
    dead = H[:, diag, diag] <= 0                  # inputs that were always zero: nothing to compensate with
    H[:, diag, diag] = np.where(dead, 1.0, H[:, diag, diag])
    H[:, diag, diag] += damp * H[:, diag, diag].mean(1, keepdims=True)
    U = np.linalg.cholesky(np.linalg.inv(H)).transpose(0, 2, 1)  # upper factor of H⁻¹
    keep_col = np.abs(W).argmax(0)
    keep_val = W[keep_col, np.arange(out)].copy()
    anchored = [np.flatnonzero(keep_col == i) for i in range(cols)]
    Q = np.zeros((cols, out), dtype=np.int8)
    for b0 in range(0, cols, BLOCK):
        b1 = min(b0 + BLOCK, cols)
        errs = np.zeros((b1 - b0, out))
        for i in range(b0, b1):
            W[i, anchored[i]] = keep_val[anchored[i]]  # the grid's anchor never moves: no error to spread
            q = np.clip(np.round(W[i] / s), -127, 127)
            Q[i] = q
            err = (W[i] - q * s) / (U[0, i, i] if shared else U[:, i, i])
            errs[i - b0] = err
            if i + 1 < b1:
                W[i + 1:b1] -= U[0, i, i + 1:b1, None] * err if shared else (err[:, None] * U[:, i, i + 1:b1]).T
        if b1 < cols:
            W[b1:] -= U[0, b0:b1, b1:].T @ errs if shared else np.einsum("bo,obc->co", errs, U[:, b0:b1, b1:])
    Q = Q.T
    return Q if perm is None else Q[:, np.argsort(perm)]


def round_model(model, batch: np.ndarray, input_name: str, skip: set[str] | frozenset[str] = frozenset()
                ) -> dict[str, np.ndarray]:
    """int8 weights per rounded convolution's weight initializer, GPTQ on (the first :data:`IMAGES` of)
    ``batch`` (NHWC, float32)."""
    from onnx import numpy_helper

    convs = rounded_convs(model, skip)
    moments = input_moments(model, batch[:IMAGES], convs, input_name)
    weights = {i.name: i for i in model.graph.initializer}
    out = {}
    for node, kind in convs:
        w = numpy_helper.to_array(weights[node.input[1]])
        rows = w.reshape(w.shape[0], -1)
        out[node.input[1]] = round_rows(rows, moments[node.name]).reshape(w.shape)
    return out


def round_file(path: str | os.PathLike, batch: np.ndarray | None, input_name: str, skip: set[str],
               record_path: str | os.PathLike | None = None) -> None:
    """Round the weights of the ONNX file at ``path`` in place: GPTQ on ``batch`` (recorded at ``record_path``
    when given), or, without a batch, as the record at ``record_path`` says (nearest rounding without one)."""
    import onnx

    from src.core.paths import write_text_atomic

    model = onnx.load(str(path))
    record = Path(record_path) if record_path is not None else None
    if batch is not None:
        ints = round_model(model, batch, input_name, skip=skip)
        if record is not None:
            write_text_atomic(record, encode(model, ints))
    elif record is not None and record.is_file():
        ints = decode(model, record.read_text())
    else:
        return
    apply(model, ints)
    onnx.save(model, str(path))


def apply(model, ints: dict[str, np.ndarray]) -> None:
    """Set each named weight to its integers times its scale (in place): the quantiser maps them back exactly."""
    from onnx import numpy_helper

    for init in model.graph.initializer:
        if init.name in ints:
            w = numpy_helper.to_array(init)
            s = _scales(w.reshape(w.shape[0], -1).astype(np.float64))
            q = ints[init.name].reshape(w.shape[0], -1).astype(np.float64)
            init.CopyFrom(numpy_helper.from_array((q * s[:, None]).reshape(w.shape).astype(np.float32), init.name))


def encode(model, ints: dict[str, np.ndarray]) -> str:
    """The rounding as text: names in graph order and the integers' differences from round-to-nearest."""
    from onnx import numpy_helper

    weights = {i.name: i for i in model.graph.initializer}
    names = [n for n in ints]
    deltas = np.concatenate([(ints[n].astype(np.int16) - nearest(numpy_helper.to_array(weights[n]))).ravel()
                             for n in names]).astype(np.int8) if names else np.zeros(0, np.int8)
    return json.dumps({"version": RECORD_VERSION, "damp": DAMP, "weights": names,
                       "deltas": base64.b64encode(zlib.compress(deltas.tobytes(), 6)).decode()})


def decode(model, text: str) -> dict[str, np.ndarray]:
    """The integers :func:`encode` recorded, for ``model`` (the same float32 export); ValueError if they do not fit."""
    from onnx import numpy_helper

    record = json.loads(text)
    if record.get("version") != RECORD_VERSION:
        raise ValueError(f"int8 rounding record version {record.get('version')!r} is not {RECORD_VERSION}")
    weights = {i.name: i for i in model.graph.initializer}
    deltas = np.frombuffer(zlib.decompress(base64.b64decode(record["deltas"])), dtype=np.int8)
    out, at = {}, 0
    for name in record["weights"]:
        if name not in weights:
            raise ValueError(f"int8 rounding record names weight {name!r}, which this export does not have")
        base = nearest(numpy_helper.to_array(weights[name]))
        d = deltas[at:at + base.size]
        if d.size != base.size:
            raise ValueError("int8 rounding record is shorter than this export's weights")
        out[name] = np.clip(base.astype(np.int16) + d.reshape(base.shape), -127, 127).astype(np.int8)
        at += base.size
    if at != deltas.size:
        raise ValueError("int8 rounding record is longer than this export's weights")
    return out
