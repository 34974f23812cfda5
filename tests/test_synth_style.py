"""The synthetic generator's second style: deterministic, different, and the default style unchanged."""

import hashlib
import random

import numpy as np
import pytest
from PIL import Image

from src.data.synth import CLASSES, draw_styled, generate_dataset
from src.synth import main

# Every default-style image of 20 classes (1 train + 1 test each, 64 px, seed 7) and 3 pool images, as
# main's generator wrote them before the second style existed: the default style must keep its bytes
# (make run's dataset, cached features and measured figures depend on them).
DEFAULT_DIGEST = "aff160a62c80d301ecc1079bd5241880f463b34c2008dc3cc6349fb7e3014c07"


def tree_digest(root):
    h = hashlib.sha256()
    files = sorted(root.rglob("*.jpg"))
    for p in files:
        h.update(p.relative_to(root).as_posix().encode())
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return len(files), h.hexdigest()


def test_default_style_bytes_are_unchanged(tmp_path):
    out = generate_dataset(tmp_path / "d", n_classes=20, train_per_class=1, test_per_class=1, image_size=64,
                           seed=7, unlabeled=3, progress=False)
    assert tree_digest(out) == (43, DEFAULT_DIGEST)


def test_alt_style_is_deterministic_and_differs_from_the_default():
    for cls in CLASSES[:6]:
        a = np.asarray(draw_styled(cls, 64, random.Random(f"s-{cls.name}"), "alt"))
        b = np.asarray(draw_styled(cls, 64, random.Random(f"s-{cls.name}"), "alt"))
        d = np.asarray(draw_styled(cls, 64, random.Random(f"s-{cls.name}"), "default"))
        assert a.shape == d.shape == (64, 64, 3)
        assert np.array_equal(a, b)
        assert np.abs(a.astype(int) - d.astype(int)).mean() > 10


def test_shift_only_writes_one_split_with_the_dataset_class_names(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "s"), "--classes", "3", "--style", "alt", "--shift-only",
                 "--per-class", "2", "--image-size", "48", "--seed", "5", "--no-progress"]) == 0
    assert main(["--out", str(tmp_path / "s2"), "--classes", "3", "--style", "alt", "--shift-only",
                 "--per-class", "2", "--image-size", "48", "--seed", "5", "--no-progress"]) == 0
    assert main(["--out", str(tmp_path / "d"), "--classes", "3", "--train-per-class", "1", "--test-per-class", "0",
                 "--no-progress"]) == 0
    capsys.readouterr()
    names = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "d" / "train").iterdir()) == sorted(c.name for c in CLASSES[:3])
    for c in names:
        files = sorted((tmp_path / "s" / c).iterdir())
        assert len(files) == 2 and Image.open(files[0]).size == (48, 48)
    assert tree_digest(tmp_path / "s") == tree_digest(tmp_path / "s2")  # same seed, same bytes
    assert not (tmp_path / "s" / "train").exists()


def test_an_alt_dataset_differs_from_the_default_one(tmp_path):
    kw = dict(n_classes=2, train_per_class=2, test_per_class=1, image_size=32, seed=1, progress=False)
    a = generate_dataset(tmp_path / "a", style="alt", **kw)
    d = generate_dataset(tmp_path / "d", **kw)
    assert sorted(p.relative_to(a) for p in a.rglob("*.jpg")) == sorted(p.relative_to(d) for p in d.rglob("*.jpg"))
    assert tree_digest(a) != tree_digest(d)


@pytest.mark.parametrize("args, message", [
    (["--shift-only", "--unlabeled", "5"], "--unlabeled does not apply with --shift-only"),
    (["--shift-only", "--train-per-class", "5"], "--train-per-class does not apply with --shift-only"),
    (["--per-class", "5"], "--per-class applies only with --shift-only"),
    (["--shift-only", "--per-class", "0"], "per_class must be >= 1"),
    (["--style", "watercolour"], "invalid choice"),
])
def test_bad_flags_are_one_line_errors(tmp_path, capsys, args, message):
    code = main(["--out", str(tmp_path / "o"), "--classes", "2", "--no-progress", *args])
    err = capsys.readouterr().err.strip()
    assert code != 0 and message in err, err
    assert "Traceback" not in err and len(err.splitlines()) <= 2, err
    assert not any((tmp_path / "o").rglob("*.jpg"))
