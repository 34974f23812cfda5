"""Fast CPU feature extraction: the extractor exported to ONNX and run with ONNX Runtime.

timm's ``tf_`` models pad "same" dynamically (``Conv2dSame``/``pad_same``), which exports as a tangle of
shape arithmetic; for a fixed input size the pads are constants, so :func:`static_padding` swaps every such
layer for ``ZeroPad2d`` + a plain layer (outputs unchanged). The graph takes NHWC float batches (as
:func:`src.features.extraction.load_batch` makes them) with a dynamic batch axis and carries the
preprocessing in its metadata, so a cached export (``<store>/onnx/<extractor digest>-<size>.onnx``,
written once) loads without torch.

``int8=True`` gives a quantised variant (static per-channel QDQ, weights rounded by GPTQ
(:mod:`src.features.gptq`), the first :data:`FLOAT_CONVS` convolutions float32, min-max ranges averaged
over batches of a fixed synthetic set, so it depends only on the extractor): about twice as fast on CPUs
with int8 dot products, its own cache key and ``<digest>-<size>-int8-v3.onnx`` file (the recipe's version), run
as :mod:`~src.features.int8_kernels` says. It serves ``--runtime onnx-int8`` for models without a calibration
of their own; training calibrates on the user's images (:mod:`src.features.int8_calibration`).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np

from src.features import gptq
from src.features.backbone import NUM_FEATURES, Preprocessing
from src.features.int8_kernels import runnable
from src.core.paths import clean_pid_siblings
from src.core.store import Store

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "features"
_META_KEY = "grocery_mlops.preprocessing"
INT8_RECIPE = "int8-qdq-minmax-gptq-v3"  # part of the int8 feature key: change it when the recipe changes
# The stem and the first depthwise convolution (112 px) stay float32: quantising them cost the most fidelity
# (all-int8: 98.9 % agreement on 1,200 generated images, these two float32: 99.4 %) for 8–14 % of int8 speed.
FLOAT_CONVS = 2
QUANTIZE_TEMP = (".pre.tmp", ".tmp", ".ranges.tmp")  # quantize_int8's files beside its output, before the rename
# Pixel batches per ORT call: the stem's output is 1.6 MB per 224-px image; 8 stay near the caches (measured).
PIXEL_CHUNK = 8
CALIBRATION_IMAGES = 64  # the generic variant's synthetic set (training calibrates on its own images)


def _suffix(int8: bool) -> str:
    """File-name tag of the generic int8 variant: it names the recipe, so a recipe change never reuses a file."""
    return f"-int8-{INT8_RECIPE.rsplit('-', 1)[1]}" if int8 else ""


def onnx_cache_path(store: Store, digest: str, image_size: int, int8: bool = False) -> Path:
    return store.root / "onnx" / f"{digest}-{image_size}{_suffix(int8)}.onnx"


# -- static padding ------------------------------------------------------------------------
def _same_pads(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding that TF "SAME" uses along one axis of length ``size``."""
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _pads(module, h: int, w: int) -> tuple[int, int, int, int]:
    """``ZeroPad2d`` order: (left, right, top, bottom)."""
    k, s = _pair(module.kernel_size), _pair(module.stride)
    d = _pair(getattr(module, "dilation", 1))
    top, bottom = _same_pads(h, k[0], s[0], d[0])
    left, right = _same_pads(w, k[1], s[1], d[1])
    return left, right, top, bottom


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _static_replacement(module, h: int, w: int):
    """``Sequential(pad, plain layer)`` equivalent to a dynamic-"same" layer at input ``h × w``."""
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame
    from torch import nn

    pads = _pads(module, h, w)
    if isinstance(module, Conv2dSame):
        conv = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, 0,
                         module.dilation, module.groups, bias=module.bias is not None)
        conv.weight = module.weight
        if module.bias is not None:
            conv.bias = module.bias
        return nn.Sequential(nn.ZeroPad2d(pads), conv)
    if isinstance(module, MaxPool2dSame):
        return nn.Sequential(nn.ConstantPad2d(pads, -float("inf")),
                             nn.MaxPool2d(module.kernel_size, module.stride, 0, module.dilation,
                                          ceil_mode=module.ceil_mode))
    if isinstance(module, AvgPool2dSame):  # pads with zeros that count, like timm's pad_same
        return nn.Sequential(nn.ZeroPad2d(pads),
                             nn.AvgPool2d(module.kernel_size, module.stride, 0, module.ceil_mode,
                                          count_include_pad=True))
    raise TypeError(f"no static replacement for {type(module).__name__}")  # pragma: no cover


