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
