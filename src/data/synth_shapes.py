"""What every style of the synthetic grocery set draws: the classes and their shapes.

Each :class:`GroceryClass` names a shape routine (:data:`SHAPES`), a palette, an accent colour
and a texture; the styles (:mod:`src.data.synth` for the default look, :mod:`src.data.synth_alt`
for the shifted one) decide how the objects are coloured, outlined and set on a background.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from PIL import ImageDraw

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


def jitter(c: Color, rng: random.Random, amount: int = 25) -> Color:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in c)  # type: ignore[return-value]


def shade(c: Color, f: float) -> Color:
    return tuple(max(0, min(255, int(v * f))) for v in c)  # type: ignore[return-value]


# -- shape routines: draw on a square RGBA canvas of side s ------------------------------
def _round(d: ImageDraw.ImageDraw, s: int, col: Color, acc: Color, rng: random.Random) -> None:
    r = s * 0.36
    d.ellipse([s / 2 - r, s / 2 - r * 0.95, s / 2 + r, s / 2 + r], fill=col)
    d.ellipse([s / 2 - r * 0.5, s / 2 - r * 0.7, s / 2 - r * 0.1, s / 2 - r * 0.3], fill=shade(col, 1.25))
    d.line([s / 2, s / 2 - r, s / 2 + r * 0.1, s / 2 - r * 1.25], fill=acc, width=max(2, s // 40))
    if rng.random() < 0.7:
        d.ellipse([s / 2 + r * 0.05, s / 2 - r * 1.25, s / 2 + r * 0.55, s / 2 - r * 1.0], fill=(60, 140, 50))


def _oval(d, s, col, acc, rng):
    d.ellipse([s * 0.18, s * 0.3, s * 0.82, s * 0.7], fill=col)
    d.ellipse([s * 0.12, s * 0.45, s * 0.2, s * 0.55], fill=shade(col, 0.85))
    d.ellipse([s * 0.8, s * 0.45, s * 0.88, s * 0.55], fill=shade(col, 0.85))


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
            d.ellipse([x - r, y - r, x + r, y + r], fill=jitter(col, rng, 15), outline=shade(col, 0.7))
    d.line([s / 2, s * 0.12, s / 2, s * 0.25], fill=acc, width=max(2, s // 40))


def _cone(d, s, col, acc, rng):
    d.polygon([(s * 0.4, s * 0.25), (s * 0.6, s * 0.25), (s * 0.5, s * 0.9)], fill=col)
    for k in range(3):
        d.line([s * 0.5, s * 0.25, s * (0.38 + 0.12 * k), s * 0.08], fill=acc, width=max(2, s // 30))


def _tree(d, s, col, acc, rng):
    d.rectangle([s * 0.44, s * 0.5, s * 0.56, s * 0.88], fill=acc)
    for _ in range(9):
        x, y, r = s * rng.uniform(0.3, 0.7), s * rng.uniform(0.22, 0.5), s * rng.uniform(0.1, 0.16)
        d.ellipse([x - r, y - r, x + r, y + r], fill=jitter(col, rng, 12))


def _wedge(d, s, col, acc, rng):
    d.pieslice([s * 0.1, s * 0.0, s * 0.9, s * 0.8], 20, 160, fill=acc)
    d.pieslice([s * 0.15, s * 0.0, s * 0.85, s * 0.72], 20, 160, fill=col)
    for _ in range(6):
        x, y = s * rng.uniform(0.35, 0.65), s * rng.uniform(0.45, 0.6)
        d.ellipse([x - 2, y - 3, x + 2, y + 3], fill=(20, 20, 20))


def _wedge_flat(d, s, col, acc, rng):
    d.polygon([(s * 0.15, s * 0.7), (s * 0.85, s * 0.7), (s * 0.85, s * 0.45), (s * 0.15, s * 0.6)], fill=col)
    d.polygon([(s * 0.15, s * 0.6), (s * 0.85, s * 0.45), (s * 0.85, s * 0.38)], fill=shade(col, 1.1))
    for _ in range(4):
        x, y, r = s * rng.uniform(0.3, 0.8), s * rng.uniform(0.55, 0.65), s * 0.03
        d.ellipse([x - r, y - r, x + r, y + r], fill=acc)


def _egg_box(d, s, col, acc, rng):
    d.rectangle([s * 0.1, s * 0.45, s * 0.9, s * 0.75], fill=col)
    for i in range(4):
        x = s * (0.2 + i * 0.2)
        d.ellipse([x - s * 0.08, s * 0.3, x + s * 0.08, s * 0.52], fill=acc)


def _carton(d, s, col, acc, rng):
    d.rectangle([s * 0.3, s * 0.3, s * 0.7, s * 0.9], fill=col, outline=shade(col, 0.7))
    d.polygon([(s * 0.3, s * 0.3), (s * 0.5, s * 0.12), (s * 0.7, s * 0.3)], fill=shade(col, 0.9))
    d.rectangle([s * 0.3, s * 0.5, s * 0.7, s * 0.65], fill=acc)


def _can(d, s, col, acc, rng):
    d.rectangle([s * 0.32, s * 0.22, s * 0.68, s * 0.82], fill=col)
    d.ellipse([s * 0.32, s * 0.16, s * 0.68, s * 0.28], fill=(200, 200, 205))
    d.ellipse([s * 0.32, s * 0.76, s * 0.68, s * 0.88], fill=shade(col, 0.7))
    d.rectangle([s * 0.32, s * 0.45, s * 0.68, s * 0.55], fill=acc)


def _jar(d, s, col, acc, rng):
    d.rounded_rectangle([s * 0.28, s * 0.3, s * 0.72, s * 0.85], radius=s // 10, fill=col)
    d.rectangle([s * 0.3, s * 0.2, s * 0.7, s * 0.32], fill=(200, 170, 60))
    d.rectangle([s * 0.32, s * 0.5, s * 0.68, s * 0.68], fill=acc)


def _bottle(d, s, col, acc, rng):
    d.rounded_rectangle([s * 0.36, s * 0.35, s * 0.64, s * 0.9], radius=s // 14, fill=col)
    d.polygon([(s * 0.36, s * 0.36), (s * 0.45, s * 0.2), (s * 0.55, s * 0.2), (s * 0.64, s * 0.36)], fill=col)
    d.rectangle([s * 0.45, s * 0.1, s * 0.55, s * 0.2], fill=acc)
    d.rectangle([s * 0.36, s * 0.55, s * 0.64, s * 0.68], fill=shade(acc, 1.3))


def _box(d, s, col, acc, rng):
    d.rectangle([s * 0.25, s * 0.15, s * 0.72, s * 0.88], fill=col, outline=shade(col, 0.6))
    d.polygon([(s * 0.72, s * 0.15), (s * 0.8, s * 0.2), (s * 0.8, s * 0.92), (s * 0.72, s * 0.88)], fill=shade(col, 0.7))
    d.ellipse([s * 0.33, s * 0.45, s * 0.63, s * 0.75], fill=acc)
    d.rectangle([s * 0.3, s * 0.22, s * 0.67, s * 0.35], fill=shade(col, 0.5))


def _bag(d, s, col, acc, rng):
    d.polygon([(s * 0.25, s * 0.2), (s * 0.75, s * 0.2), (s * 0.8, s * 0.85), (s * 0.2, s * 0.85)], fill=col)
    for x in range(5):
        d.line([s * (0.27 + x * 0.115), s * 0.2, s * (0.27 + x * 0.115), s * 0.15], fill=shade(col, 0.7), width=2)
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

