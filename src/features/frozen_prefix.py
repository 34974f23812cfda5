"""The blocks fine-tuning leaves frozen, run forward by ONNX Runtime instead of torch.

Fine-tuning keeps the stem and the first ``frozen_blocks`` blocks as ImageNet made them
(:func:`frozen_prefixes`, D31): nothing there trains, so no gradient passes through
them and their BatchNorm runs on its stored statistics. They are the layers with the largest activations
(112 to 28 px): in torch their forward pass was 110 of the 283 ms a training step over 16 images of
224 px took on 2 cores; ONNX Runtime computes the same activations in 51 ms (benchmarks/README.md, T9).
So a training step runs the prefix here, exported once per process and weights, and the rest in torch
(:func:`split_forward`); the result is the model's own output within float32 rounding (tested).
"""

from __future__ import annotations

import io
import logging
import threading
import warnings

import numpy as np

log = logging.getLogger(__name__)

_SESSIONS: dict[tuple[str, int, int], object] = {}  # (prefix weights digest, blocks, image size) → session
_LOCK = threading.Lock()


def frozen_prefixes(frozen_blocks: int) -> tuple[str, ...]:
    """Parameter-name prefixes that fine-tuning leaves as they are: the stem and the first ``frozen_blocks``
    blocks. Nothing before them trains, so backpropagation stops at the first block that does: on real photos
    at 3 labels per class, freezing the stem and blocks 0–2 kept `val/` accuracy (benchmarks/README.md, T7)
    and cut the fine-tuning passes' cost by a quarter."""
    if frozen_blocks <= 0:
        return ()
    return ("conv_stem.", "bn1.") + tuple(f"blocks.{b}." for b in range(frozen_blocks))


def to_tensor(batch: np.ndarray):
    """An NHWC float numpy batch as the channels-last NCHW tensor the backbone takes."""
    import torch

    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)


def prefix_module(model, frozen_blocks: int, image_size: int):
    """The stem and the first ``frozen_blocks`` blocks of ``model`` (a copy, eval, constant pads for
    ``image_size``), taking NHWC float batches."""
    from torch import nn

    from src.features.onnx_runtime import nhwc_input, static_padding

    m = static_padding(model, image_size)
    return nhwc_input(nn.Sequential(m.conv_stem, m.bn1, *m.blocks[:frozen_blocks]))


def _digest(model, frozen_blocks: int) -> str:
    from src.features.backbone import state_digest

    frozen = frozen_prefixes(frozen_blocks)
    return state_digest({k: v for k, v in model.state_dict().items() if k.startswith(frozen)})


def prefix_session(model, frozen_blocks: int, image_size: int):
    """An ONNX Runtime session computing :func:`prefix_module` (input ``x``, NHWC; output ``h``, NCHW)."""
    import onnxruntime as ort
    import torch

    key = (_digest(model, frozen_blocks), frozen_blocks, image_size)
    with _LOCK:
        if key not in _SESSIONS:
            buf = io.BytesIO()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation chatter
                torch.onnx.export(prefix_module(model, frozen_blocks, image_size),
                                  (torch.zeros(2, image_size, image_size, 3),), buf, dynamo=False,
                                  opset_version=17, input_names=["x"], output_names=["h"],
                                  dynamic_axes={"x": {0: "batch"}, "h": {0: "batch"}})
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads = torch.get_num_threads()
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # torch runs next: free cores
            _SESSIONS[key] = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        return _SESSIONS[key]


def split_forward(model, frozen_blocks: int, image_size: int):
    """``forward(batch)``: ``model``'s logits for an NHWC float32 numpy ``batch``, the frozen prefix in ONNX
    Runtime and the rest in torch (the plain torch forward when nothing is frozen)."""
    import torch

    def plain(batch: np.ndarray):
        return model(to_tensor(batch))

    if frozen_blocks <= 0:
        return plain
    try:
        session = prefix_session(model, frozen_blocks, image_size)
    except Exception as e:  # noqa: BLE001 — the torch forward computes the same, only slower
        log.warning("the frozen blocks stay in torch (%s: %s)", type(e).__name__, e)
        return plain
    rest = model.blocks[frozen_blocks:]

    def forward(batch: np.ndarray):
        if batch.shape[1:3] != (image_size, image_size):
            raise ValueError(f"the frozen prefix takes {image_size}-px images, got {batch.shape[1:3]}")
        h = session.run(["h"], {"x": np.ascontiguousarray(batch, dtype=np.float32)})[0]
        x = rest(torch.from_numpy(h).contiguous(memory_format=torch.channels_last))
        return model.forward_head(model.bn2(model.conv_head(x)))

    return forward
