"""Reading an old pickle bundle once, for ``model_registry.py convert --i-trust-these-files`` only.

Before skops the suite wrote each bundle as a pickle, and unpickling runs whatever the
file asks for. The conversion runs only after the user says they trust the files, and
even then it does not hand the file to plain ``pickle``: this unpickler resolves only the
globals that the suite's own bundles were ever made of (listed below, measured with
``pickletools`` on bundles of all three algorithms, KD-tree and brute-force graphs,
numpy scalars and arrays), so a pickle that asks for ``os.system`` or ``builtins.eval``
is refused before anything is called. Nothing else in the suite reads pickles.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any

from src.core.errors import ModelError
from src.learning.bundles import validate_bundle

# module.qualname → allowed. Classes are instantiated by NEWOBJ + __setstate__; the few
# functions rebuild numpy arrays, scalars and KD-trees from plain data.
LEGACY_GLOBALS = frozenset({
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.Normalizer",
    "sklearn.decomposition._pca.PCA",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.semi_supervised._self_training.SelfTrainingClassifier",
    "sklearn.semi_supervised._label_propagation.LabelSpreading",
    "sklearn.semi_supervised._label_propagation.LabelPropagation",
    "sklearn.neighbors._unsupervised.NearestNeighbors",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._kd_tree.newObj",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.newObj",
    "src.learning.semi_supervised.InductiveGraphClassifier",
    "numpy.dtype",
    "numpy.ndarray",
    "numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar",
    "numpy._core.numeric._frombuffer", "numpy.core.numeric._frombuffer",
})


class _BundleUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, where: str):
        super().__init__(io.BytesIO(data))
        self.where = where

    def find_class(self, module: str, name: str) -> Any:
        if f"{module}.{name}" not in LEGACY_GLOBALS:
            raise ModelError(f"refusing to convert {self.where}: it asks for {module}.{name}, which no "
                             "grocery-mlops model contains and which could run code",
                             hint="this is not a model the suite wrote; delete it")
        return super().find_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise ModelError(f"refusing to convert {self.where}: it uses persistent ids, which no grocery-mlops "
                         "model contains")


def read_legacy_bundle(data: bytes, where: str | os.PathLike) -> dict[str, Any]:
    """The bundle in an old pickle model file, unpickled with :data:`LEGACY_GLOBALS` only."""
    try:
        bundle = _BundleUnpickler(data, str(where)).load()
    except ModelError:
        raise
    except Exception as e:  # truncated or damaged pickles fail in many ways
        raise ModelError(f"{where} is not a readable pickle model file ({type(e).__name__})") from e
    bundle = validate_bundle(bundle, where)
    bundle.pop("_digest", None)
    return bundle
