"""Catalogue shots in ``iconic/<class>/``: labeled training images that never judge or test."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import make_image_folder
from PIL import Image

from src.core.errors import DataError
from src.data.dataset import image_dataset


def _catalogue(root, classes=("a", "b", "c"), shade=90):
    for i, c in enumerate(classes):
        (root / "iconic" / c).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32, 32), (shade + 40 * i, 250, shade)).save(root / "iconic" / c / f"{c}_shot.png")
    return root


def test_catalogue_shots_join_train_marked_after_the_photos(tmp_path):
    data = _catalogue(make_image_folder(tmp_path / "d", per_split={"train": 4, "test": 1}))
    ds = image_dataset(data, progress=False)
    assert len(ds.train) == 15 and ds.n_catalogue == 3
    assert list(ds.catalogue) == [False] * 12 + [True] * 3
    assert [p.parent.parent.name for p in ds.train.paths[12:]] == ["iconic"] * 3
    assert [ds.classes[c] for c in ds.train.labels[12:]] == ["a", "b", "c"]
    plain = image_dataset(make_image_folder(tmp_path / "p", per_split={"train": 4, "test": 1}), progress=False)
    assert plain.n_catalogue == 0 and not plain.catalogue.any() and len(plain.catalogue) == 12


def test_a_catalogue_class_unknown_to_train_is_one_error(tmp_path, capsys):
    from src.train_with_wandb import main

    data = _catalogue(make_image_folder(tmp_path / "d", per_split={"train": 4, "test": 1}), classes=("a", "kiwi"))
    with pytest.raises(DataError, match="class 'kiwi' in iconic has no folder in train"):
        image_dataset(data, progress=False)
    rc = main(["--data-dir", str(data), "--store", str(tmp_path / "s"), "--wandb-mode", "disabled", "--no-progress"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert rc == 2 and len(err) == 1 and "kiwi" in err[0]


def test_catalogue_shots_always_train_and_never_judge(tmp_path):
    from types import SimpleNamespace

    from src.core.store import Store
    from src.training.config import TrainConfig
    from src.training.pipeline import labeled_holdout, validation_folds

    from src.training.pipeline import SAMPLE_DIR

    data = tmp_path / "d"  # real photos: solid-colour ones of a class are near-identical and never held out
    for c in ("Banana", "Arla-Standard-Milk", "Carrots"):
        for split, n in (("train", 6), ("test", 1)):
            (data / split / c).mkdir(parents=True)
            for f in sorted((SAMPLE_DIR / split / c).iterdir())[:n]:
                shutil.copyfile(f, data / split / c / f.name)
    _catalogue(data, classes=("Banana", "Arla-Standard-Milk", "Carrots"))
    ds = image_dataset(data, progress=False)
    cat = np.flatnonzero(ds.catalogue)
    mask = np.ones(len(ds.train), dtype=bool)
    logged: dict = {}
    for seed in range(3):
        cfg = TrainConfig(data_dir=str(data), fine_tune_epochs=1, val_fraction=0.5, seed=seed, image_size=64)
        fit, val = labeled_holdout(cfg, ds, mask, Store(tmp_path / "s"), SimpleNamespace(log=logged.update))
        assert set(cat) <= set(fit) and not set(cat) & set(val) and len(val)
        assert sorted(np.concatenate([fit, val])) == list(range(len(ds.train)))
    X = np.random.default_rng(0).normal(size=(len(ds.train), 8))
    folds = validation_folds(TrainConfig(fine_tune_epochs=0), ds, mask, X, (fit, val))
    assert (folds[cat] == -1).all() and (folds[~ds.catalogue] >= 0).all()


def test_training_uses_the_catalogue_as_labels_even_when_labels_are_hidden(tmp_path):
    from src.train_with_wandb import train_with_wandb

    data = _catalogue(make_image_folder(tmp_path / "d", per_split={"train": 6, "test": 2}))
    r = train_with_wandb(data_dir=data, labeled_ratio=0.5, fine_tune_epochs=0, pseudo_finetune_epochs=0,
                         n_neighbors=3, image_size=32, models_dir=tmp_path / "m", store=tmp_path / "s",
                         wandb_mode="disabled", progress=False)
    assert r["dataset"]["catalogue_samples"] == 3
    assert r["dataset"]["labeled_per_class"] == {"a": 4, "b": 4, "c": 4}  # 3 of 6 photos + the catalogue shot


def test_the_quality_check_treats_the_catalogue_as_training_data(tmp_path):
    from src.data.quality import quality_check

    data = _catalogue(make_image_folder(tmp_path / "d", per_split={"train": 3, "test": 1}))
    shutil.copyfile(data / "train" / "a" / "a_0.png", data / "iconic" / "a" / "copy_of_train.png")
    report = quality_check(data, progress=False)
    kinds = {f["kind"] for f in report["findings"]}
    assert "leakage" not in kinds  # a catalogue shot equal to a training photo is a duplicate, not a leak
    shutil.copyfile(data / "test" / "b" / "b_0.png", data / "iconic" / "b" / "copy_of_test.png")
    leaks = [f for f in quality_check(data, progress=False)["findings"] if f["kind"] == "leakage"]
    assert len(leaks) == 1 and "iconic/b/copy_of_test.png" in leaks[0]["paths"]


def test_the_summary_names_the_catalogue_shots(tmp_path):
    from src.reporting.text import format_training_summary
    from src.train_with_wandb import train_with_wandb

    data = _catalogue(make_image_folder(tmp_path / "d", per_split={"train": 4, "test": 1}))
    r = train_with_wandb(data_dir=data, fine_tune_epochs=0, pseudo_finetune_epochs=0, n_neighbors=3, image_size=32,
                         models_dir=tmp_path / "m", store=tmp_path / "s", wandb_mode="disabled", progress=False)
    assert "15 train (15 labeled, 3 of them catalogue shots)" in format_training_summary(r)
