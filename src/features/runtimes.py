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


ONNX_PRETRAINED_FROM = 150  # images to extract from which exporting the pretrained backbone pays: the export and
                           # its session cost ~1 s once per store, then ~290 img/s against torch's ~60 (T17)


def pretrained_extractor(preprocessing, store: Store | None = None, images: int = 0, runtime: str = "auto"):
    """The ImageNet-pretrained backbone (no fine-tuning) as an extractor; its cache key names the weights file's
    digest, so its features are cached like any extractor's (the same key in either runtime, as for float32).

    With a ``store``, a runtime other than ``torch``, and an export in the store already or at least
    :data:`ONNX_PRETRAINED_FROM` ``images`` to extract, ONNX Runtime runs its float32 export (made once,
    ``<store>/onnx/<weights digest>-<size>.onnx``); otherwise torch, also where the export or session fails."""
    from src.core.store import sha256_file
    from src.features.backbone import create_model, pretrained_weights_path
    from src.features.extraction import TorchExtractor

    digest = sha256_file(pretrained_weights_path())
    key = f"{digest}:{preprocessing.key()}"
    if store is not None and resolve_runtime(runtime) != "torch":
        from src.features.onnx_runtime import OrtExtractor, export_onnx, onnx_cache_path

        path = onnx_cache_path(store, digest, preprocessing.image_size)
        if path.is_file() or (images >= ONNX_PRETRAINED_FROM and store.writable):  # a read-only store: torch
            leases.hold_for_work(store, HELD_EXTRACTOR, digest)  # gc keeps the export while this job uses it
            try:
                if not path.is_file():
                    log.info("exporting the pretrained backbone to ONNX (%s)", path.name)
                    export_onnx(create_model(num_classes=0, pretrained=True), preprocessing, path)
                return OrtExtractor(path, key=key)
            except Exception as e:  # noqa: BLE001 — torch computes the same features, only slower
                log.warning("the pretrained backbone stays in torch (%s: %s)", type(e).__name__, e)
    return TorchExtractor(create_model(num_classes=0, pretrained=True), preprocessing, key=key)


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
