"""Generate the synthetic grocery dataset (the drawing itself is :mod:`src.data.synth`).

    python src/synth.py --out DS2GROCERIES --classes 20 --train-per-class 60
    python src/synth.py --out POOLED --train-per-class 6 --unlabeled 2000   # a few labels + a pool
    python src/synth.py --out SHIFTED --style alt --shift-only --per-class 20   # one split for --shift-dir
"""

from __future__ import annotations

import sys
from pathlib import Path

if not __package__:  # `python CHECKOUT/src/x.py` runs CHECKOUT's package, not the one the venv installed
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
from typing import Sequence

from src.core.cli import add_common_flags, print_json, run_cli, show_progress
from src.core.errors import ConfigError
from src.core.paths import DEFAULT_DATA_DIR
from src.data.synth import CLASSES, STYLES, draw_item, draw_styled, generate_dataset, generate_split

__all__ = ["CLASSES", "STYLES", "draw_item", "draw_styled", "generate_dataset", "generate_split", "main"]
TRAIN_PER_CLASS, TEST_PER_CLASS, SHIFT_PER_CLASS = 60, 20, 20


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate the synthetic grocery dataset.")
    p.add_argument("--out", default=DEFAULT_DATA_DIR, metavar="DIR",
                   help=f"folder to write (train/, test/ and unlabeled/ inside; default {DEFAULT_DATA_DIR})")
    p.add_argument("--classes", type=int, default=20, metavar="N",
                   help=f"number of classes, the first N of the {len(CLASSES)} drawn products (default 20)")
    p.add_argument("--train-per-class", type=int, default=None, help=f"training images per class (default {TRAIN_PER_CLASS})")
    p.add_argument("--test-per-class", type=int, default=None, help=f"test images per class (default {TEST_PER_CLASS})")
    p.add_argument("--image-size", type=int, default=128, metavar="PX",
                   help="side of the square images in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0, help="the same seed draws the same images (default 0)")
    p.add_argument("--unlabeled", type=int, default=0, metavar="N",
                   help="also write N unlabeled images of the same classes under OUT/unlabeled/")
    p.add_argument("--pool-truth", default=None, metavar="CSV",
                   help="write the pool's true classes here (path,label), for measuring pseudo-labels")
    p.add_argument("--style", choices=STYLES, default="default",
                   help="how the objects are drawn: default, or alt (hue-rotated palettes, outlines, line "
                        "drawings, hatching, other backgrounds: a style shift of the same classes)")
    p.add_argument("--shift-only", action="store_true",
                   help="write one ImageFolder split OUT/<class>/*.jpg instead of train/ and test/ "
                        "(the same class names as a dataset of the same --classes), for train_with_wandb.py --shift-dir")
    p.add_argument("--per-class", type=int, default=None, metavar="N",
                   help=f"images per class with --shift-only (default {SHIFT_PER_CLASS})")
    add_common_flags(p)

    def run(a: argparse.Namespace) -> int:
        if a.unlabeled < 0:
            raise ConfigError(f"--unlabeled must be >= 0, got {a.unlabeled}")
        if a.shift_only:
            given = [f for f, v in (("--train-per-class", a.train_per_class), ("--test-per-class", a.test_per_class),
                                    ("--unlabeled", a.unlabeled or None), ("--pool-truth", a.pool_truth)) if v is not None]
            if given:
                raise ConfigError(f"{given[0]} does not apply with --shift-only, which writes one split",
                                  hint="use --per-class N for its size")
            out = generate_split(a.out, a.classes, SHIFT_PER_CLASS if a.per_class is None else a.per_class,
                                 a.image_size, a.seed, style=a.style, progress=show_progress(a))
        else:
            if a.per_class is not None:
                raise ConfigError("--per-class applies only with --shift-only",
                                  hint="use --train-per-class and --test-per-class for a dataset")
            out = generate_dataset(a.out, a.classes,
                                   TRAIN_PER_CLASS if a.train_per_class is None else a.train_per_class,
                                   TEST_PER_CLASS if a.test_per_class is None else a.test_per_class,
                                   a.image_size, a.seed, unlabeled=a.unlabeled, pool_truth=a.pool_truth,
                                   progress=show_progress(a), style=a.style)
        print_json({"out": str(out)}) if a.json else print(out)
        return 0

    return run_cli(p, argv, run, flags={"out_dir": "--out"})


if __name__ == "__main__":
    raise SystemExit(main())
