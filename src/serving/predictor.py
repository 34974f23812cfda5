"""A ready-to-use predictor: classifier bundle + the feature extractor it was trained with.

Both files are checked before use: the model's digest (sidecar or registry) and its types before
it is built (skops, never pickle), and the extractor's file digest against the one recorded in the model,
so a model is never paired with the wrong extractor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from src.core.errors import ModelError
from src.learning.bundles import load_model_bundle
from src.core.store import sha256_file

EXTRACTOR_FILENAME = "feature_extractor.pth"
log = logging.getLogger(__name__)


class Predictor:
    def __init__(self, bundle: dict, extractor):
        self.bundle = bundle
        self.extractor = extractor
        self.class_names: list[str] = list(bundle["class_names"])
        self.classifier = bundle["classifier"]

    @classmethod
    def load(cls, model_path: str | os.PathLike, extractor_path: str | os.PathLike | None = None, *,
             model_digest: str | None = None, extractor_digest: str | None = None,
             runtime: str = "auto", store=None) -> "Predictor":
        bundle = load_model_bundle(model_path, expected_digest=model_digest)
        extractor_path = Path(extractor_path or Path(model_path).with_name(EXTRACTOR_FILENAME))
        if not extractor_path.is_file():
            raise ModelError(f"feature extractor {extractor_path} does not exist",
                             hint="pass --extractor-path with the models/feature_extractor.pth trained with this model")
        actual = sha256_file(extractor_path)
        if extractor_digest and actual != extractor_digest:
            raise ModelError(f"feature extractor {extractor_path} fails its digest check",
                             hint="the file was modified or swapped; re-fetch it")
        if actual != bundle["extractor_digest"]:
            raise ModelError(f"feature extractor {extractor_path} is not the one {Path(model_path).name} was "
                             f"trained with (digest {actual[:12]}, expected {bundle['extractor_digest'][:12]})",
                             hint="use the feature_extractor.pth saved with this model")
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
        """Class probabilities, columns in ``class_names`` order."""
        proba = self.classifier.predict_proba(feats)
        out = np.zeros((len(feats), len(self.class_names)), dtype=np.float64)
        out[:, self.classifier.classes_.astype(int)] = proba
        return out

    def features(self, paths: Sequence[str | os.PathLike], batch_size: int = 32) -> np.ndarray:
        from src.features.extraction import extract

        return extract(self.extractor, [Path(p) for p in paths], batch_size=batch_size, progress=False)

    def predict_paths(self, paths: Sequence[str | os.PathLike], batch_size: int = 32
                      ) -> list[tuple[str, float, np.ndarray]]:
        probs = self.predict_features(self.features(paths, batch_size))
        return [(self.class_names[int(p.argmax())], float(p.max()), p) for p in probs]

    def predict(self, image_path: str | os.PathLike) -> tuple[str, float, np.ndarray]:
        """``(class name, confidence, probabilities)`` for one image."""
        return self.predict_paths([image_path])[0]
