"""Loading a saved feature extractor into a runtime (torch eager now; ONNX Runtime later)."""

from __future__ import annotations

import os
from pathlib import Path

from src.backbone import load_extractor
from src.features import TorchExtractor


def load_runtime(path: str | os.PathLike, digest: str, runtime: str = "auto"):
    """An extractor callable on NHWC float batches with ``.preprocessing`` and ``.key``."""
    model, pre = load_extractor(Path(path))
    return TorchExtractor(model, pre, key=f"{digest}:{pre.key()}")
