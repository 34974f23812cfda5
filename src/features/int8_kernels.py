"""int8 weights in the form this CPU's ONNX Runtime kernels compute exactly.

ONNX Runtime runs a quantised convolution with uint8 activations and int8 weights (U8S8) on x86 CPUs
through ``vpmaddubsw``, which adds pairs of products into 16 bits and saturates where the CPU has no VNNI
instructions (AVX2 and AVX-512 without VNNI): on such a CPU the int8 EfficientNet-Lite0 lost 13 dB of
SQNR against its own float32 export (8.9 dB instead of 22.1) and agreed with float32 on 89 % of real
photos' predictions instead of ~99 %, so the int8 guard refused it on every draw. The same integers as
uint8 with zero point 128 (U8U8) take a kernel that widens first and does not saturate: identical
weights (``(q + 128 - 128) * scale``), 22.1 dB there too. The files and their digests stay as quantised
(U8S8, the fast path where VNNI exists); :func:`runnable` converts in memory where the CPU needs it.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import numpy as np

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "avx512vnni", "avxvnni")  # /proc/cpuinfo spells them with underscores
OVERRIDE = "GROCERY_INT8_UNSIGNED_WEIGHTS"  # "1" / "0": force the conversion on or off (tests, benchmarks)


@functools.cache
def _cpu_saturates() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return False  # ARM's int8 dot products (sdot/udot, i8mm) accumulate in 32 bits
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False  # unknown: keep the file as it is
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return not any(f in flags for f in VNNI_FLAGS)


def saturates() -> bool:
    """Whether ONNX Runtime's U8S8 convolutions saturate on this CPU (x86 without VNNI)."""
    forced = os.environ.get(OVERRIDE)
    return forced == "1" if forced in ("0", "1") else _cpu_saturates()


def unsigned_weights(proto) -> int:
    """Rewrite, in place, every int8 weight that a ``DequantizeLinear`` reads with an int8 zero point as uint8
    with the zero point moved by 128 (the same real values); the number rewritten."""
    from onnx import numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    done = 0
    for node in proto.graph.node:
        if node.op_type != "DequantizeLinear" or len(node.input) < 3:
            continue
        w, zp = inits.get(node.input[0]), inits.get(node.input[2])
        if w is None or zp is None:
            continue
        wq, zq = numpy_helper.to_array(w), numpy_helper.to_array(zp)
        if wq.dtype != np.int8 or zq.dtype != np.int8:
            continue
        w.CopyFrom(numpy_helper.from_array((wq.astype(np.int16) + 128).astype(np.uint8), w.name))
        zp.CopyFrom(numpy_helper.from_array((zq.astype(np.int16) + 128).astype(np.uint8), zp.name))
        done += 1
    return done


def runnable(model: str | bytes) -> str | bytes:
    """``model`` (a path or serialised bytes) as this CPU should run it: unchanged, or, where U8S8 saturates and
    the model has int8 weights, serialised with :func:`unsigned_weights` applied."""
    if not saturates():
        return model
    import onnx

    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    return proto.SerializeToString() if unsigned_weights(proto) else model
