"""Tiny on-disk datasets for tests."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_image_folder(root: Path, classes=("a", "b", "c"), per_split=None, size=32) -> Path:
    """``root/{train,test}/{class}/*.png`` with a distinct colour per class."""
    per_split = per_split or {"train": 6, "test": 2}
    colours = [(220, 30, 30), (30, 200, 30), (30, 30, 220), (200, 200, 30), (200, 30, 200)]
    for split, n in per_split.items():
        for ci, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                col = tuple(min(255, v + 5 * i) for v in colours[ci % len(colours)])
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
