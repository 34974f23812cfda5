"""Build the real-photo sample that ``make run`` trains on (``src/data/grocery_sample/``).

From the Grocery Store Dataset (Klasson et al., WACV 2019, MIT; ``../shared/datasets/grocery-store``):
12 fine-grained classes taken by a fixed rule (every 5th of the classes that ``val/`` has, in class-id
order), per class the first 5 training photos by file name as ``train/`` (labeled), the next 20 as the
``unlabeled/`` pool, every ``val/`` photo as ``test/`` (other store visits), and the class's catalogue photo
from ``iconic-images-and-descriptions/`` as ``iconic/<class>/`` (a retailer's product shot). Photos are re-encoded with
their shorter side at 256 px (what the 224-px network reads) as JPEG quality 85, so the sample stays
under 10 MB. The dataset's MIT licence travels with it.

    python benchmarks/make_sample.py [--source ../shared/datasets/grocery-store] [--out src/data/grocery_sample]
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path

from PIL import Image

CLASSES, EVERY, LABELED, POOL, SIDE = 12, 5, 5, 25, 256


def _names(source: Path) -> dict[int, str]:
    with open(source / "classes.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    return {int(r[1]): r[0] for r in rows}


def _iconic(source: Path) -> dict[int, str]:
    """Each class's catalogue photo, relative to ``source`` (``classes.csv``'s iconic image path)."""
    with open(source / "classes.csv", newline="") as f:
        rows = list(csv.reader(f))[1:]
    return {int(r[1]): r[4].lstrip("/") for r in rows}


def _listing(source: Path, split: str) -> dict[int, list[str]]:
    out: dict[int, list[str]] = defaultdict(list)
    for line in (source / f"{split}.txt").read_text().splitlines():
        if line.strip():
            path, fine, _ = (s.strip() for s in line.split(","))
            out[int(fine)].append(path)
    return {k: sorted(v) for k, v in out.items()}


def _save(src: Path, dst: Path) -> None:
    with Image.open(src) as im:
        im = im.convert("RGB")
        scale = SIDE / min(im.size)
        if scale < 1:
            im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.Resampling.BICUBIC)
        dst.parent.mkdir(parents=True, exist_ok=True)
        im.save(dst, "JPEG", quality=85)


def build(source: Path, out: Path) -> dict[str, int]:
    names, train, val = _names(source), _listing(source, "train"), _listing(source, "val")
    chosen = sorted(val)[::EVERY][:CLASSES]
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {"train": 0, "unlabeled": 0, "test": 0, "iconic": 0}
    iconic = _iconic(source)
    pool: list[Path] = []
    for cid in chosen:
        name = names[cid]
        photos = train[cid]
        for p in photos[:LABELED]:
            _save(source / p, tmp / "train" / name / Path(p).name)
        pool += [source / p for p in photos[LABELED:LABELED + POOL]]
        for p in val[cid]:
            _save(source / p, tmp / "test" / name / Path(p).name)
        _save(source / iconic[cid], tmp / "iconic" / name / Path(iconic[cid]).name)
        counts["iconic"] += 1
        counts["train"] += len(photos[:LABELED])
        counts["test"] += len(val[cid])
    # The pool's file names say nothing of their class (the dataset's do): a fixed shuffle, numbered names.
    for i, src in enumerate(random.Random(0).sample(pool, len(pool))):
        _save(src, tmp / "unlabeled" / f"photo_{i + 1:03d}.jpg")
    shutil.copyfile(source / "LICENSE", tmp / "LICENSE")
    (tmp / "README.md").write_text(
        "# Grocery Store Dataset sample\n\n"
        f"{CLASSES} classes of real smartphone photos from the Grocery Store Dataset (Marcus Klasson, Cheng Zhang,\n"
        "Hedvig Kjellström, \"A Hierarchical Grocery Store Image Dataset with Visual and Semantic Labels\",\n"
        "WACV 2019), MIT licence: see `LICENSE` (copyright 2019 Marcus Klasson). Cite the paper where results\n"
        "are reported.\n\n"
        f"- `train/<class>/`: {LABELED} labeled photos per class (the first by file name in the dataset's `train/`)\n"
        f"- `unlabeled/`: up to the next {POOL} photos of each class, shuffled and renamed: the pool, without labels\n"
        "- `test/<class>/`: the dataset's `val/` photos of those classes (other store visits)\n"
        "- `iconic/<class>/`: the class's catalogue photo from the dataset's `iconic-images-and-descriptions/`\n\n"
        f"Photos re-encoded with their shorter side at {SIDE} px. Rebuilt by `python benchmarks/make_sample.py`.\n")
    counts["unlabeled"] = len(pool)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[2] / "shared/datasets/grocery-store",
                   help="the Grocery Store Dataset folder (its train.txt, val.txt, classes.csv)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/data/grocery_sample",
                   help="where the sample is written (replaced)")
    a = p.parse_args(argv)
    if not (a.source / "train.txt").is_file():
        print(f"error: no Grocery Store Dataset at {a.source} (train.txt missing)", file=sys.stderr)
        return 2
    counts = build(a.source, a.out)
    size = sum(f.stat().st_size for f in a.out.rglob("*") if f.is_file())
    print(f"{a.out}: {counts['train']} labeled, {counts['unlabeled']} pool, {counts['test']} test photos, "
          f"{counts['iconic']} catalogue shots, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
