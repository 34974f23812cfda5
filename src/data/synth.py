"""A procedural grocery dataset, so the main command runs on a fresh machine.

Real product photos cannot be shipped, so ``generate_dataset`` draws about 20 grocery
classes with PIL — fruit, vegetables, cartons, cans, bottles, boxes, bags — each with
its own shape family, colour palette, texture and label band, then varies background,
rotation, scale, position, lighting, blur, noise and JPEG quality. Some classes share
colours or shapes (orange/tomato/lemon, can/jar, milk/juice carton) so the task is not
trivially separable by colour alone. Seeded: the same seed gives the same bytes.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

log = logging.getLogger(__name__)

Color = tuple[int, int, int]


@dataclass(frozen=True)
class GroceryClass:
    name: str
    shape: str           # drawing routine, see SHAPES
    colors: tuple[Color, ...]
    accent: Color
    texture: str = "none"  # none | dots | stripes | speckle | grid


CLASSES: tuple[GroceryClass, ...] = (
    GroceryClass("apple", "round", ((200, 30, 40), (170, 20, 30), (120, 180, 50)), (90, 60, 20), "speckle"),
    GroceryClass("orange", "round", ((245, 140, 20), (235, 120, 10)), (60, 120, 40), "dots"),
    GroceryClass("lemon", "oval", ((245, 220, 40), (235, 205, 30)), (120, 150, 40), "dots"),
    GroceryClass("tomato", "round", ((225, 50, 30), (240, 90, 30)), (40, 140, 40), "none"),
    GroceryClass("banana", "crescent", ((240, 210, 50), (220, 200, 70)), (90, 70, 30), "speckle"),
    GroceryClass("grapes", "cluster", ((110, 40, 120), (90, 160, 60)), (70, 110, 40), "none"),
    GroceryClass("carrot", "cone", ((240, 120, 20), (230, 100, 30)), (50, 150, 40), "stripes"),
    GroceryClass("broccoli", "tree", ((40, 120, 40), (60, 140, 50)), (120, 170, 80), "speckle"),
    GroceryClass("watermelon", "wedge", ((230, 50, 70), (240, 70, 80)), (40, 120, 50), "dots"),
    GroceryClass("bread", "loaf", ((200, 150, 80), (180, 120, 60)), (240, 220, 180), "speckle"),
    GroceryClass("cheese", "wedge_flat", ((250, 210, 80), (245, 190, 60)), (230, 170, 50), "dots"),
    GroceryClass("eggs", "egg_box", ((210, 200, 185), (190, 175, 150)), (245, 240, 230), "none"),
    GroceryClass("milk", "carton", ((245, 245, 250), (230, 235, 245)), (40, 90, 200), "none"),
    GroceryClass("juice", "carton", ((250, 160, 30), (60, 180, 60)), (250, 240, 230), "stripes"),
    GroceryClass("soda_can", "can", ((200, 20, 30), (30, 60, 180), (30, 30, 30)), (230, 230, 230), "stripes"),
    GroceryClass("jam_jar", "jar", ((150, 20, 50), (200, 60, 90)), (230, 200, 120), "grid"),
    GroceryClass("water_bottle", "bottle", ((150, 200, 240), (180, 220, 245)), (30, 90, 200), "none"),
    GroceryClass("cereal_box", "box", ((230, 200, 40), (40, 120, 210), (220, 60, 40)), (250, 250, 250), "grid"),
    GroceryClass("chips_bag", "bag", ((230, 40, 40), (240, 200, 30), (40, 150, 220)), (250, 250, 250), "stripes"),
    GroceryClass("yogurt", "cup", ((245, 245, 245), (240, 230, 235)), (200, 60, 140), "dots"),
)


def _jitter(c: Color, rng: random.Random, amount: int = 25) -> Color:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c)  # type: ignore[return-value]


def _shade(c: Color, f: float) -> Color:
    return tuple(max(0, min(255, int(v * f))) for v in c)  # type: ignore[return-value]


# -- shape routines: draw on a square RGBA canvas of side s ------------------------------
def _round(d: ImageDraw.ImageDraw, s: int, col: Color, acc: Color, rng: random.Random) -> None:
    r = s * 0.36
    d.ellipse([s / 2 - r, s / 2 - r * 0.95, s / 2 + r, s / 2 + r], fill=col)
    d.ellipse([s / 2 - r * 0.5, s / 2 - r * 0.7, s / 2 - r * 0.1, s / 2 - r * 0.3], fill=_shade(col, 1.25))
    d.line([s / 2, s / 2 - r, s / 2 + r * 0.1, s / 2 - r * 1.25], fill=acc, width=max(2, s // 40))
    if rng.random() < 0.7:
        d.ellipse([s / 2 + r * 0.05, s / 2 - r * 1.25, s / 2 + r * 0.55, s / 2 - r * 1.0], fill=(60, 140, 50))


def _oval(d, s, col, acc, rng):
    d.ellipse([s * 0.18, s * 0.3, s * 0.82, s * 0.7], fill=col)
    d.ellipse([s * 0.12, s * 0.45, s * 0.2, s * 0.55], fill=_shade(col, 0.85))
    d.ellipse([s * 0.8, s * 0.45, s * 0.88, s * 0.55], fill=_shade(col, 0.85))


def _crescent(d, s, col, acc, rng):
    d.pieslice([s * 0.1, s * 0.15, s * 0.9, s * 0.95], 200, 340, fill=col)
    d.pieslice([s * 0.18, s * 0.32, s * 0.82, s * 0.98], 195, 345, fill=(0, 0, 0, 0))
    d.rectangle([s * 0.12, s * 0.5, s * 0.18, s * 0.56], fill=acc)


def _cluster(d, s, col, acc, rng):
    r = s * 0.07
    for row in range(5):
        n = 5 - row
        for i in range(n):
            x = s / 2 + (i - (n - 1) / 2) * r * 1.8 + rng.uniform(-2, 2)
            y = s * 0.3 + row * r * 1.6
            d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(col, rng, 15), outline=_shade(col, 0.7))
    d.line([s / 2, s * 0.12, s / 2, s * 0.25], fill=acc, width=max(2, s // 40))


def _cone(d, s, col, acc, rng):
    d.polygon([(s * 0.4, s * 0.25), (s * 0.6, s * 0.25), (s * 0.5, s * 0.9)], fill=col)
    for k in range(3):
        d.line([s * 0.5, s * 0.25, s * (0.38 + 0.12 * k), s * 0.08], fill=acc, width=max(2, s // 30))


def _tree(d, s, col, acc, rng):
    d.rectangle([s * 0.44, s * 0.5, s * 0.56, s * 0.88], fill=acc)
    for _ in range(9):
        x, y, r = s * rng.uniform(0.3, 0.7), s * rng.uniform(0.22, 0.5), s * rng.uniform(0.1, 0.16)
        d.ellipse([x - r, y - r, x + r, y + r], fill=_jitter(col, rng, 12))


def _wedge(d, s, col, acc, rng):
    d.pieslice([s * 0.1, s * 0.0, s * 0.9, s * 0.8], 20, 160, fill=acc)
    d.pieslice([s * 0.15, s * 0.0, s * 0.85, s * 0.72], 20, 160, fill=col)
    for _ in range(6):
        x, y = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.45, 0.6)
        d.ellipse([x - 2, y - 3, x + 2, y + 3], fill=(20, 20, 20))


def _wedge_flat(d, s, col, acc, rng):
    d.polygon([(s * 0.15, s * 0.7), (s * 0.85, s * 0.7), (s * 0.85, s * 0.45), (s * 0.15, s * 0.6)], fill=col)
    d.polygon([(s * 0.15, s * 0.6), (s * 0.85, s * 0.45), (s * 0.85, s * 0.38)], fill=_shade(col, 1.1))
    for _ in range(4):
        x, y, r = s * rng.uniform(0.3, 0.8), s * rng.uniform(0.55, 0.65), s * 0.03
        d.ellipse([x - r, y - r, x + r, y + r], fill=acc)


def _egg_box(d, s, col, acc, rng):
    d.rectangle([s * 0.1, s * 0.45, s * 0.9, s * 0.75], fill=col)
    for i in range(4):
        x = s * (0.2 + i * 0.2)
        d.ellipse([x - s * 0.08, s * 0.3, x + s * 0.08, s * 0.52], fill=acc)


def _carton(d, s, col, acc, rng):
    d.rectangle([s * 0.3, s * 0.3, s * 0.7, s * 0.9], fill=col, outline=_shade(col, 0.7))
    d.polygon([(s * 0.3, s * 0.3), (s * 0.5, s * 0.12), (s * 0.7, s * 0.3)], fill=_shade(col, 0.9))
    d.rectangle([s * 0.3, s * 0.5, s * 0.7, s * 0.65], fill=acc)


def _can(d, s, col, acc, rng):
    d.rectangle([s * 0.32, s * 0.22, s * 0.68, s * 0.82], fill=col)
    d.ellipse([s * 0.32, s * 0.16, s * 0.68, s * 0.28], fill=(200, 200, 205))
    d.ellipse([s * 0.32, s * 0.76, s * 0.68, s * 0.88], fill=_shade(col, 0.7))
    d.rectangle([s * 0.32, s * 0.45, s * 0.68, s * 0.55], fill=acc)


def _jar(d, s, col, acc, rng):
    d.rounded_rectangle([s * 0.28, s * 0.3, s * 0.72, s * 0.85], radius=s // 10, fill=col)
    d.rectangle([s * 0.3, s * 0.2, s * 0.7, s * 0.32], fill=(200, 170, 60))
    d.rectangle([s * 0.32, s * 0.5, s * 0.68, s * 0.68], fill=acc)


def _bottle(d, s, col, acc, rng):
    d.rounded_rectangle([s * 0.36, s * 0.35, s * 0.64, s * 0.9], radius=s // 14, fill=col)
    d.polygon([(s * 0.36, s * 0.36), (s * 0.45, s * 0.2), (s * 0.55, s * 0.2), (s * 0.64, s * 0.36)], fill=col)
    d.rectangle([s * 0.45, s * 0.1, s * 0.55, s * 0.2], fill=acc)
    d.rectangle([s * 0.36, s * 0.55, s * 0.64, s * 0.68], fill=_shade(acc, 1.3))


def _box(d, s, col, acc, rng):
    d.rectangle([s * 0.25, s * 0.15, s * 0.72, s * 0.88], fill=col, outline=_shade(col, 0.6))
    d.polygon([(s * 0.72, s * 0.15), (s * 0.8, s * 0.2), (s * 0.8, s * 0.92), (s * 0.72, s * 0.88)], fill=_shade(col, 0.7))
    d.ellipse([s * 0.33, s * 0.45, s * 0.63, s * 0.75], fill=acc)
    d.rectangle([s * 0.3, s * 0.22, s * 0.67, s * 0.35], fill=_shade(col, 0.5))


def _bag(d, s, col, acc, rng):
    d.polygon([(s * 0.25, s * 0.2), (s * 0.75, s * 0.2), (s * 0.8, s * 0.85), (s * 0.2, s * 0.85)], fill=col)
    for x in range(5):
        d.line([s * (0.27 + x * 0.115), s * 0.2, s * (0.27 + x * 0.115), s * 0.15], fill=_shade(col, 0.7), width=2)
    d.ellipse([s * 0.35, s * 0.4, s * 0.65, s * 0.65], fill=acc)


def _loaf(d, s, col, acc, rng):
    d.rounded_rectangle([s * 0.12, s * 0.4, s * 0.88, s * 0.78], radius=s // 6, fill=col)
    for i in range(4):
        x = s * (0.25 + 0.17 * i)
        d.line([x, s * 0.45, x + s * 0.08, s * 0.6], fill=acc, width=max(2, s // 35))


def _cup(d, s, col, acc, rng):
    d.polygon([(s * 0.3, s * 0.35), (s * 0.7, s * 0.35), (s * 0.64, s * 0.85), (s * 0.36, s * 0.85)], fill=col)
    d.rectangle([s * 0.28, s * 0.3, s * 0.72, s * 0.36], fill=(210, 210, 215))
    d.ellipse([s * 0.42, s * 0.5, s * 0.58, s * 0.66], fill=acc)


SHAPES: dict[str, Callable] = {
    "round": _round, "oval": _oval, "crescent": _crescent, "cluster": _cluster, "cone": _cone,
    "tree": _tree, "wedge": _wedge, "wedge_flat": _wedge_flat, "egg_box": _egg_box, "carton": _carton,
    "can": _can, "jar": _jar, "bottle": _bottle, "box": _box, "bag": _bag, "loaf": _loaf, "cup": _cup,
}


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
    base = (rng.randint(90, 245),) * 3 if rng.random() < 0.4 else _jitter((rng.randint(60, 230), rng.randint(60, 230), rng.randint(60, 230)), rng, 0)
    bg = Image.new("RGB", (size, size), base)
    d = ImageDraw.Draw(bg)
    style = rng.choice(["plain", "shelf", "gradient", "tiles"])
    if style == "shelf":
        y = int(size * rng.uniform(0.7, 0.85))
        d.rectangle([0, y, size, size], fill=_shade(base, 0.6))
    elif style == "gradient":
        for y in range(size):
            d.line([0, y, size, y], fill=_shade(base, 0.7 + 0.5 * y / size))
    elif style == "tiles":
        step = size // rng.randint(3, 6)
        for k in range(0, size, step):
            d.line([k, 0, k, size], fill=_shade(base, 0.8), width=2)
            d.line([0, k, size, k], fill=_shade(base, 0.8), width=2)
    return bg


def draw_item(cls: GroceryClass, size: int, rng: random.Random) -> Image.Image:
    """One photo-like image of ``cls``: object on a background, with photographic variation."""
    canvas = 256
    obj = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))
    col = _jitter(rng.choice(cls.colors), rng)
    SHAPES[cls.shape](ImageDraw.Draw(obj), canvas, col, _jitter(cls.accent, rng, 15), rng)
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


def generate_dataset(out_dir: str | Path, n_classes: int = 20, train_per_class: int = 60,
                     test_per_class: int = 20, image_size: int = 128, seed: int = 0,
                     classes: Sequence[str] | None = None, unlabeled: int = 0,
                     pool_truth: str | Path | None = None, progress: bool = True) -> Path:
    """Write ``out_dir/{train,test}/{class}/*.jpg``; returns ``out_dir``.

    ``unlabeled=N`` also writes a pool of N images of the same classes under
    ``out_dir/unlabeled/batch_XX/`` (sub-folders, as a phone export would have, never
    classes); ``pool_truth`` names a CSV (``path,label``) kept outside the dataset that
    records their true classes, for measuring pseudo-labels. The pool draws from its own
    seeds, so the labeled images are the same bytes with or without it. A progress bar is
    drawn for 200 images or more when ``progress`` is on and stderr is a terminal.
    """
    from src.core.progress import progress_bar

    out = Path(out_dir)
    chosen = [c for c in CLASSES if classes is None or c.name in classes][:n_classes]
    total = len(chosen) * (train_per_class + test_per_class)
    with progress_bar(total=total, progress=progress, minimum=200, desc="generating images", unit="img") as bar:
        for ci, cls in enumerate(chosen):
            for split, n in (("train", train_per_class), ("test", test_per_class)):
                d = out / split / cls.name
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    rng = random.Random(f"{seed}-{cls.name}-{split}-{i}")
                    img = draw_item(cls, image_size, rng)
                    img.save(d / f"{cls.name}_{split}_{i:04d}.jpg", quality=rng.randint(60, 95))
                    bar.update(1)
    if unlabeled:
        _generate_pool(out, chosen, unlabeled, image_size, seed, pool_truth)
    log.info("generated %d images in %d classes under %s", total + unlabeled, len(chosen), out)
    return out


def _generate_pool(out: Path, chosen: Sequence[GroceryClass], n: int, image_size: int, seed: int,
                   pool_truth: str | Path | None) -> None:
    import csv

    if n < 0:
        raise ValueError(f"unlabeled must be >= 0, got {n}")
    rows = []
    for i in range(n):
        rng = random.Random(f"{seed}-unlabeled-{i}")
        cls = rng.choice(list(chosen))
        d = out / "unlabeled" / f"batch_{i // 500:02d}"
        d.mkdir(parents=True, exist_ok=True)
        rel = f"unlabeled/batch_{i // 500:02d}/img_{i:05d}.jpg"
        draw_item(cls, image_size, rng).save(out / rel, quality=rng.randint(60, 95))
        rows.append((rel, cls.name))
    if pool_truth is not None:
        with open(pool_truth, "w", newline="") as f:
            csv.writer(f).writerows([("path", "label"), *rows])
