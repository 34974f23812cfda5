"""Loading a saved feature extractor into a runtime: ONNX Runtime (fast) or torch eager.

``runtime="auto"`` (or the ``MLOPS_RUNTIME`` environment variable, ``torch``/``onnx``/
``onnx-int8``) prefers ONNX Runtime and falls back to torch with a warning when the export
or the session fails. The float32 runtimes give the same ``.key``, so the feature cache is
shared; ``onnx-int8`` (about twice as fast, features within cosine ≈ 0.99 of float32 on average) has
its own key and never falls back silently. Training's ``auto`` then uses int8 where a guard
proves it harmless on the user's data (:mod:`src.training.precision`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from src.core import leases
from src.core.ownership import HELD_EXTRACTOR
from src.core.store import Store

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "onnx", "onnx-int8", "torch")
ENV_VAR = "MLOPS_RUNTIME"


def resolve_runtime(runtime: str = "auto") -> str:
    """``runtime`` with ``auto`` replaced by ``$MLOPS_RUNTIME`` when that is set."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "auto":
        env = os.environ.get(ENV_VAR, "").strip().lower()
        if env and env not in RUNTIMES:
            raise ValueError(f"{ENV_VAR} must be one of {', '.join(RUNTIMES)}, got {env!r}")
        runtime = env or "auto"
    return runtime


def load_torch_runtime(path: str | os.PathLike, digest: str):
    from src.features.backbone import load_extractor
    from src.features.extraction import TorchExtractor

    model, pre = load_extractor(Path(path))
    return TorchExtractor(model, pre, key=f"{digest}:{pre.key()}")


def pretrained_extractor(preprocessing):
    """The ImageNet-pretrained backbone (no fine-tuning) as a torch extractor; its cache key names the weights
    file's digest, so its features are cached like any extractor's."""
    from src.core.store import sha256_file
    from src.features.backbone import create_model, pretrained_weights_path
    from src.features.extraction import TorchExtractor

    digest = sha256_file(pretrained_weights_path())
    return TorchExtractor(create_model(num_classes=0, pretrained=True), preprocessing,
                          key=f"{digest}:{preprocessing.key()}")


def load_runtime(path: str | os.PathLike, digest: str, runtime: str = "auto", store: Store | None = None):
    """An extractor callable on NHWC float batches with ``.preprocessing`` and ``.key``."""
    runtime = resolve_runtime(runtime)
    if store is not None:  # a training in progress keeps this extractor's export and cached features from gc
        leases.hold_for_work(store, HELD_EXTRACTOR, digest)
    if runtime == "torch":
        return load_torch_runtime(path, digest)
    from src.core.errors import ModelError
    from src.features.onnx_runtime import load_onnx_extractor

    if runtime in ("onnx", "onnx-int8"):
        return load_onnx_extractor(path, digest, store, int8=runtime == "onnx-int8")
    try:
        return load_onnx_extractor(path, digest, store)
    except ModelError:
        raise  # the extractor file itself is bad: torch would fail the same way
    except Exception as e:  # noqa: BLE001 — any export/ORT failure has a working fallback
        log.warning("ONNX Runtime unavailable (%s: %s); falling back to torch", type(e).__name__, e)
    return load_torch_runtime(path, digest)
