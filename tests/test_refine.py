"""The pseudo-label fine-tuning round (src/training/refine.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from src.features.finetune import FineTuneResult
from src.learning.semi_supervised import UNLABELED
from src.training import refine


def _blobs(n_classes=4, per_class=60, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, 32)) * 4
    X = np.concatenate([c + rng.normal(size=(per_class, 32)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), per_class)
    return X, y


def test_selection_is_unlabeled_agreeing_capped_and_right_on_easy_data():
    X, y = _blobs()
    y_partial = np.full(len(y), UNLABELED)
    y_partial[::15] = y[::15]  # 4 labels per class
    rows, labels = refine.select_pseudo_labels(refine.fit_views(X, y_partial, 5, 0), X, y_partial, per_class=25)
    assert len(rows) and (y_partial[rows] == UNLABELED).all()
    assert np.bincount(labels, minlength=4).max() <= 25
    assert (labels == y[rows]).mean() >= 0.95
    assert (np.diff(rows) > 0).all()


@pytest.fixture()
def tiny(tmp_path):
    from src.data.synth import generate_dataset

    return generate_dataset(tmp_path / "data", n_classes=3, train_per_class=16, test_per_class=4, image_size=48,
                            seed=5, progress=False)


def _train(tmp_path, data, **kw):
    from src.train_with_wandb import train_with_wandb

    opts = dict(labeled_ratio=0.5, fine_tune_epochs=1, pseudo_finetune_epochs=1, n_neighbors=5, data_dir=data,
                models_dir=tmp_path / "models", store=tmp_path / "store", wandb_mode="disabled", image_size=64,
                progress=False, algorithms=["self_training"])
    opts.update(kw)
    return train_with_wandb(**opts)


def test_round_runs_is_cached_and_keeps_the_baseline_on_first_round_features(tmp_path, tiny, monkeypatch):
    from src.training import fitting

    seen, extras = {}, []
    real, real_tune = fitting.fit_and_evaluate, refine.fine_tune

    def spy(name, s):  # the first call per name: the table's row (a shipped baseline is fitted again)
        seen.setdefault(name, s.baseline_features is not None)
        return real(name, s)

    def spy_tune(*a, **k):
        extras.append(k.get("extra"))
        return real_tune(*a, **k)

    monkeypatch.setattr(fitting, "fit_and_evaluate", spy)
    monkeypatch.setattr(refine, "fine_tune", spy_tune)
    r = _train(tmp_path, tiny)
    rec = r["extractor"]["pseudo_label_round"]
    assert rec["ran"] and rec["pseudo_labels"] > 0 and not rec["cached"]
    # the pseudo-labeled images are trained under strong augmentation
    assert len(extras) == 1 and extras[0].strong and len(extras[0].paths) == rec["pseudo_labels"]
    assert rec["heldout_accuracy_before"] is not None and rec["heldout_accuracy_after"] is not None
    assert rec["pseudo_label_accuracy"] is not None  # hidden labels: truth exists
    from src.reporting.text import format_training_summary

    assert "pseudo-label round: " in format_training_summary(r)
    if rec["kept"]:
        payload = torch.load(tmp_path / "models" / "feature_extractor.pth", weights_only=True)
        assert payload["meta"]["pseudo_finetune_epochs"] == 1
        assert seen == {"self_training": True, "baseline": True}
    again = _train(tmp_path, tiny, models_dir=tmp_path / "models2")["extractor"]["pseudo_label_round"]
    assert again["cached"] and again["kept"] == rec["kept"] and again["pseudo_labels"] == rec["pseudo_labels"]
    assert len(extras) == 1  # the cached round fine-tunes nothing


def test_round_is_dropped_when_the_classifiers_do_worse_on_its_features(tmp_path, monkeypatch):
    real = refine.fine_tune

    def blind(*a, **k):  # a round whose extractor sees nothing: every image gets the same features
        model, res = real(*a, **k)
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
        return model, res

    from src.data.synth import generate_dataset

    monkeypatch.setattr(refine, "fine_tune", blind)
    data = generate_dataset(tmp_path / "data4", n_classes=4, train_per_class=24, test_per_class=4, image_size=48,
                            seed=5, progress=False)  # 12 judges: enough to tell a broken round from chance
    r = _train(tmp_path, data)
    rec = r["extractor"]["pseudo_label_round"]
    assert rec["ran"] and not rec["kept"] and "the first extractor is used" in rec["reason"]
    assert rec["heldout_accuracy_after"] < rec["heldout_accuracy_before"] and rec["heldout_p_worse"] < 0.05
    payload = torch.load(tmp_path / "models" / "feature_extractor.pth", weights_only=True)
    assert "pseudo_finetune_epochs" not in payload["meta"]
    assert not list((tmp_path / "models").glob(".refined-*"))


def _right(n_right: int, n: int = 40) -> np.ndarray:
    return np.arange(n) < n_right


@pytest.mark.parametrize("lost, won, kept", [(0, 0, False), (2, 0, False), (5, 0, False), (6, 1, False), (2, 2, False),
                                             (1, 3, True), (3, 4, True), (40, 0, False)])
def test_keep_rule_keeps_only_a_round_that_wins_more_judgements_than_it_loses(lost, won, kept):
    before = np.ones((2, 40), dtype=bool)
    before[1, :won] = False           # the images the round wins were wrong before...
    after = before.copy()
    after[1, :won] = True             # ...and right after
    after[0, :lost] = False           # the ones it loses were right before
    keep, p = refine.keep_round(before, after)
    assert keep is kept and 0 < p <= 1
    if lost <= won:
        assert p == 1.0


def test_keep_rule_p_value_is_the_exact_sign_test():
    before, after = np.ones(10, dtype=bool), np.ones(10, dtype=bool)
    after[:3] = False  # 3 lost, 0 won: P(at least 3 of 3 by chance) = 1/8
    assert refine.keep_round(before, after) == (False, pytest.approx(0.125))


def test_keep_rule_breaks_a_tie_on_the_log_loss():
    same = np.ones(10, dtype=bool)
    assert refine.keep_round(same, same, loss_before=0.9, loss_after=0.7)[0]
    assert not refine.keep_round(same, same, loss_before=0.7, loss_after=0.9)[0]


def test_the_run_follows_the_keep_rule(tmp_path, tiny, monkeypatch):
    calls = []
    real = refine.heldout_scores

    def judged(views, X, rows, truth):
        acc, loss, right = real(views, X, rows, truth)
        calls.append(right.shape)
        return (acc, loss, np.ones_like(right)) if len(calls) == 1 else (acc, loss, np.zeros_like(right))

    monkeypatch.setattr(refine, "heldout_scores", judged)  # the round loses every judgement
    rec = _train(tmp_path, tiny)["extractor"]["pseudo_label_round"]
    assert calls[0] == calls[1] and calls[0][0] == 2  # two views, the same judges before and after
    assert not rec["kept"] and rec["heldout_p_worse"] < 0.05 and "the first extractor is used" in rec["reason"]


def test_one_held_out_part_validates_both_fine_tunes_and_judges_the_round(tmp_path, tiny, monkeypatch):
    """MLOPS.md "One validation scheme": the first fine-tune, the round's fine-tune and the round's judges
    use the same held-out labeled images, and no pseudo-labeled image the round trains on is one of them."""
    from src.training import pipeline

    held_out, trained, judged = [], [], []

    def spy(real, into):
        def call(paths, labels, fit_idx, val_idx, *a, **k):
            held_out.append(sorted(str(paths[i]) for i in val_idx))
            extra = k.get("extra")
            into.append({str(paths[i]) for i in fit_idx} | ({str(q) for q in extra.paths} if extra else set()))
            return real(paths, labels, fit_idx, val_idx, *a, **k)
        return call

    real_scores = refine.heldout_scores

    def scores(views, X, rows, truth):
        judged.append(rows.copy())
        return real_scores(views, X, rows, truth)

    monkeypatch.setattr(pipeline, "fine_tune", spy(pipeline.fine_tune, trained))
    monkeypatch.setattr(refine, "fine_tune", spy(refine.fine_tune, trained))
    monkeypatch.setattr(refine, "heldout_scores", scores)
    datasets = []
    real_refine = pipeline.refine_extractor
    monkeypatch.setattr(pipeline, "refine_extractor", lambda ds, *a, **k: datasets.append(ds) or real_refine(ds, *a, **k))
    r = _train(tmp_path, tiny)
    assert r["extractor"]["pseudo_label_round"]["ran"]
    assert len(held_out) == 2 and held_out[0] == held_out[1] and held_out[0]  # one split, both fine-tunes
    train_paths = [str(q) for q in datasets[0].train.paths]
    assert len(judged) == 2 and all(sorted(train_paths[i] for i in rows) == held_out[0] for rows in judged)
    assert not set(held_out[0]) & (trained[0] | trained[1])  # never trained on, under any label


def test_heldout_scores_average_the_views():
    class Fixed:
        classes_ = np.array([0, 1, 2])

        def __init__(self, proba):
            self.proba = np.asarray(proba)

        def predict_proba(self, X):
            return self.proba[X[:, 0].astype(int)]

    X = np.arange(2, dtype=float)[:, None]
    a = Fixed([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])   # both right
    b = Fixed([[0.2, 0.6, 0.2], [0.0, 1.0, 0.0]])     # first wrong
    acc, loss, right = refine.heldout_scores((a, b), X, np.array([0, 1]), np.array([0, 1]))
    assert acc == pytest.approx(0.75) and right.tolist() == [[True, True], [False, True]]
    assert loss == pytest.approx(np.mean([-(np.log(0.5) + np.log(0.8)) / 2, -(np.log(0.2) + np.log(1.0)) / 2]))


def test_round_off_and_without_unlabeled_images(tmp_path, tiny, caplog):
    import logging
    import warnings

    r = _train(tmp_path, tiny, pseudo_finetune_epochs=0, fine_tune_epochs=0)
    assert r["extractor"]["pseudo_label_round"]["ran"] is False
    assert "every training image is labeled" not in caplog.text
    caplog.set_level(logging.INFO, logger="src.training.pipeline")
    with warnings.catch_warnings(record=True) as caught:  # scikit-learn's own warning stays off the terminal
        warnings.simplefilter("always")
        r = _train(tmp_path, tiny, labeled_ratio=1.0, fine_tune_epochs=0, models_dir=tmp_path / "m2",
                   algorithms=["self_training", "label_spreading"])
    assert r["extractor"]["pseudo_label_round"]["reason"] == "no unlabeled images"
    assert not [w for w in caught if "no unlabeled samples" in str(w.message)]
    assert caplog.text.count("every training image is labeled and there is no unlabeled/ pool") == 1


def test_negative_epochs_is_one_line_error(tmp_path, tiny, capsys):
    from src.train_with_wandb import main

    rc = main(["--data-dir", str(tiny), "--pseudo-finetune-epochs", "-1", "--store", str(tmp_path / "s"),
               "--wandb-mode", "disabled", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "pseudo_finetune_epochs" in err[0]


def test_start_weights_must_be_an_extractor(tmp_path):
    from src.features.finetune import _start_model

    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": {"foo.weight": torch.zeros(1)}}, bad)
    with pytest.raises(ValueError, match="extractor weights"):
        _start_model(3, bad)


def test_round_learns_from_a_real_pool(tmp_path):
    from src.data.synth import generate_dataset

    data = generate_dataset(tmp_path / "pooled", n_classes=3, train_per_class=8, test_per_class=3, image_size=48,
                            seed=6, unlabeled=30, progress=False)
    r = _train(tmp_path, data, labeled_ratio=None)
    rec = r["extractor"]["pseudo_label_round"]
    assert r["config"]["labeled_ratio"] == 1.0 and r["dataset"]["pool_samples"] == 30
    assert rec["ran"] and 0 < rec["pseudo_labels"] <= 30
    assert rec["pseudo_label_accuracy"] is None  # no truth in a pool


def _photo(size=64):
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8))


def test_strong_augmentation_is_seeded_keeps_the_shape_and_leaves_the_image_alone():
    import random

    from src.features.backbone import Preprocessing
    from src.features import finetune

    pre, img = Preprocessing.for_size(32), _photo()
    before = np.asarray(img).copy()
    a = finetune._strong_augment(img, pre, random.Random(3))
    assert a.shape == pre(img).shape and a.dtype == pre(img).dtype
    assert np.array_equal(a, finetune._strong_augment(img, pre, random.Random(3)))
    assert np.array_equal(np.asarray(img), before)  # later epochs reuse the decoded image
    light = [finetune._augment(img, pre, random.Random(s)) for s in range(8)]
    strong = [finetune._strong_augment(img, pre, random.Random(s)) for s in range(8)]
    # further from the plain transform than the light augmentation, on average (cut-out, wider crops)
    dist = lambda views: np.mean([np.abs(v - pre(img)).mean() for v in views])  # noqa: E731
    assert dist(strong) > dist(light)


def test_light_augmentation_is_unchanged_so_first_round_cache_keys_still_hold():
    """The first round's cache key does not name the augmentation: the light one must draw the same
    random numbers and produce the same crop as before the strong one was added (2026-12-02)."""
    import random

    from PIL import ImageEnhance

    from src.features.backbone import Preprocessing
    from src.features import finetune

    pre, img = Preprocessing.for_size(32), _photo()
    rng = random.Random(11)
    w, h = img.size
    scale = rng.uniform(0.6, 1.0)
    cw, ch = max(8, int(w * scale ** 0.5)), max(8, int(h * scale ** 0.5))
    x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
    ref = img.crop((x, y, x + cw, y + ch))
    if rng.random() < 0.5:
        ref = ref.transpose(0)
    ref = ImageEnhance.Brightness(ref).enhance(rng.uniform(0.8, 1.2))
    ref = ImageEnhance.Contrast(ref).enhance(rng.uniform(0.8, 1.2))
    assert np.array_equal(finetune._augment(img, pre, random.Random(11)), pre(ref))


@pytest.mark.parametrize("strong", [False, True])
def test_only_pseudo_labeled_images_get_strong_augmentation(tmp_path, strong, monkeypatch):
    import random

    from src.features import finetune
    from src.features.backbone import Preprocessing

    paths = []
    for i in range(4):
        paths.append(tmp_path / f"{i}.png")
        _photo(32).save(paths[-1])
    seen = []
    monkeypatch.setattr(finetune, "_augment", lambda img, pre, rng: seen.append("light") or np.zeros(1))
    monkeypatch.setattr(finetune, "_strong_augment", lambda img, pre, rng: seen.append("strong") or np.zeros(1))
    extra = finetune.PseudoLabeled(paths[2:], np.array([0, 1]), per_epoch=2, strong=strong)
    with finetune._Images(paths[:2], np.array([0, 1]), Preprocessing.for_size(16), extra) as images:
        rng = random.Random(0)
        drawn = images.draw(rng)
        images.batch([0, 1] + drawn, rng, images.pre)
    assert seen == ["light", "light"] + ["strong" if strong else "light"] * 2



def test_the_rounds_pseudo_label_knobs_come_from_the_config(tmp_path, tiny, monkeypatch, capsys):
    """pseudo_labels_per_class caps what select_pseudo_labels keeps and pseudo_labels_per_epoch what an epoch
    draws, in production, from TrainConfig (flags and sweeps set them there); below 1 is one line, exit 2."""
    from src.train_with_wandb import build_parser, config_from_args, main

    picked, drawn = [], []
    real_select, real_tune = refine.select_pseudo_labels, refine.fine_tune

    def select(views, X, y, per_class):
        picked.append(per_class)
        return real_select(views, X, y, per_class)

    def tune(*a, extra=None, **k):
        drawn.append(extra.per_epoch)
        return real_tune(*a, extra=extra, **k)

    monkeypatch.setattr(refine, "select_pseudo_labels", select)
    monkeypatch.setattr(refine, "fine_tune", tune)
    r = _train(tmp_path, tiny, pseudo_labels_per_class=2, pseudo_labels_per_epoch=3)
    assert picked == [2] and drawn == [3]
    assert 0 < r["extractor"]["pseudo_label_round"]["pseudo_labels"] <= 2 * 3  # 3 classes, 2 each at most
    assert r["config"]["pseudo_labels_per_class"] == 2
    cfg = config_from_args(build_parser().parse_args(["--pseudo-labels-per-class", "7"]))
    assert cfg.pseudo_labels_per_class == 7 and cfg.pseudo_labels_per_epoch == 1200
    capsys.readouterr()  # what the training above logged
    rc = main(["--data-dir", str(tiny), "--pseudo-labels-per-epoch", "0", "--store", str(tmp_path / "s"),
               "--wandb-mode", "disabled", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pseudo_labels_per_epoch must be >= 1" in err[0]


def test_the_round_trains_at_its_own_image_size(tmp_path, tiny, monkeypatch, capsys):
    """The round's batches are at pseudo_finetune_image_size (0: 5/7 of image_size), its held-out images and
    the extractor at image_size; the first fine-tune trains at image_size. The size is recorded, and a size
    outside [32, image_size] is one line, exit 2."""
    from src.features import finetune
    from src.train_with_wandb import build_parser, config_from_args, main

    sizes = []  # (pseudo-labeled images in the batch?, pixels) of every training batch
    real_batch = finetune._Images.batch

    def batch(self, idx, rng, pre):
        out = real_batch(self, idx, rng, pre)
        sizes.append((self.extra is not None, out.shape[1]))
        return out

    monkeypatch.setattr(finetune._Images, "batch", batch)
    r = _train(tmp_path, tiny, image_size=64)
    first, round_ = {px for extra, px in sizes if not extra}, {px for extra, px in sizes if extra}
    assert first == {64} and round_ == {48}  # 64 * 5/7 on a 16-pixel step
    assert r["extractor"]["pseudo_label_round"]["image_size"] == 48
    sizes.clear()
    r = _train(tmp_path / "b", tiny, image_size=64, pseudo_finetune_image_size=40)
    assert {px for extra, px in sizes if extra} == {40} and r["config"]["pseudo_finetune_image_size"] == 40
    cfg = config_from_args(build_parser().parse_args(["--pseudo-finetune-image-size", "96"]))
    assert cfg.validated().round_image_size() == 96 and config_from_args(build_parser().parse_args([])) \
        .validated().round_image_size() == 160
    capsys.readouterr()
    for bad in ("16", "300"):
        rc = main(["--data-dir", str(tiny), "--pseudo-finetune-image-size", bad, "--store", str(tmp_path / "s"),
                   "--wandb-mode", "disabled", "--no-progress"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "pseudo_finetune_image_size must be 0 or in [32" in err[0], err
