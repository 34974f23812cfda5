"""Generate the synthetic grocery dataset (the drawing itself is :mod:`src.data.synth`).

    python src/synth.py --out DS2GROCERIES --classes 20 --train-per-class 60
    python src/synth.py --out POOLED --train-per-class 6 --unlabeled 2000   # a few labels + a pool
"""

from __future__ import annotations

import argparse
from typing import Sequence

from src.core.cli import add_common_flags, run_cli, show_progress
from src.core.errors import ConfigError
from src.data.synth import CLASSES, draw_item, generate_dataset

__all__ = ["CLASSES", "draw_item", "generate_dataset", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate the synthetic grocery dataset.")
    p.add_argument("--out", default="DS2GROCERIES")
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--train-per-class", type=int, default=60)
    p.add_argument("--test-per-class", type=int, default=20)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--unlabeled", type=int, default=0, metavar="N",
                   help="also write N unlabeled images of the same classes under OUT/unlabeled/")
    p.add_argument("--pool-truth", default=None, metavar="CSV",
                   help="write the pool's true classes here (path,label), for measuring pseudo-labels")
    add_common_flags(p)

    def run(a: argparse.Namespace) -> int:
        if a.unlabeled < 0:
            raise ConfigError(f"--unlabeled must be >= 0, got {a.unlabeled}")
        out = generate_dataset(a.out, a.classes, a.train_per_class, a.test_per_class, a.image_size, a.seed,
                               unlabeled=a.unlabeled, pool_truth=a.pool_truth, progress=show_progress(a))
        print(out)
        return 0

    return run_cli(p, argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
