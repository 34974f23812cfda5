"""A ready-to-use predictor for notebooks: ``from src.predictor import Predictor``.

The implementation lives in :mod:`src.inference.predictor`.
"""

from src.core.paths import EXTRACTOR_FILE
from src.inference.predictor import Predictor

EXTRACTOR_FILENAME = EXTRACTOR_FILE  # its earlier name, kept for notebooks that import it

__all__ = ["EXTRACTOR_FILE", "EXTRACTOR_FILENAME", "Predictor"]
