"""A ready-to-use predictor for notebooks: ``from src.predictor import Predictor``.

The implementation lives in :mod:`src.inference.predictor`.
"""

from src.inference.predictor import EXTRACTOR_FILENAME, Predictor

__all__ = ["EXTRACTOR_FILENAME", "Predictor"]
