"""The shifted style of the synthetic grocery set: the same objects, drawn by another hand.

``draw_alt_item`` draws a class with the same shape routine as the default style
(:mod:`src.data.synth`) but changes what a model trained on that style leans on: the palette is
hue-rotated and desaturated, and each image takes one rendering — a thick dark outline, a
contour-only line drawing, flat colour with hatching, or a posterised noisy fill — on backgrounds
the default style never draws (paper, dark, checkerboard, diagonal stripes). Shapes, label bands
and proportions stay, so the classes stay recognisable: a model trained on the default style
scores clearly lower on it, far above chance (figures in MLOPS.md, "Style shift").
"""

from __future__ import annotations

import colorsys
import random

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from src.data.synth_shapes import SHAPES, Color, GroceryClass, jitter, shade

RENDERINGS = ("outline", "contour", "hatched", "posterised")
BACKGROUNDS = ("paper", "dark", "checker", "stripes")
CANVAS = 256
INK: Color = (25, 22, 30)


def alt_palette(col: Color, rng: random.Random) -> Color:
    """``col`` hue-rotated by 25-60 degrees either way and desaturated to 40-75 %."""
    h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in col))
    h = (h + rng.choice((-1, 1)) * rng.uniform(25, 60) / 360) % 1.0
    s *= rng.uniform(0.4, 0.75)
    v = 0.25 + 0.7 * v
    return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(h, s, min(1.0, v)))  # type: ignore[return-value]


def _ink_layer(mask: Image.Image, colour: Color) -> Image.Image:
    layer = Image.new("RGBA", mask.size, (*colour, 255))
    layer.putalpha(mask)
    return layer


def _render(obj: Image.Image, how: str, col: Color, rng: random.Random) -> Image.Image:
    """Re-draw the object ``obj`` (RGBA on a transparent canvas) in rendering ``how``."""
    alpha = obj.getchannel("A").point(lambda a: 255 if a > 0 else 0)
    width = rng.choice((9, 11, 13))
    if how == "outline":
        ring = alpha.filter(ImageFilter.MaxFilter(width))
        out = _ink_layer(ring, INK)
        out.alpha_composite(obj)
        return out
    if how == "contour":
        inner = obj.convert("L").filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 24 else 0)
        outer = ImageChops.subtract(alpha.filter(ImageFilter.MaxFilter(5)), alpha.filter(ImageFilter.MinFilter(3)))
        lines = ImageChops.lighter(ImageChops.multiply(inner, alpha), outer).filter(ImageFilter.MaxFilter(3))
        paper = (rng.randint(225, 250), rng.randint(220, 245), rng.randint(200, 235))
        out = _ink_layer(alpha, paper)
        out.alpha_composite(_ink_layer(lines, INK))
        return out
    if how == "hatched":
        out = obj.copy()
        hatch = Image.new("L", obj.size, 0)
        d = ImageDraw.Draw(hatch)
        step = rng.randint(7, 12)
        for k in range(-CANVAS, CANVAS, step):
            d.line([k, CANVAS, k + CANVAS, 0], fill=255, width=2)
        out.alpha_composite(_ink_layer(ImageChops.multiply(hatch, alpha), shade(col, 0.45)))
        return out
    # posterised: few colour levels, heavy per-pixel noise, on the object only
    rgb = ImageOps.posterize(obj.convert("RGB"), 2)
    grain = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 40.0, (CANVAS, CANVAS, 1))
    noisy = np.clip(np.asarray(rgb, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
    out = Image.fromarray(noisy, "RGB").convert("RGBA")
    out.putalpha(alpha)
    return out


def _alt_background(size: int, rng: random.Random) -> Image.Image:
    kind = rng.choice(BACKGROUNDS)
    if kind == "paper":
        base = (rng.randint(230, 250), rng.randint(225, 245), rng.randint(205, 230))
        grain = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 8.0, (size, size, 1))
        arr = np.clip(np.asarray(base, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, "RGB")
    if kind == "dark":
        return Image.new("RGB", (size, size), (rng.randint(10, 45), rng.randint(10, 45), rng.randint(15, 60)))
    a = alt_palette((rng.randint(40, 220), rng.randint(40, 220), rng.randint(40, 220)), rng)
    b = shade(a, rng.uniform(0.55, 0.8))
    bg = Image.new("RGB", (size, size), a)
    d = ImageDraw.Draw(bg)
    step = max(4, size // rng.randint(4, 8))
    if kind == "checker":
        for i in range(0, size, step):
            for j in range(0, size, step):
                if (i // step + j // step) % 2:
                    d.rectangle([i, j, i + step - 1, j + step - 1], fill=b)
    else:
        for k in range(-size, size, step):
            d.line([k, size, k + size, 0], fill=b, width=max(1, step // 2))
    return bg


def draw_alt_item(cls: GroceryClass, size: int, rng: random.Random) -> Image.Image:
    """One image of ``cls`` in the shifted style (deterministic for the state of ``rng``)."""
    col = alt_palette(jitter(rng.choice(cls.colors), rng), rng)
    acc = alt_palette(jitter(cls.accent, rng, 15), rng)
    obj = Image.new("RGBA", (CANVAS, CANVAS), (0, 0, 0, 0))
    SHAPES[cls.shape](ImageDraw.Draw(obj), CANVAS, col, acc, rng)
    obj = _render(obj, rng.choice(RENDERINGS), col, rng)
    obj = obj.rotate(rng.uniform(-35, 35), resample=Image.BICUBIC, expand=False)
    side = max(8, int(size * rng.uniform(0.6, 1.0)))
    obj = obj.resize((side, side), Image.BICUBIC)
    img = _alt_background(size, rng)
    x = rng.randint(min(0, size - side), max(0, size - side))
    y = rng.randint(min(0, size - side), max(0, size - side))
    img.paste(obj, (x, y), obj)
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.85, 1.25))
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return img