def _dynamic_same_layers(model) -> list[str]:
    from timm.layers.conv2d_same import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    return [n for n, m in model.named_modules() if isinstance(m, (Conv2dSame, MaxPool2dSame, AvgPool2dSame))]


def static_padding(model, image_size: int):
    """A copy of ``model`` (eval) whose dynamic-"same" layers have constant pads for ``image_size``."""
    import torch

    model = copy.deepcopy(model).eval()
    names = set(_dynamic_same_layers(model))
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args, n=n: sizes.__setitem__(n, tuple(args[0].shape[-2:])))
             for n, m in model.named_modules() if n in names]
    with torch.inference_mode():
        model(torch.zeros(1, 3, image_size, image_size))
    for h in hooks:
        h.remove()
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _static_replacement(getattr(parent, child), *sizes[name]))
    return model


# -- export --------------------------------------------------------------------------------
def nhwc_input(model):
    """``model`` behind a permute, so the graph takes the NHWC batches ``load_batch`` produces."""
    from torch import nn

    class NHWCInput(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x.permute(0, 3, 1, 2))

    return NHWCInput(model).eval()


def export_onnx(model, pre: Preprocessing, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Export ``model`` (static padding applied here) for NHWC float input of ``pre.image_size``.

    Written to a temporary name and renamed, so a concurrent reader never sees half a file.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    net = nhwc_input(static_padding(model, pre.image_size))
    dummy = torch.zeros(2, pre.image_size, pre.image_size, 3)
    clean_pid_siblings(path, ".", (".tmp",))  # a killed export's half file
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation chatter
            torch.onnx.export(net, (dummy,), str(tmp), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                              do_constant_folding=True)
        _publish(tmp, pre, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _publish(tmp: Path, pre: Preprocessing, path: Path) -> None:
    """Stamp the preprocessing into ``tmp``'s metadata, then rename it to ``path`` (atomic)."""
    import onnx

    proto = onnx.load(str(tmp))
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = _META_KEY, json.dumps(pre.to_dict())
    onnx.save(proto, str(tmp))
    os.replace(tmp, path)


def ensure_onnx(extractor_path: str | os.PathLike, digest: str, store: Store | None = None,
                int8: bool = False) -> Path:
    """The cached ONNX export of the extractor file with sha256 ``digest``; exported on first use."""
    from src.features.backbone import load_extractor

    store = store or Store()
    model, pre = load_extractor(Path(extractor_path))
    path = onnx_cache_path(store, digest, pre.image_size)
    if not path.is_file():
        log.info("exporting the feature extractor to ONNX (%s)", path.name)
        export_onnx(model, pre, path)
    if not int8:
        return path
    qpath = onnx_cache_path(store, digest, pre.image_size, int8=True)
    if not qpath.is_file():
        log.info("quantising the ONNX export to int8 (%s)", qpath.name)
        quantize_int8(path, pre, qpath)
    return qpath


def cached_onnx(digest: str, store: Store | None = None, int8: bool = False) -> Path | None:
    """An existing export for ``digest`` (any size: the digest fixes the preprocessing), or None."""
    folder = (store or Store()).root / "onnx"
    pattern = re.compile(rf"{re.escape(digest)}-\d+{re.escape(_suffix(int8))}\.onnx")
    hits = sorted(p for p in folder.glob(f"{digest}-*.onnx") if pattern.fullmatch(p.name)) if folder.is_dir() else []
    return hits[0] if hits else None


# -- int8 ----------------------------------------------------------------------------------
def calibration_batch(pre: Preprocessing, n: int = CALIBRATION_IMAGES) -> np.ndarray:
    """A fixed NHWC batch: synthetic grocery drawings (3/4) and crops of two real photos (1/4)."""
    import random

    from PIL import Image
    from sklearn.datasets import load_sample_images

    from src.data.synth import CLASSES, draw_item

    n_photo = n // 4
    imgs = [draw_item(CLASSES[i % len(CLASSES)], 128, random.Random(f"calibration-{i}")) for i in range(n - n_photo)]
    photos = load_sample_images().images  # china.jpg and flower.jpg, 427 × 640
    rng = np.random.default_rng(0)
    for i in range(n_photo):
        photo = photos[i % len(photos)]
        side = int(rng.integers(120, 420))
        y, x = int(rng.integers(0, photo.shape[0] - side + 1)), int(rng.integers(0, photo.shape[1] - side + 1))
        imgs.append(Image.fromarray(photo[y:y + side, x:x + side]).resize((128, 128), Image.BICUBIC))
    return np.stack([pre(im) for im in imgs]).astype(np.float32)


def quantize_int8(fp32_path: str | os.PathLike, pre: Preprocessing, path: str | os.PathLike,
                  batch: np.ndarray | None = None, ranges_path: str | os.PathLike | None = None,
                  rounding_path: str | os.PathLike | None = None) -> Path:
    """Static per-channel QDQ quantisation of a float32 export (written atomically, metadata kept).

    Calibrated on ``batch`` (NHWC, default :func:`calibration_batch`): weights rounded by GPTQ on it
    (:mod:`src.features.gptq`), then activation ranges averaged over its batches (:mod:`src.features.int8_ranges`).
    ``ranges_path`` and ``rounding_path`` receive the record, or, when the ranges exist and no batch is given, are
    read instead of calibrating (the same record, the same model; no rounding file: nearest rounding).
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from src.features.int8_ranges import write_activation_ranges

    path = Path(path)
    reuse = batch is None and ranges_path is not None and Path(ranges_path).is_file()
    if batch is None and not reuse:
        batch = calibration_batch(pre)
    if not reuse and ranges_path is not None:
        Path(ranges_path).unlink(missing_ok=True)  # ORT would read stale ranges instead of calibrating

    clean_pid_siblings(path, ".", QUANTIZE_TEMP)  # a killed quantisation's files (the model is ~13 MB)
    tag = f".{path.name}.{os.getpid()}"
    prepped, tmp, scratch_ranges = (path.with_name(tag + end) for end in QUANTIZE_TEMP)
    ranges = Path(ranges_path) if ranges_path is not None else scratch_ranges
    try:
        chatter = io.StringIO()  # the calibrator print()s its progress: keep stdout clean for --json
        with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            quant_pre_process(str(fp32_path), str(prepped), skip_symbolic_shape=True)
            exclude = _first_convs(prepped, FLOAT_CONVS)
            gptq.round_file(prepped, None if reuse else batch, INPUT_NAME, set(exclude), rounding_path)
            if not reuse:
                write_activation_ranges(prepped, batch, INPUT_NAME, ranges)
            quantize_static(str(prepped), str(tmp), None, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude or None,
                            calibration_cache_path=str(ranges))
        log.debug("quantiser output: %s", chatter.getvalue().strip())
        _publish(tmp, pre, path)
    finally:
        for leftover in (prepped, tmp) + (() if ranges_path is not None else (ranges,)):
            leftover.unlink(missing_ok=True)
    return path


def _first_convs(model_path: Path, n: int) -> list[str]:
    """Names of the first ``n`` convolutions in graph order (kept in float32 by the quantiser)."""
    import onnx

    return [node.name for node in onnx.load(str(model_path)).graph.node if node.op_type == "Conv"][:n]


# -- runtime -------------------------------------------------------------------------------
def pixel_input_model(onnx_path: str | os.PathLike, pre: Preprocessing) -> bytes:
    """The export at ``onnx_path`` fed uint8 NHWC pixels: the graph normalises them itself.

    Prepends ``Cast → Div 255 → Sub mean → Div std`` in float32, the very steps of
    :meth:`Preprocessing.normalise`, so the features are bit-identical to feeding the float batch;
    the decode threads skip ~0.5 ms of numpy per 224-px image and ORT does it vectorised in one pass
    per step over the batch. The export's NHWC → NCHW transpose moves in front, onto the uint8
    pixels (the steps are elementwise with scalars, so the order changes nothing but the bytes moved).
    Built in memory: cached exports and their keys are unchanged.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load(str(onnx_path))
    graph = proto.graph
    old = next(i for i in graph.input if i.name == INPUT_NAME)
    inner, source = f"{INPUT_NAME}_normalised", INPUT_NAME
    users = [n for n in graph.node if INPUT_NAME in n.input]
    steps = []
    if len(users) == 1 and users[0].op_type == "Transpose":  # the NHWC → NCHW permute: on uint8, 4× fewer bytes
        perm = users[0]
        graph.node.remove(perm)
        inner = perm.output[0]
        steps.append(helper.make_node("Transpose", [INPUT_NAME], ["pixels_nchw"], name="pixels_transpose",
                                      perm=list(next(a.ints for a in perm.attribute if a.name == "perm"))))
        source = "pixels_nchw"
    else:
        for node in graph.node:
            node.input[:] = [inner if x == INPUT_NAME else x for x in node.input]
    consts = {"pixels_scale": 255.0, "pixels_mean": pre.mean, "pixels_std": pre.std}
    graph.initializer.extend(numpy_helper.from_array(np.array(v, dtype=np.float32), name=k) for k, v in consts.items())
    steps += [helper.make_node("Cast", [source], ["pixels_float"], to=TensorProto.FLOAT, name="pixels_cast"),
              helper.make_node("Div", ["pixels_float", "pixels_scale"], ["pixels_unit"], name="pixels_unit"),
              helper.make_node("Sub", ["pixels_unit", "pixels_mean"], ["pixels_centred"], name="pixels_centre"),
              helper.make_node("Div", ["pixels_centred", "pixels_std"], [inner], name="pixels_scale_std")]
    for i, node in enumerate(steps):
        graph.node.insert(i, node)
    dims = [d.dim_param or d.dim_value for d in old.type.tensor_type.shape.dim]
    graph.input.remove(old)
    graph.input.insert(0, helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, dims))
    return proto.SerializeToString()


class OrtExtractor:
    """Pooled 1280-d features from an ONNX Runtime session; same interface as ``TorchExtractor``.

    Takes float32 NHWC batches (normalised) or, with ``takes_pixels``, uint8 NHWC pixels
    (:func:`pixel_input_model`; :func:`~src.features.extraction.extract` feeds those for batches). The
    pixel session is built on its first use, so single-image callers pay nothing for it; its idle
    threads sleep rather than spin, which leaves the cores to the decode threads.
    """

    takes_pixels = True

    def __init__(self, onnx_path: str | os.PathLike, key: str, threads: int | None = None, spinning: bool = True):
        self._threads = threads or os.cpu_count() or 1
        # spinning=False: idle pool threads sleep instead of busy-waiting (a server sharing its cores)
        self.session = self._session(str(onnx_path), spin=spinning)
        meta = self.session.get_modelmeta().custom_metadata_map
        if _META_KEY not in meta:
            raise RuntimeError(f"{onnx_path} lacks the preprocessing metadata; delete it to re-export")
        self.preprocessing = Preprocessing(**json.loads(meta[_META_KEY]))
        self.key = key
        self.path = Path(onnx_path)
        self.precision = "float32"
        self._pixel_session = None

    def _session(self, model, spin: bool = True):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self._threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(runnable(model), opts, providers=["CPUExecutionProvider"])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype == np.uint8:
            if self._pixel_session is None:  # batches share the cores with decoding: idle ORT threads sleep
                self._pixel_session = self._session(pixel_input_model(self.path, self.preprocessing), spin=False)
            x, step = np.ascontiguousarray(batch), PIXEL_CHUNK
            return np.concatenate([self._pixel_session.run([OUTPUT_NAME], {INPUT_NAME: x[i:i + step]})[0]
                                   for i in range(0, len(x), step)]).reshape(len(x), NUM_FEATURES)
        x = np.ascontiguousarray(batch, dtype=np.float32)
        out = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
        return out.reshape(len(x), NUM_FEATURES)

    def with_threads(self, threads: int, spinning: bool = True) -> "OrtExtractor":
        """The same network in a new session with ``threads`` intra-op threads (same key, precision, metadata)."""
        other = OrtExtractor(self.path, self.key, threads=threads, spinning=spinning)
        own = ("session", "preprocessing", "_threads", "_pixel_session")
        other.__dict__.update({k: v for k, v in self.__dict__.items() if k not in own})
        return other


def load_onnx_extractor(extractor_path: str | os.PathLike, digest: str, store: Store | None = None,
                        int8: bool = False) -> OrtExtractor:
    """ORT extractor for a saved extractor file; a cached export is used without loading torch."""
    path = cached_onnx(digest, store, int8) or ensure_onnx(extractor_path, digest, store, int8)
    ext = OrtExtractor(path, key="")
    ext.key = f"{digest}:{ext.preprocessing.key()}"
    if int8:
        ext.key += f":{INT8_RECIPE}"
        ext.precision = "int8"
    return ext
