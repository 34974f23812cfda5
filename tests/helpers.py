"""Tiny on-disk datasets for tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_image_folder(root: Path, classes=("a", "b", "c"), per_split=None, size=32) -> Path:
    """``root/{train,test}/{class}/*.png`` with a distinct colour per class; no two files are byte-identical
    (training warns about test images that copy training ones)."""
    per_split = per_split or {"train": 6, "test": 2}
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 30), (200, 30, 200)]
    for si, (split, n) in enumerate(per_split.items()):
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                col = tuple(min(255, v + 5 * i + 2 * si) for v in colours[ci % len(colours)])
                Image.new("RGB", (size, size), col).save(d / f"{c}_{i}.png")
    return root


def train_tiny_models(tmp: Path, test_per_class: int) -> Path:
    """A 4-class synthetic set under ``tmp/data`` and the models trained on it (fast: frozen backbone,
    64-px input, W&B disabled) under ``tmp/models``; returns the data folder."""
    from src.data.synth import generate_dataset
    from src.train_with_wandb import train_with_wandb

    data = generate_dataset(tmp / "data", n_classes=4, train_per_class=20, test_per_class=test_per_class,
                            image_size=64, seed=3)
    train_with_wandb(labeled_ratio=0.5, fine_tune_epochs=0, n_neighbors=5, data_dir=data, models_dir=tmp / "models",
                     store=tmp / "train_store", wandb_mode="disabled", image_size=64, progress=False)
    return data


def random_weight_bundle(models: Path, name: str = "m.skops") -> Path:
    """``models/feature_extractor.pth`` (random EfficientNet-Lite0 weights, 32-px input) and ``models/<name>``,
    a self-training bundle over it (a logistic regression on random features, classes apple/milk/bread)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    from src.core.store import sha256_file
    from src.features.backbone import Preprocessing, create_model, save_extractor
    from src.learning.bundles import save_model_bundle

    ext = models / "feature_extractor.pth"
    save_extractor(create_model(num_classes=0, pretrained=False), ext, Preprocessing.for_size(32))
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(30, 1280)), np.arange(30) % 3
    save_model_bundle(models / name, {
        "algorithm": "self_training", "classifier": LogisticRegression(max_iter=50).fit(X, y),
        "class_names": ["apple", "milk", "bread"], "extractor_digest": sha256_file(ext), "preprocessing": {}})
    return models / name


def shipped(results: dict) -> dict:
    """The metrics of the model training shipped as ``best_model``: the picked algorithm's, or the labeled-only
    baseline's bundle when validation could not show the pool's models better (``results["shipped_baseline"]``)."""
    best = results["summary"]["best_algorithm"]
    return results["shipped_baseline"] if best == "baseline" else results["algorithms"][best]
