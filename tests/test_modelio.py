import pickle

import pytest
from sklearn.linear_model import LogisticRegression

from src.core.errors import ModelError
from src.learning.bundles import load_model_bundle, save_model_bundle, sidecar


def bundle():
    clf = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    return {"algorithm": "self_training", "classifier": clf, "class_names": ["a", "b"], "extractor_digest": "e" * 64,
            "preprocessing": {"image_size": 224}}


def test_round_trip_with_sidecar(tmp_path):
    p = tmp_path / "m.pkl"
    digest = save_model_bundle(p, bundle())
    assert sidecar(p).read_text().strip() == digest
    b = load_model_bundle(p)
    assert b["class_names"] == ["a", "b"] and b["_digest"] == digest


def test_tampered_file_refused_before_unpickling(tmp_path, monkeypatch):
    p = tmp_path / "m.pkl"
    save_model_bundle(p, bundle())
    data = bytearray(p.read_bytes())
    data[-5] ^= 0xFF
    p.write_bytes(bytes(data))
    monkeypatch.setattr(pickle, "load", lambda *a, **k: pytest.fail("unpickled a tampered file"))
    with pytest.raises(ModelError, match="fails its digest check"):
        load_model_bundle(p)


def test_swapped_file_refused_by_expected_digest(tmp_path):
    a, b = tmp_path / "a.pkl", tmp_path / "b.pkl"
    da = save_model_bundle(a, bundle())
    other = bundle()
    other["class_names"] = ["x", "y"]
    save_model_bundle(b, other)
    with pytest.raises(ModelError, match="digest"):
        load_model_bundle(b, expected_digest=da)


def test_not_a_model(tmp_path):
    (tmp_path / "img.pkl").write_bytes(b"\x89PNG not a pickle")
    with pytest.raises(ModelError, match="not a pickle"):
        load_model_bundle(tmp_path / "img.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(ModelError, match="not a grocery-mlops model bundle"):
        load_model_bundle(tmp_path / "list.pkl")
    with pytest.raises(ModelError, match="does not exist"):
        load_model_bundle(tmp_path / "missing.pkl")


def test_incomplete_bundle_is_not_saved(tmp_path):
    with pytest.raises(ValueError, match="lacks"):
        save_model_bundle(tmp_path / "m.pkl", {"algorithm": "x"})
    assert not (tmp_path / "m.pkl").exists()
