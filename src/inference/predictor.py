"""A ready-to-use predictor: classifier bundle + the feature extractor it was trained with.

Both files are checked before use: the model's digest (sidecar or registry) and its types before
it is built (skops, never pickle), and the extractor's file digest against the one recorded in the model,
so a model is never paired with the wrong extractor. :func:`require_reference` is the one check that a
model carries the training reference drift detection compares against (monitoring and serving need it).

This package sits below registry, monitoring and serving: it imports none of them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Union

import numpy as np

from src.core.errors import DataError, ModelError
from src.core.paths import EXTRACTOR_FILE
from src.learning.bundles import load_model_bundle
from src.core.store import sha256_file

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

# One image: a file path, a PIL image, or a numpy array (HxWx3 uint8 RGB, HxW grayscale, uint16 too).
ImageInput = Union[str, os.PathLike, "Image.Image", np.ndarray]
Prediction = tuple[str, float, np.ndarray]


class Predictor:
    """A trained classifier with the feature extractor it was trained with, ready to predict.

    Build one with :meth:`load` (a model file) or
    :func:`src.registry.api.load_model_from_registry` (a registered version)::

        from src.predictor import Predictor
        pred = Predictor.load("models/best_model.skops")
        label, confidence, probs = pred.predict("apple.jpg")     # or a PIL image, or a numpy array
        results = pred.predict([img1, "b.jpg", array])            # many: a list of such tuples

    Images go through the same decoding as the training files (:func:`src.core.images.load_image`):
    CMYK, grayscale, palette, RGBA (on white) and 16-bit images become 8-bit RGB.
    ``class_names`` orders the columns of every probability vector.
    """

    def __init__(self, bundle: dict, extractor):
        self.bundle = bundle
        self.extractor = extractor
        self.class_names: list[str] = list(bundle["class_names"])
        self.classifier = bundle["classifier"]

    @classmethod
    def load(cls, model_path: str | os.PathLike, extractor_path: str | os.PathLike | None = None, *,
             model_digest: str | None = None, extractor_digest: str | None = None,
             runtime: str = "auto", store=None) -> "Predictor":
        """Load a model file (``*.skops``) and its feature extractor, both checked before use.

        ``extractor_path`` defaults to ``feature_extractor.pth`` beside the model; its digest must be
        the one recorded in the model. ``model_digest`` / ``extractor_digest`` pin the expected sha256
        of each file (the registry passes them). ``runtime`` picks feature extraction: ``auto`` (ONNX
        Runtime with torch fallback; int8 when the model was trained on int8 features), ``torch``,
        ``onnx`` or ``onnx-int8``. ``store`` is the local store for the ONNX cache (default: the
        project's). Raises :class:`~src.core.errors.ModelError` for a missing, tampered or mismatched file.
        """
        bundle = load_model_bundle(model_path, expected_digest=model_digest)
        extractor_path = Path(extractor_path or Path(model_path).with_name(EXTRACTOR_FILE))
        if not extractor_path.is_file():
            raise ModelError(f"feature extractor {extractor_path} does not exist",
                             hint=f"pass `extractor_path` with the models/{EXTRACTOR_FILE} trained with this model",
                             params=("extractor_path",))
        actual = sha256_file(extractor_path)
        if extractor_digest and actual != extractor_digest:
            raise ModelError(f"feature extractor {extractor_path} fails its digest check",
                             hint="the file was modified or swapped; re-fetch it")
        if actual != bundle["extractor_digest"]:
            raise ModelError(f"feature extractor {extractor_path} is not the one {Path(model_path).name} was "
                             f"trained with (digest {actual[:12]}, expected {bundle['extractor_digest'][:12]})",
                             hint=f"use the {EXTRACTOR_FILE} saved with this model")
        from src.features.runtimes import ENV_VAR, load_runtime, resolve_runtime
        from src.core.store import Store

        if runtime == "auto" and not os.environ.get(ENV_VAR) and bundle.get("extractor_precision") == "int8":
            runtime = "onnx-int8"  # the classifier and its drift reference saw int8 features
        calibration = bundle.get("int8_calibration")
        if resolve_runtime(runtime) == "onnx-int8" and isinstance(calibration, dict):
            from src.features.int8_calibration import load_calibrated_int8

            # the int8 extractor the model was trained with: calibrated on its training images
            return cls(bundle, load_calibrated_int8(extractor_path, actual, calibration, Store.of(store)))
        extractor = load_runtime(extractor_path, actual, runtime=runtime, store=Store.of(store))
        trained = bundle.get("extractor_precision", "float32")
        if getattr(extractor, "precision", "float32") != trained:
            log.warning("extracting %s features for a model trained on %s features (runtime %s): predictions "
                        "and drift figures may shift", extractor.precision, trained, runtime)
        return cls(bundle, extractor)

    def predict_features(self, feats: np.ndarray) -> np.ndarray:
        """Class probabilities for extracted features, columns in ``class_names`` order."""
        proba = self.classifier.predict_proba(feats)
        out = np.zeros((len(feats), len(self.class_names)), dtype=np.float64)
        out[:, self.classifier.classes_.astype(int)] = proba
        return out

    def features(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32) -> np.ndarray:
        """The extractor's features for one image or many (see :meth:`predict`), one row each."""
        from src.features.extraction import extract

        return extract(self.extractor, _as_list(images)[0], batch_size=batch_size, progress=False)

    def predict_paths(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32) -> list[Prediction]:
        """``(class name, confidence, probabilities)`` for each image, in order; always a list.

        ``images``: file paths, PIL images or numpy arrays (HxWx3 uint8, HxW grayscale), one or a
        list mixing them, or an N x H x W x C array. Decoded ``batch_size`` at a time. An unreadable
        image raises :class:`~src.core.errors.DataError` naming it.
        """
        items, _ = _as_list(images)
        if not items:
            return []
        probs = self.predict_features(self.features(items, batch_size))
        return [(self.class_names[int(p.argmax())], float(p.max()), p) for p in probs]

    def predict(self, images: ImageInput | Iterable[ImageInput], batch_size: int = 32
                ) -> Prediction | list[Prediction]:
        """``(class name, confidence, probabilities)`` for one image; a list of them for many.

        One image is a file path, a PIL image or a numpy array (HxWx3 uint8 RGB or HxW grayscale);
        many is a list or tuple of those (mixed is fine) or an N x H x W x C array.
        """
        items, single = _as_list(images)
        out = self.predict_paths(items, batch_size)
        return out[0] if single else out


def require_reference(predictor: Predictor, ref: str | os.PathLike) -> None:
    """Refuse a model without reference statistics (``ref`` names it): drift detection compares against them."""
    if "reference" not in predictor.bundle:
        raise ModelError(f"{ref} has no reference statistics for drift detection",
                         hint="retrain it with this version of train_with_wandb")


def _as_list(images) -> tuple[list, bool]:
    """``(items, was a single image)``; paths become :class:`Path`."""
    from PIL import Image

    from src.core.images import is_path

    if is_path(images) or isinstance(images, Image.Image):
        return [Path(images) if is_path(images) else images], True
    if isinstance(images, np.ndarray):
        return (list(images), False) if images.ndim == 4 else ([images], True)
    if isinstance(images, (bytes, bytearray, dict)) or not isinstance(images, Iterable):
        raise DataError(f"cannot predict a {type(images).__name__}",
                        hint="pass a file path, a PIL image, a numpy array, or a list of them")
    items = [Path(x) if is_path(x) else x for x in images]
    return items, False
