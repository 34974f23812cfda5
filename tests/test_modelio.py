import pickle

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from src.core.errors import ModelError
from src.learning.bundles import TRUSTED_TYPES, load_model_bundle, save_model_bundle, sidecar


def bundle():
    clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    return {"algorithm": "self_training", "classifier": clf, "class_names": ["a", "b"], "extractor_digest": "e" * 64,
            "preprocessing": {"image_size": 224}, "metrics": {"test_accuracy": np.float64(0.5), "recall": None},
            "reference": {"features": np.ones((3, 4), np.float32), "class_distribution": [0.5, 0.5]}}


def test_round_trip_with_sidecar(tmp_path):
    p = tmp_path / "m.skops"
    digest = save_model_bundle(p, bundle())
    assert sidecar(p).read_text().strip() == digest
    assert p.read_bytes()[:4] == b"PK\x03\x04"  # a skops zip, not a pickle
    b = load_model_bundle(p)
    assert b["class_names"] == ["a", "b"] and b["_digest"] == digest
    assert b["classifier"].predict([[1.0]]).tolist() == [1]
    assert b["reference"]["features"].dtype == np.float32 and b["metrics"]["test_accuracy"] == 0.5


def test_tampered_file_refused_before_loading(tmp_path, monkeypatch):
    import skops.io

    p = tmp_path / "m.skops"
    save_model_bundle(p, bundle())
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    monkeypatch.setattr(skops.io, "loads", lambda *a, **k: pytest.fail("loaded a tampered file"))
    with pytest.raises(ModelError, match="fails its digest check"):
        load_model_bundle(p)


def test_swapped_file_refused_by_expected_digest(tmp_path):
    a, b = tmp_path / "a.skops", tmp_path / "b.skops"
    da = save_model_bundle(a, bundle())
    other = bundle()
    other["class_names"] = ["x", "y"]
    save_model_bundle(b, other)
    with pytest.raises(ModelError, match="digest"):
        load_model_bundle(b, expected_digest=da)


def test_not_a_model(tmp_path):
    (tmp_path / "img.skops").write_bytes(b"\x89PNG not a model")
    with pytest.raises(ModelError, match="not a skops file"):
        load_model_bundle(tmp_path / "img.skops")
    (tmp_path / "zip.skops").write_bytes(b"PK\x03\x04 but not really a zip")
    with pytest.raises(ModelError, match="not a readable model file"):
        load_model_bundle(tmp_path / "zip.skops")
    import skops.io

    (tmp_path / "list.skops").write_bytes(skops.io.dumps([1, 2, 3]))
    with pytest.raises(ModelError, match="not a grocery-mlops model bundle"):
        load_model_bundle(tmp_path / "list.skops")
    with pytest.raises(ModelError, match="does not exist"):
        load_model_bundle(tmp_path / "missing.skops")


def test_old_pickle_refused_with_the_convert_command(tmp_path, monkeypatch):
    p = tmp_path / "self_training_model.pkl"
    p.write_bytes(pickle.dumps({"format": "grocery-mlops/model-v1"}, protocol=pickle.HIGHEST_PROTOCOL))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled a model file"))
    with pytest.raises(ModelError, match="old pickle model file") as e:
        load_model_bundle(p)
    assert f"convert --i-trust-these-files --models-dir {tmp_path}" in str(e.value)


def test_incomplete_bundle_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        save_model_bundle(tmp_path / "m.skops", {"algorithm": "x"})
    assert not (tmp_path / "m.skops").exists()
    with pytest.raises(ValueError, match=".skops"):
        save_model_bundle(tmp_path / "m.pkl", bundle())


class Note:  # a type neither skops nor the suite trusts
    pass


def test_a_bundle_that_would_not_load_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match="test_modelio.Note"):
        save_model_bundle(tmp_path / "m.skops", {**bundle(), "config": Note()})
    assert not (tmp_path / "m.skops").exists()


@pytest.mark.parametrize("n_features", [8, 32])  # KD-tree and brute-force k-NN graphs
def test_every_algorithm_round_trips_with_the_fixed_trusted_list(tmp_path, n_features):
    from sklearn.datasets import make_blobs

    from src.learning.semi_supervised import ALGORITHMS, fit_semi_supervised

    X, y = make_blobs(120, n_features, centers=3, random_state=0)
    y_partial = np.where(np.arange(len(y)) < 30, y, -1)
    for name in ALGORITHMS:
        model = fit_semi_supervised(name, X, y_partial, 5, 0)
        p = tmp_path / f"{name}_{n_features}_model.skops"
        save_model_bundle(p, {"algorithm": name, "classifier": model, "class_names": ["a", "b", "c"],
                              "extractor_digest": "e" * 64, "preprocessing": {}})
        loaded = load_model_bundle(p)["classifier"]
        assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X)), name
    assert "src.learning.semi_supervised.InductiveGraphClassifier" in TRUSTED_TYPES
