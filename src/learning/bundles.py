"""Saving and loading model bundles with a digest check before anything is unpickled.

A model file (``models/{algorithm}_model.pkl``) is a pickled dict — the *bundle* —
holding the fitted classifier and everything inference needs: class names, the
feature transform, the extractor digest, preprocessing, metrics, config, seed and
dataset digest. Next to it ``{file}.sha256`` records the file's digest; loading
refuses a file whose bytes do not match (tampered or swapped) *before* unpickling.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from src.core.errors import ModelError
from src.core.store import sha256_file

BUNDLE_FORMAT = "grocery-mlops/model-v1"
REQUIRED_KEYS = ("format", "algorithm", "classifier", "class_names", "extractor_digest", "preprocessing")


def sidecar(path: str | os.PathLike) -> Path:
    return Path(str(path) + ".sha256")


def save_model_bundle(path: str | os.PathLike, bundle: dict[str, Any]) -> str:
    """Write ``bundle`` atomically, then its ``.sha256`` sidecar; returns the digest."""
    bundle = {"format": BUNDLE_FORMAT, **bundle}
    missing = [k for k in REQUIRED_KEYS if k not in bundle]
    if missing:
        raise ValueError(f"model bundle lacks {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(bundle, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)
    digest = sha256_file(path)
    sidecar(path).write_text(digest + "\n")
    return digest


def load_model_bundle(path: str | os.PathLike, expected_digest: str | None = None) -> dict[str, Any]:
    """Load a bundle after checking its digest (``expected_digest`` or the sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", hint="train first, or check the model path")
    if expected_digest is None and sidecar(path).exists():
        expected_digest = sidecar(path).read_text().strip()
    actual = sha256_file(path)
    if expected_digest and actual != expected_digest:
        raise ModelError(f"model file {path} fails its digest check (expected {expected_digest[:12]}, "
                         f"found {actual[:12]})", hint="the file was modified or swapped; retrain or re-fetch it")
    with open(path, "rb") as f:
        head = f.read(2)
    if len(head) < 2 or head[0] != 0x80:
        raise ModelError(f"{path} is not a model file (not a pickle)", hint="pass a models/*_model.pkl file")
    try:
        with open(path, "rb") as f:
            bundle = pickle.load(f)
    except Exception as e:  # unpickling can raise nearly anything on a foreign file
        raise ModelError(f"{path} is not a readable model file ({type(e).__name__})",
                         hint="pass a models/*_model.pkl written by train_with_wandb") from e
    if not isinstance(bundle, dict) or bundle.get("format") != BUNDLE_FORMAT:
        raise ModelError(f"{path} is not a grocery-mlops model bundle", hint="pass a models/*_model.pkl file")
    missing = [k for k in REQUIRED_KEYS if k not in bundle]
    if missing:
        raise ModelError(f"{path} is an incomplete model bundle (no {', '.join(missing)})",
                         hint="retrain it with train_with_wandb")
    bundle["_digest"] = actual
    return bundle
