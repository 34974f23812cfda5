"""The int8 precision guard: int8 only where it is proven harmless on the user's own images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from src.core.store import Store, sha256_file
from src.features import int8_calibration
from src.features.int8_calibration import calibration_digest, calibration_sample
from src.training import precision
from src.training.precision import MIN_IMAGES, TOO_FEW, compare, decide


# -- the decision on its figures -------------------------------------------------------------
def test_decide_int8_only_when_every_condition_holds():
    assert decide(MIN_IMAGES, 0.995, 0.90, 0.897)[0] == "int8"  # 0.3-point drop, 99.5 % agreement
    assert decide(MIN_IMAGES, 0.99, 0.90, 0.905)[0] == "int8"   # int8 better: no drop
    p, reason = decide(MIN_IMAGES - 1, 1.0, 0.9, 0.9)
    assert p == "float32" and reason.startswith(TOO_FEW)
    p, reason = decide(5000, 0.989, 0.9, 0.9)
    assert p == "float32" and "agreement 98.90 %" in reason
    p, reason = decide(5000, 0.999, 0.90, 0.894)
    assert p == "float32" and "0.60 points" in reason
    p, reason = decide(5000, 0.999, None, None)
    assert p == "float32" and "no validation" in reason


def _blobs(n_per_class=120, n_classes=4, dim=64, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    X = (centers[y] + rng.normal(0, 1, (len(y), dim))).astype(np.float32)
    y_partial = np.where(rng.random(len(y)) < 0.2, y, -1)
    return X, y_partial


def test_compare_tells_faithful_features_from_noisy_ones():
    X, y = _blobs()
    rng = np.random.default_rng(1)
    faithful = compare(X, X + rng.normal(0, 0.01, X.shape).astype(np.float32), y, seed=0)
    assert faithful["agreement"] >= 0.99 and faithful["val_accuracy_float32"] is not None
    assert decide(len(X), faithful["agreement"], faithful["val_accuracy_float32"],
                  faithful["val_accuracy_int8"])[0] == "int8"
    noisy = compare(X, X + rng.normal(0, 4.0, X.shape).astype(np.float32), y, seed=0)
    assert noisy["agreement"] < 0.9
    assert decide(len(X), noisy["agreement"], noisy["val_accuracy_float32"],
                  noisy["val_accuracy_int8"])[0] == "float32"


# -- the calibration sample ----------------------------------------------------------------
def test_calibration_sample_is_fixed_seeded_and_spans_the_classes():
    labels = np.repeat(np.arange(20), 60)
    labeled = np.zeros(len(labels), dtype=bool)
    labeled[::5] = True  # 12 labeled per class
    a = calibration_sample(labels, labeled, seed=42)
    assert len(a) == int8_calibration.CALIBRATION_IMAGES == 128 and len(set(a.tolist())) == 128
    assert (a == calibration_sample(labels, labeled, seed=42)).all()
    assert not (a == calibration_sample(labels, labeled, seed=43)).all()
    assert labeled[a].all() and set(np.bincount(labels[a], minlength=20)) <= {6, 7}  # round-robin
    few = np.zeros(len(labels), dtype=bool)
    few[:20:5] = True  # 4 labeled images: topped up with unlabeled ones
    b = calibration_sample(labels, few, seed=0)
    assert len(b) == 128 and few[b[:4]].all() and not few[b[4:]].any()
    assert calibration_digest(["a", "b"], "k") != calibration_digest(["b", "a"], "k") != calibration_digest(["a", "b"], "j")


# -- real runs on tiny data --------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from src.data.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("guard") / "d", n_classes=3, train_per_class=16,
                            test_per_class=2, image_size=64, seed=5, classes=("banana", "milk", "broccoli"))


def _train(data, tmp_path, **kw):
    from src.training.config import TrainConfig
    from src.training.pipeline import run_training

    cfg = TrainConfig(data_dir=str(data), models_dir=str(tmp_path / "models"), store=str(tmp_path / "store"),
                      labeled_ratio=0.5, algorithms=("self_training",), fine_tune_epochs=0, n_neighbors=3,
                      image_size=64, wandb_mode="disabled", progress=False, **kw)
    return run_training(cfg)


@pytest.mark.slow  # the default suite sees the same through tests/test_train.py's e2e run
def test_too_few_images_stay_float32_without_int8_work(data, tmp_path, monkeypatch):
    def no_calibration(*args, **kwargs):
        raise AssertionError("nothing is calibrated below the minimum")

    monkeypatch.setattr(precision, "_calibrated", no_calibration)
    res = _train(data, tmp_path)
    g = res["extractor"]["int8_guard"]
    assert res["extractor"]["precision"] == "float32" and g["decision"] == "float32"
    assert g["reason"].startswith(TOO_FEW) and g["n_images"] == 48 and g["agreement"] is None


def test_bad_calibration_makes_the_guard_choose_float32(data, tmp_path, monkeypatch):
    """Calibrated on black images, int8 saturates on real ones: the guard must notice."""
    black = []
    for i in range(8):
        p = tmp_path / f"black{i}.png"
        Image.new("RGB", (64, 64), (0, 0, 0)).save(p)
        black.append(p)
    real = precision._calibrated

    def black_calibration(cfg, ds, mask, ext_path, ext_digest, store):
        return int8_calibration.calibrate_int8(ext_path, ext_digest, black, [sha256_file(p) + str(i) for i, p in
                                                                             enumerate(black)], store)

    monkeypatch.setattr(precision, "MIN_IMAGES", 40)
    monkeypatch.setattr(precision, "_calibrated", black_calibration)
    res = _train(data, tmp_path / "bad")
    g = res["extractor"]["int8_guard"]
    assert res["extractor"]["precision"] == "float32" and g["decision"] == "float32", g
    assert "agreement" in g["reason"] and g["agreement"] < 0.99 and g["n_images"] == 48
    assert g["calibration_seconds"] > 0 and g["seconds"] >= g["calibration_seconds"]

    monkeypatch.setattr(precision, "_calibrated", real)  # the same data, calibrated on its own images
    good = _train(data, tmp_path / "good")
    g = good["extractor"]["int8_guard"]
    assert g["agreement"] > 0.9 and g["val_accuracy_int8"] is not None
    assert good["extractor"]["precision"] == g["decision"]


@pytest.mark.slow
def test_forced_int8_is_calibrated_on_the_training_images_and_travels_with_the_model(data, tmp_path, monkeypatch):
    from src.learning.bundles import load_model_bundle
    from src.inference_monitor import load_predictor

    res = _train(data, tmp_path, runtime="onnx-int8")
    g = res["extractor"]["int8_guard"]
    assert res["extractor"]["precision"] == "int8" and g["reason"].startswith("forced by --runtime onnx-int8")
    model = tmp_path / "models" / "self_training_model.skops"
    bundle = load_model_bundle(model)
    cal = bundle["int8_calibration"]
    assert bundle["extractor_precision"] == "int8" and cal["digest"] == g["calibration_digest"] and cal["images"] == 48
    files = sorted(p.name for p in (tmp_path / "store" / "onnx").glob("*-int8-*"))
    ext = bundle["extractor_digest"]
    stem = f"{ext}-64-int8-{cal['digest'][:16]}"
    assert files == [f"{stem}.onnx", f"{stem}.ranges.json", f"{stem}.rounding.json"]
    assert cal["rounding"] == (tmp_path / "store" / "onnx" / f"{stem}.rounding.json").read_text()

    img = sorted((data / "test" / "milk").glob("*.jpg"))[0]
    trained = load_predictor(model, store=str(tmp_path / "store"))  # auto follows the model: its own int8
    assert trained.extractor.precision == "int8" and trained.extractor.path.name == files[0]
    elsewhere = load_predictor(model, store=str(tmp_path / "fresh"))  # no cache: rebuilt from the bundle's ranges
    assert elsewhere.extractor.key == trained.extractor.key
    np.testing.assert_allclose(elsewhere.features([img]), trained.features([img]), atol=1e-5)
    assert load_predictor(model, store=str(tmp_path / "store"), runtime="onnx").extractor.precision == "float32"


def test_monitor_cli_has_a_runtime_flag():
    from src.inference_monitor import build_parser

    assert build_parser().parse_args([]).runtime == "auto"
    assert build_parser().parse_args(["--runtime", "onnx"]).runtime == "onnx"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--runtime", "fp16"])


def test_store_paths_name_both_digests(tmp_path):
    q, r, w = int8_calibration.calibrated_paths(Store(tmp_path), "e" * 64, 224, "c" * 64)
    assert q.name == f"{'e' * 64}-224-int8-{'c' * 16}.onnx" and r.name.endswith(".ranges.json")
    assert w.name == f"{'e' * 64}-224-int8-{'c' * 16}.rounding.json"


def test_the_guard_validates_with_near_identical_rows_together_and_catalogue_rows_never_held(monkeypatch):
    from src.learning import validation
    from src.training import precision

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    X = np.concatenate([np.repeat(centres[c:c + 1], 4, 0) + rng.normal(0, 1e-3, (4, 16)) for c in range(3)]
                       + [centres + rng.normal(0, 3.0, (3, 16)) for _ in range(4)]).astype(np.float32)
    y = np.concatenate([np.repeat(np.arange(3), 4), np.tile(np.arange(3), 4)])  # a 4-shot burst per class first
    seen = []
    real = validation.validate
    monkeypatch.setattr(precision, "validate", lambda fit, X_, y_, folds: seen.append(folds.copy()) or real(fit, X_, y_, folds))
    precision.compare(X, X.copy(), y, seed=0, never_held=[12, 13])
    folds = seen[0]
    for c in range(3):
        assert len(set(folds[c * 4:(c + 1) * 4])) == 1  # each burst in one fold
    assert (folds[[12, 13]] == -1).all() and (folds[14:] >= 0).all()


def test_calibration_draws_on_the_pool_too(monkeypatch):
    """Labeled images round-robin first, then unlabeled ones: the pool's photos are among them (issue 29)."""
    from types import SimpleNamespace

    from src.features import int8_calibration as ic

    train = SimpleNamespace(paths=[f"train/{i}.jpg" for i in range(20)], digests=[f"t{i}" for i in range(20)],
                            labels=np.repeat(np.arange(4), 5))
    class Split(SimpleNamespace):
        def __len__(self):
            return len(self.paths)

    pool = Split(paths=[f"unlabeled/{i}.jpg" for i in range(300)], digests=[f"p{i}" for i in range(300)])
    seen = {}
    monkeypatch.setattr(ic, "calibrate_int8", lambda ext, dig, paths, digests, store: seen.update(paths=paths))
    mask = np.zeros(20, dtype=bool)
    mask[::5] = True  # one labeled image per class; the other training images' labels are hidden
    precision._calibrated(SimpleNamespace(seed=0), SimpleNamespace(train=train, pool=pool), mask, None, "d", None)
    paths = seen["paths"]
    assert len(paths) == ic.CALIBRATION_IMAGES and len(set(paths)) == len(paths)
    assert sorted(paths[:4]) == ["train/0.jpg", "train/10.jpg", "train/15.jpg", "train/5.jpg"]
    assert sum(p.startswith("unlabeled/") for p in paths) > 64
