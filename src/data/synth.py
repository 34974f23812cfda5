"""A procedural grocery dataset, so the main command runs on a fresh machine.

Real product photos cannot be shipped, so ``generate_dataset`` draws about 20 grocery
classes with PIL — fruit, vegetables, cartons, cans, bottles, boxes, bags — each with
its own shape family, colour palette, texture and label band (:mod:`src.data.synth_shapes`),
then varies background, rotation, scale, position, lighting, blur, noise and JPEG quality.
Some classes share colours or shapes (orange/tomato/lemon, can/jar, milk/juice carton) so the
task is not trivially separable by colour alone. Seeded: the same seed gives the same bytes.

A second style (``style="alt"``, :mod:`src.data.synth_alt`) draws the same classes with other
palettes, renderings and backgrounds; ``generate_split`` writes one ImageFolder split of either
style, e.g. the ``--shift-dir`` that training reports ``{algo}/shift_accuracy`` on.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from src.core.errors import ConfigError
from src.data.synth_output import OutputFolder
from src.data.synth_alt import draw_alt_item
from src.data.synth_shapes import CLASSES, SHAPES, GroceryClass, jitter, shade

__all__ = ["CLASSES", "SHAPES", "STYLES", "GroceryClass", "draw_item", "draw_styled", "generate_dataset",
           "generate_split"]
log = logging.getLogger(__name__)
STYLES = ("default", "alt")


def _texture(img: Image.Image, kind: str, rng: random.Random) -> None:
    """Overlay a texture on the object's pixels only (alpha > 0)."""
    if kind == "none":
        return
    s = img.size[0]
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    d = ImageDraw.Draw(layer)
    c = (0, 0, 0, 50) if rng.random() < 0.5 else (255, 255, 255, 60)
    if kind == "dots":
        for _ in range(60):
            x, y = rng.uniform(0, s), rng.uniform(0, s)
            d.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=c)
    elif kind == "speckle":
        for _ in range(150):
            x, y = rng.uniform(0, s), rng.uniform(0, s)
            d.point((x, y), fill=c)
    elif kind == "stripes":
        step = max(4, s // rng.randint(8, 14))
        for y in range(0, s, step):
            d.line([0, y, s, y + step // 2], fill=c, width=max(1, step // 3))
    elif kind == "grid":
        step = max(5, s // 10)
        for k in range(0, s, step):
            d.line([k, 0, k, s], fill=c)
            d.line([0, k, s, k], fill=c)
    mask = img.getchannel("A")
    img.paste(Image.alpha_composite(img, layer), (0, 0), mask)


def _background(size: int, rng: random.Random) -> Image.Image:
    base = (rng.randint(90, 245),) * 3 if rng.random() < 0.4 else jitter((rng.randint(60, 230), rng.randint(60, 230), rng.randint(60, 230)), rng, 0)
    bg = Image.new("RGB", (size, size), base)
    d = ImageDraw.Draw(bg)
    style = rng.choice(["plain", "shelf", "gradient", "tiles"])
    if style == "shelf":
        y = int(size * rng.uniform(0.7, 0.85))
        d.rectangle([0, y, size, size], fill=shade(base, 0.6))
    elif style == "gradient":
        for y in range(size):
            d.line([0, y, size, y], fill=shade(base, 0.7 + 0.5 * y / size))
    elif style == "tiles":
        step = size // rng.randint(3, 6)
        for k in range(0, size, step):
            d.line([k, 0, k, size], fill=shade(base, 0.8), width=2)
            d.line([0, k, size, k], fill=shade(base, 0.8), width=2)
    return bg


def draw_item(cls: GroceryClass, size: int, rng: random.Random) -> Image.Image:
    """One photo-like image of ``cls``: object on a background, with photographic variation."""
    canvas = 256
    obj = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    col = jitter(rng.choice(cls.colors), rng)
    SHAPES[cls.shape](ImageDraw.Draw(obj), canvas, col, jitter(cls.accent, rng, 15), rng)
    _texture(obj, cls.texture, rng)
    obj = obj.rotate(rng.uniform(-35, 35), resample=Image.BICUBIC, expand=False)
    scale = rng.uniform(0.55, 1.0)
    side = max(8, int(size * scale))
    obj = obj.resize((side, side), Image.BICUBIC)
    img = _background(size, rng)
    # a distractor item of a random other shape, partly visible, makes classes overlap a little
    if rng.random() < 0.3:
        other = rng.choice(CLASSES)
        dis = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
        SHAPES[other.shape](ImageDraw.Draw(dis), canvas, rng.choice(other.colors), other.accent, rng)
        dis = dis.resize((size // 2, size // 2), Image.BICUBIC)
        img.paste(dis, (rng.choice([-size // 5, size - size // 3]), rng.randint(0, size // 2)), dis)
    x = rng.randint(min(0, size - side), max(0, size - side))
    y = rng.randint(min(0, size - side), max(0, size - side))
    img.paste(obj, (x, y), obj)
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.65, 1.3))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.75, 1.2))
    if rng.random() < 0.4:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.6)))
    if rng.random() < 0.5:
        # not Image.effect_noise: it draws from C's rand(), so the same seed gave other pixels
        sigma = rng.uniform(5, 25)
        grain = np.random.default_rng(rng.getrandbits(32)).normal(128.0, sigma, (size, size))
        noise = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8), "L").convert("RGB")
        img = Image.blend(img, noise, rng.uniform(0.03, 0.12))
    return img


def draw_styled(cls: GroceryClass, size: int, rng: random.Random, style: str = "default") -> Image.Image:
    """One image of ``cls`` in ``style`` (one of :data:`STYLES`)."""
    return draw_alt_item(cls, size, rng) if style == "alt" else draw_item(cls, size, rng)


def _rng(key: str, style: str) -> random.Random:
    """The seeded generator of one image; the default style's keys are the historical ones (same bytes)."""
    return random.Random(key if style == "default" else f"{key}-{style}")


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}, got {style!r}")


