"""benchmarks/real_photos.py: --suggest labels picked pool images with their true class, on a copy; --set reaches training."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_photos.py"
TRUTH = {f"unlabeled/photo_{i:05d}.jpg": c for i, c in enumerate(["apple", "milk", "apple", "pear", "milk"])}


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_photos", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def draw(tmp_path) -> Path:
    """A draw's folder: one labeled photo per class and a pool of five, each photo a distinct colour."""
    data = tmp_path / "k1-d0"
    files = {f"train/{c}/{c}_001.jpg": c for c in ("apple", "milk", "pear")} | TRUTH
    for i, rel in enumerate(files):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (40 * i, 255 - 40 * i, 7 * i)).save(data / rel)
    return data


def test_label_pool_moves_each_pick_into_its_true_class(bench, draw):
    picks = ["unlabeled/photo_00001.jpg", "unlabeled/photo_00003.jpg"]
    before = {p: (draw / p).read_bytes() for p in picks}
    bench.label_pool(draw, picks, TRUTH)
    for p in picks:
        moved = draw / "train" / TRUTH[p] / Path(p).name
        assert moved.read_bytes() == before[p] and not (draw / p).exists()
    assert sorted(p.name for p in (draw / "unlabeled").iterdir()) == ["photo_00000.jpg", "photo_00002.jpg",
                                                                     "photo_00004.jpg"]
    assert {c.name: len(list(c.iterdir())) for c in (draw / "train").iterdir()} == {"apple": 1, "milk": 2, "pear": 2}


def test_labeling_a_copy_leaves_the_draw_as_it_was(bench, draw):
    copy = draw.with_name("k1-d0-suggest")
    bench.copy_draw(draw, copy)
    bench.label_pool(copy, ["unlabeled/photo_00000.jpg"], TRUTH)
    assert (draw / "unlabeled/photo_00000.jpg").is_file() and not (draw / "train/apple/photo_00000.jpg").exists()
    assert (copy / "train/apple/photo_00000.jpg").read_bytes() == (draw / "unlabeled/photo_00000.jpg").read_bytes()


def test_random_picks_are_seeded_distinct_pool_images(bench):
    picks = bench.random_picks(TRUTH, 3, seed=1)
    assert picks == bench.random_picks(TRUTH, 3, seed=1) and len(set(picks)) == 3 and set(picks) <= set(TRUTH)


def test_set_options_reach_the_training_config(bench, monkeypatch, tmp_path):
    assert bench._option("pseudo_finetune_epochs=1") == ("pseudo_finetune_epochs", 1)
    assert bench._option("runtime=onnx") == ("runtime", "onnx")  # not JSON: the string
    with pytest.raises(Exception, match="KEY=VALUE"):
        bench._option("pseudo_finetune_epochs")
    seen = {}
    import src.training.pipeline as pipeline

    monkeypatch.setattr(pipeline, "run_training", lambda cfg: seen.setdefault("cfg", cfg))
    bench._train(tmp_path, tmp_path / "m", tmp_path / "s", 2, "auto", {"pseudo_finetune_epochs": 1})
    assert seen["cfg"].pseudo_finetune_epochs == 1 and seen["cfg"].seed == 2
    with pytest.raises(TypeError, match="unknown training option"):
        bench._train(tmp_path, tmp_path / "m", tmp_path / "s", 2, "auto", {"pseudo_finetune_epoch": 1})


def test_first_draw_starts_the_seeds_there(bench, monkeypatch, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.txt").write_text("")
    seen = []

    def one_run(source, work, k, draw, *rest):
        seen.append((k, draw))
        return {"k": k or "all", "draw": draw, "picked_test": 0.5, "baseline_test": 0.4, "val_estimate": None,
                "seconds": 1.0}, {}

    monkeypatch.setattr(bench, "one_run", one_run)
    assert bench.main(["--source", str(tmp_path / "src"), "--work", str(tmp_path / "w"), "--k", "3", "all",
                       "--draws", "2", "--first-draw", "6"]) == 0
    assert seen == [(3, 6), (3, 7), (None, 6)]
