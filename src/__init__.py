"""grocery-mlops: offline-first MLOps for semi-supervised grocery image classification."""

__version__ = "0.1.0"