def _chosen(n_classes: int, classes: Sequence[str] | None) -> list[GroceryClass]:
    return [c for c in CLASSES if classes is None or c.name in classes][:n_classes]


def generate_dataset(out_dir: str | Path, n_classes: int = 20, train_per_class: int = 60,
                     test_per_class: int = 20, image_size: int = 128, seed: int = 0,
                     classes: Sequence[str] | None = None, unlabeled: int = 0,
                     pool_truth: str | Path | None = None, progress: bool = True, style: str = "default") -> Path:
    """Write ``out_dir/{train,test}/{class}/*.jpg``; returns ``out_dir``.

    ``unlabeled=N`` also writes a pool of N images of the same classes under
    ``out_dir/unlabeled/batch_XX/`` (sub-folders, as a phone export would have, never
    classes); ``pool_truth`` names a CSV (``path,label``) kept outside the dataset that
    records their true classes, for measuring pseudo-labels. The pool draws from its own
    seeds, so the labeled images are the same bytes with or without it. A progress bar is
    drawn for 200 images or more when ``progress`` is on and stderr is a terminal.
    ``style="alt"`` draws every image in the shifted style, from other seeds.
    """
    from src.core.progress import progress_bar

    _check_style(style)
    out = Path(out_dir)
    chosen = _chosen(n_classes, classes)
    total = len(chosen) * (train_per_class + test_per_class)
    with OutputFolder(out) as w, progress_bar(total=total, progress=progress, minimum=200,
                                              desc="generating images", unit="img") as bar:
        for ci, cls in enumerate(chosen):
            for split, n in (("train", train_per_class), ("test", test_per_class)):
                d = w.folder(out / split / cls.name)
                for i in range(n):
                    rng = _rng(f"{seed}-{cls.name}-{split}-{i}", style)
                    img = draw_styled(cls, image_size, rng, style)
                    w.save(img, d / f"{cls.name}_{split}_{i:04d}.jpg", quality=rng.randint(60, 95))
                    bar.update(1)
        if unlabeled:
            _generate_pool(w, chosen, unlabeled, image_size, seed, pool_truth, style)
    log.info("generated %d images in %d classes under %s", total + unlabeled, len(chosen), out)
    return out


def generate_split(out_dir: str | Path, n_classes: int = 20, per_class: int = 20, image_size: int = 128,
                   seed: int = 0, style: str = "alt", classes: Sequence[str] | None = None,
                   progress: bool = True) -> Path:
    """Write one ImageFolder split ``out_dir/{class}/*.jpg`` (``per_class`` images each, the same class
    names as :func:`generate_dataset` with the same ``n_classes``/``classes``), from seeds no
    train, test or pool image uses; returns ``out_dir``. The default ``style="alt"`` is a
    style-shifted evaluation set for training's ``--shift-dir``."""
    from src.core.progress import progress_bar

    _check_style(style)
    if per_class < 1:
        raise ConfigError(f"per_class must be >= 1, got {per_class}")
    out = Path(out_dir)
    chosen = _chosen(n_classes, classes)
    with OutputFolder(out) as w, progress_bar(total=len(chosen) * per_class, progress=progress, minimum=200,
                                              desc="generating images", unit="img") as bar:
        for cls in chosen:
            d = w.folder(out / cls.name)
            for i in range(per_class):
                rng = _rng(f"{seed}-{cls.name}-shift-{i}", style)
                w.save(draw_styled(cls, image_size, rng, style), d / f"{cls.name}_{style}_{i:04d}.jpg",
                       quality=rng.randint(60, 95))
                bar.update(1)
    log.info("generated %d %s-style images in %d classes under %s", len(chosen) * per_class, style, len(chosen), out)
    return out


def _generate_pool(w: OutputFolder, chosen: Sequence[GroceryClass], n: int, image_size: int, seed: int,
                   pool_truth: str | Path | None, style: str = "default") -> None:
    if n < 0:
        raise ValueError(f"unlabeled must be >= 0, got {n}")
    rows = []
    for i in range(n):
        rng = _rng(f"{seed}-unlabeled-{i}", style)
        cls = rng.choice(list(chosen))
        w.folder(w.out / "unlabeled" / f"batch_{i // 500:02d}")
        rel = f"unlabeled/batch_{i // 500:02d}/img_{i:05d}.jpg"
        w.save(draw_styled(cls, image_size, rng, style), w.out / rel, quality=rng.randint(60, 95))
        rows.append((rel, cls.name))
    if pool_truth is not None:
        from src.core.csv_cells import csv_text

        Path(pool_truth).write_text(csv_text(("path", "label"), rows), encoding="utf-8", newline="")
