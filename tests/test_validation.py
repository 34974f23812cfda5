"""The validation scheme that picks the best algorithm: cross-validation over labeled rows only."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from src.learning.semi_supervised import ALGORITHMS, UNLABELED, fit_baseline, fit_semi_supervised
from src.learning.validation import cross_val_accuracy, labeled_folds
from src.training.results import select_best


def partial_blobs(seed=0, n=150, labeled_per_class=6):
    X, y = make_blobs(n_samples=n, centers=3, n_features=8, cluster_std=1.0, random_state=seed)
    rng = np.random.default_rng(seed)
    y_partial = np.full(n, UNLABELED)
    for c in range(3):
        keep = rng.choice(np.flatnonzero(y == c), labeled_per_class, replace=False)
        y_partial[keep] = c
    return X.astype(np.float32), y, y_partial


def test_folds_hold_out_only_labeled_rows_and_never_a_class_only_example():
    y = np.array([0, 0, 0, 1, 1, 2, UNLABELED, UNLABELED])
    folds = labeled_folds(y, k=3, seed=1)
    assert (folds[y == UNLABELED] == -1).all()
    assert folds[5] == -1  # class 2 has one label: always in the fit part
    for f in range(3):
        held = folds == f
        for c in (0, 1):  # every fold keeps at least one label of each class for fitting
            assert ((y == c) & ~held).any()
    assert sorted(folds[:3].tolist()) == [0, 1, 2]


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_cross_val_accuracy_separates_easy_from_impossible(name):
    X, y, y_partial = partial_blobs()
    fit = lambda X_, y_: fit_semi_supervised(name, X_, y_, 5, 0)  # noqa: E731
    assert cross_val_accuracy(fit, X, y_partial, seed=0) >= 0.9
    shuffled = y_partial.copy()
    lab = shuffled != UNLABELED
    shuffled[lab] = np.random.default_rng(3).permutation(shuffled[lab])  # labels unrelated to the data
    assert cross_val_accuracy(fit, X, shuffled, seed=0) < 0.7


def test_held_out_labels_are_hidden_from_the_fit():
    X, y, y_partial = partial_blobs()
    seen = []

    def spy(X_, y_):
        seen.append(y_.copy())
        return fit_baseline(X_, y_, 0)

    cross_val_accuracy(spy, X, y_partial, k=3, seed=0)
    assert len(seen) == 3
    hidden = [np.flatnonzero((y_partial != UNLABELED) & (s == UNLABELED)) for s in seen]
    assert all(len(h) > 0 for h in hidden) and len(set(np.concatenate(hidden).tolist())) == sum(map(len, hidden))


def test_no_validation_possible_with_one_label_per_class():
    X, y, y_partial = partial_blobs(labeled_per_class=1)
    assert cross_val_accuracy(lambda a, b: fit_baseline(a, b, 0), X, y_partial) is None


def test_selection_uses_validation_never_test():
    per = {"label_propagation": {"val_accuracy": 0.80, "test_accuracy": 0.99},
           "label_spreading": {"val_accuracy": 0.90, "test_accuracy": 0.70},
           "self_training": {"val_accuracy": 0.90, "test_accuracy": 0.95}}
    assert select_best(per) == "label_spreading"  # ties go to the configured order, not to test accuracy
    none = {a: {"val_accuracy": None, "test_accuracy": t} for a, t in (("x", 0.1), ("y", 0.9))}
    assert select_best(none) == "x"


def test_accuracy_ties_go_to_the_lower_validation_log_loss():
    per = {"label_propagation": {"val_accuracy": 0.90, "val_log_loss": 0.40, "test_accuracy": 0.99},
           "label_spreading": {"val_accuracy": 0.90, "val_log_loss": 0.20, "test_accuracy": 0.70},
           "self_training": {"val_accuracy": 0.85, "val_log_loss": 0.01, "test_accuracy": 0.95}}
    assert select_best(per) == "label_spreading"  # accuracy first; the tie by log-loss; never test


def test_cross_val_log_loss_rewards_confident_right_answers():
    from src.learning.validation import cross_val_scores

    X, y, y_partial = partial_blobs(labeled_per_class=6)
    fit = lambda a, b: fit_baseline(a, b, 0)  # noqa: E731
    acc, loss = cross_val_scores(fit, X, y_partial, k=3, seed=0)
    assert acc == cross_val_accuracy(fit, X, y_partial, k=3, seed=0) and 0 < loss < np.log(len(np.unique(y)))
    noisy = X + np.random.default_rng(0).normal(size=X.shape) * 3 * X.std()
    assert cross_val_scores(fit, noisy, y_partial, k=3, seed=0)[1] > loss
    assert cross_val_scores(fit, X, np.where(y_partial >= 0, -1, -1), k=3) == (None, None)


def test_standard_error_is_binomial_with_the_plus_two_estimate():
    from src.training.results import standard_error

    assert standard_error(0.5, 100) == pytest.approx(0.05)
    assert standard_error(1.0, 80) == pytest.approx(((81 / 82) * (1 / 82) / 80) ** 0.5)  # never 0 on a perfect score
    assert standard_error(0.95, 300) < standard_error(0.95, 80)


def test_within_one_standard_error_the_preferred_algorithm_wins():
    # 160 validation images, top 0.975: one standard error is about 0.012 (two images)
    per = {"label_propagation": {"val_accuracy": 0.975, "val_log_loss": 0.05, "test_accuracy": 0.90},
           "label_spreading": {"val_accuracy": 0.969, "val_log_loss": 0.04, "test_accuracy": 0.99},
           "self_training": {"val_accuracy": 0.950, "val_log_loss": 0.30, "test_accuracy": 0.99}}
    assert select_best(per) == "label_propagation"  # without the count: the highest accuracy
    assert select_best(per, n_val=160) == "label_spreading"  # self-training is 4 images behind: outside
    per["self_training"]["val_accuracy"] = 0.969
    assert select_best(per, n_val=160) == "self_training"
    assert select_best(per, n_val=100_000) == "label_propagation"  # a tiny error: only the top is close
    one = {"label_propagation": per["label_propagation"]}
    assert select_best(one, n_val=160) == "label_propagation"


def test_algorithms_outside_the_preference_rank_after_it_by_accuracy_then_log_loss():
    per = {"x": {"val_accuracy": 0.90, "val_log_loss": 0.3}, "y": {"val_accuracy": 0.90, "val_log_loss": 0.1},
           "z": {"val_accuracy": 0.89, "val_log_loss": 0.0}}
    assert select_best(per, n_val=80) == "y"
    per["label_spreading"] = {"val_accuracy": 0.88, "val_log_loss": 0.5}
    assert select_best(per, n_val=80) == "label_spreading"
    none = {a: {"val_accuracy": None} for a in ("self_training", "label_propagation")}
    assert select_best(none, n_val=80) == "self_training"  # no validation: the configured order


def test_held_out_count_is_every_labeled_row_of_a_class_with_two_labels():
    from src.learning.validation import held_out_count

    y_partial = np.array([0, 0, 0, 1, 2, 2, UNLABELED, UNLABELED])
    assert held_out_count(y_partial) == 5  # class 1's single label is never held out


def test_the_printed_line_says_when_the_pick_is_not_the_top():
    from src.reporting.text import _preferred

    summary = {"best_val_accuracy": 0.9417, "top_val_accuracy": 0.9583, "val_standard_error": 0.0197, "val_images": 120}
    assert _preferred(summary) == "; within one standard error (0.0197 on 120 images) of the top 0.9583: preferred"
    assert _preferred({**summary, "best_val_accuracy": 0.9583}) == ""
    assert _preferred({"best_val_accuracy": None, "top_val_accuracy": None}) == ""  # no validation, older results


def _v(right, loss=0.5):
    from src.learning.validation import Validation

    right = np.asarray(right, dtype=bool)
    return Validation(np.arange(len(right)), right, np.full(len(right), np.exp(-loss)))


@pytest.mark.parametrize("algo, base, ships", [
    ([1, 1, 0, 0], [1, 0, 0, 0], True),    # right on one more image
    ([1, 0, 0, 0], [1, 0, 0, 0], False),   # the same images right, the same log-loss: no evidence
    ([1, 0, 1, 0], [0, 1, 1, 0], False),   # one won, one lost
    ([0, 0, 0, 0], [1, 0, 0, 0], False),
])
def test_the_pool_model_ships_only_where_validation_shows_it_better(algo, base, ships):
    from src.training.results import beats_baseline

    ok, won, lost = beats_baseline(_v(algo), _v(base))
    assert ok is ships and won == int(np.sum(np.array(algo) > np.array(base)))
    assert beats_baseline(_v(algo, loss=0.2), _v(algo, loss=0.6))[0]  # a tie broken by a lower log-loss
    assert not beats_baseline(_v([]), _v([]))[0]  # nothing validated: the baseline ships


def test_a_tie_ships_the_pool_model_only_on_a_log_loss_lower_beyond_its_noise():
    from src.learning.validation import Validation
    from src.training.results import beats_baseline

    right = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
    base = Validation(np.arange(6), right, np.array([0.5, 0.6, 0.3, 0.2, 0.7, 0.4]))
    noise = Validation(np.arange(6), right, base.p_true * np.array([1.2, 0.85, 1.1, 0.9, 1.1, 0.95]))
    assert noise.log_loss < base.log_loss  # lower on average, by less than the images disagree: no evidence
    assert beats_baseline(noise, base) == (False, 0, 0)
    steady = Validation(np.arange(6), right, base.p_true * np.array([1.2, 1.1, 1.3, 1.2, 1.1, 1.25]))
    assert beats_baseline(steady, base) == (True, 0, 0)
    one = Validation(np.arange(1), right[:1], np.array([0.9]))
    assert beats_baseline(one, Validation(np.arange(1), right[:1], np.array([0.5])))[0] is False  # one image


def test_summary_names_the_baseline_when_validation_cannot_show_the_pool_helping():
    from src.training.results import summarize

    per_algo = {"label_spreading": {"val_accuracy": 0.5, "val_log_loss": 0.7, "test_accuracy": 0.9}}
    baseline = {"val_accuracy": 0.75, "val_log_loss": 0.6, "test_accuracy": 0.8}
    vals = {"label_spreading": _v([1, 1, 0, 0]), "baseline": _v([1, 1, 1, 0])}
    s = summarize(per_algo, baseline, 4, vals)
    assert s["best_algorithm"] == "baseline" and s["best_test_accuracy"] == 0.8  # test never decides
    assert s["best_semi_supervised"] == "label_spreading" and (s["val_won_vs_baseline"], s["val_lost_vs_baseline"]) == (0, 1)
    vals["label_spreading"] = _v([1, 1, 1, 1])
    assert summarize(per_algo, baseline, 4, vals)["best_algorithm"] == "label_spreading"


def test_a_fine_tuned_backbone_is_validated_on_the_images_it_did_not_train_on():
    from types import SimpleNamespace

    from src.data.splits import holdout_split
    from src.training.config import TrainConfig
    from src.training.pipeline import validation_folds

    labels = np.repeat(np.arange(4), 10)
    ds = SimpleNamespace(train=SimpleNamespace(labels=labels), catalogue=np.zeros(40, dtype=bool))
    mask = np.ones(40, dtype=bool)
    mask[::5] = False  # hidden labels never validate
    lab = np.flatnonzero(mask)
    X = np.random.default_rng(0).normal(size=(45, 16))  # no two alike: no near-duplicates
    holdout = holdout_split(labels[lab], 0.25, 42)
    folds = validation_folds(TrainConfig(fine_tune_epochs=2, val_fraction=0.25), ds, mask, X, holdout)
    assert set(np.flatnonzero(folds >= 0)) == set(lab[holdout[1]]) and len(holdout[1]) > 0  # the fine-tune's split
    frozen = validation_folds(TrainConfig(fine_tune_epochs=0), ds, mask, X, holdout)
    assert set(np.flatnonzero(frozen >= 0)) == set(lab) and frozen.max() == 2  # 3-fold over every labeled image
    assert (frozen[40:] == -1).all()  # the pool is never validated on


def _bursts(n_classes=3, shots=4, bursts=3, dim=32, seed=0):
    """Features of ``bursts`` bursts of ``shots`` near-identical photos per class (cosine > 0.99 within a
    burst, about 0 between bursts): labels and burst ids."""
    rng = np.random.default_rng(seed)
    X, y, g = [], [], []
    for c in range(n_classes):
        for b in range(bursts):
            centre = rng.normal(size=dim)
            for _ in range(shots):
                X.append(centre + 0.05 * rng.normal(size=dim))
                y.append(c)
                g.append(c * bursts + b)
    return np.array(X), np.array(y), np.array(g)


def test_near_identical_photos_are_grouped_and_distinct_ones_are_not():
    from src.learning.groups import near_duplicate_groups

    X, _, burst = _bursts()
    groups = near_duplicate_groups(X)
    assert len(np.unique(groups)) == len(np.unique(burst))
    for b in np.unique(burst):  # one group per burst, exactly
        assert len(np.unique(groups[burst == b])) == 1 and (burst[groups == groups[burst == b][0]] == b).all()
    assert list(near_duplicate_groups(np.eye(5))) == [0, 1, 2, 3, 4]  # orthogonal: each alone, ids by first row
    chain = np.array([[1.0, 0.0], [0.97, 0.243], [0.88, 0.475]])  # 1~2 and 2~3 above 0.92, 1~3 below
    assert len(set(near_duplicate_groups(chain))) == 1  # joined through the middle one


def test_the_near_duplicate_check_compares_in_blocks(monkeypatch):
    from src.learning import groups as g

    X, _, burst = _bursts(n_classes=4)
    whole = g.near_duplicate_groups(X)
    monkeypatch.setattr(g, "_BLOCK", 5)  # block rows cut through bursts
    assert (g.near_duplicate_groups(X) == whole).all()


def test_no_burst_sits_on_both_sides_of_the_holdout_or_the_folds():
    from src.data.splits import holdout_split

    X, y, burst = _bursts(n_classes=4, shots=3, bursts=4)
    random_fit, random_val = holdout_split(y, 0.25, 0)
    split_bursts = set(burst[random_fit]) & set(burst[random_val])
    assert split_bursts  # without groups, bursts straddle the split (what made validation optimistic)
    for seed in range(5):
        fit, val = holdout_split(y, 0.25, seed, groups=burst)
        assert not set(burst[fit]) & set(burst[val]) and len(val) == 12  # 3 of 12 per class, whole bursts
        assert sorted(np.concatenate([fit, val])) == list(range(len(y)))
        folds = labeled_folds(y, 3, seed, groups=burst)
        for b in np.unique(burst):
            assert len(set(folds[burst == b])) == 1
        assert (folds >= 0).all() and set(folds) == {0, 1, 2}


def test_a_class_that_is_one_burst_is_never_held_out():
    from src.data.splits import holdout_split

    y = np.array([0] * 4 + [1] * 4)
    burst = np.array([0] * 4 + [1, 2, 3, 4])  # class 0: four shots of one burst
    fit, val = holdout_split(y, 0.5, 0, groups=burst)
    assert set(val) <= {4, 5, 6, 7} and set(range(4)) <= set(fit)  # class 0 never empties its fit part
    folds = labeled_folds(y, 3, 0, groups=burst)
    assert (folds[:4] == -1).all() and (folds[4:] >= 0).all()


def test_training_keeps_each_burst_of_real_photos_on_one_side_of_its_holdout(tmp_path):
    """The training's split (pipeline.labeled_holdout) on real photos: three shots of one shelf a step apart
    (cropped and brightened a little) are found by the pretrained features and never straddle the split."""
    from types import SimpleNamespace

    from PIL import Image, ImageEnhance

    from src.core.store import Store
    from src.data.dataset import image_dataset
    from src.training.config import TrainConfig
    from src.training.pipeline import SAMPLE_DIR, labeled_holdout

    burst_of: dict[str, int] = {}
    for c in ("Banana", "Arla-Standard-Milk"):
        photos = sorted((SAMPLE_DIR / "train" / c).iterdir())[:6]
        for i, src in enumerate(photos):
            base = Image.open(src).convert("RGB")
            shots = [base] if i >= 3 else [  # photos 0-2: a burst of three shots each
                base, base.crop((4, 4, base.width, base.height)),
                ImageEnhance.Brightness(base.crop((0, 0, base.width - 6, base.height - 6))).enhance(1.04)]
            for j, shot in enumerate(shots):
                out = tmp_path / "data" / "train" / c / f"{c}-{i}-{j}.jpg"
                out.parent.mkdir(parents=True, exist_ok=True)
                shot.save(out, quality=90)
                burst_of[out.name] = len(set(burst_of.values())) if j == 0 else burst_of[f"{c}-{i}-0.jpg"]
        (tmp_path / "data" / "test" / c).mkdir(parents=True)
        Image.open(photos[0]).save(tmp_path / "data" / "test" / c / "t.jpg")
    store = Store(tmp_path / "store")
    ds = image_dataset(tmp_path / "data", store=store, progress=False)
    burst = np.array([burst_of[p.name] for p in ds.train.paths])
    mask = np.ones(len(burst), dtype=bool)
    logged: dict = {}
    tracker = SimpleNamespace(log=logged.update)
    for seed in range(4):
        cfg = TrainConfig(data_dir=str(tmp_path / "data"), fine_tune_epochs=1, val_fraction=0.4, seed=seed,
                          image_size=128, progress=False)
        fit, val = labeled_holdout(cfg, ds, mask, store, tracker)
        assert len(val) and not set(burst[fit]) & set(burst[val]), seed
    assert logged["data/labeled_near_duplicates"] == 18  # 2 classes x 3 bursts x 3 shots, the singles alone
    from src.data.splits import holdout_split

    assert any(set(burst[f]) & set(burst[v]) for f, v in (holdout_split(ds.train.labels, 0.4, s) for s in range(4)))


def test_labeled_groups_group_only_the_labeled_rows():
    from src.learning.groups import labeled_groups

    X, _, burst = _bursts(n_classes=2, shots=3, bursts=2)  # 12 rows: bursts 0-3 of 3 shots
    groups = labeled_groups(X, np.arange(6))  # the first two bursts are labeled, the rest is not
    assert groups[0] == groups[1] == groups[2] != groups[3] == groups[4] == groups[5]
    assert len(set(groups[6:])) == 6 and not set(groups[6:]) & set(groups[:6])  # unlabeled rows stay alone
