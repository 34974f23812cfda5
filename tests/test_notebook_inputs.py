"""Notebook inputs: a path, a PIL image or a numpy array, one or many, decoded by the file rules."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from src.core.errors import DataError
from src.core.images import from_array, load_image


def _pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def _sixteen(a: np.ndarray, mode: str) -> Image.Image:
    img = Image.fromarray(a)  # uint16 -> I;16
    return img if mode == "I;16" else img.convert(mode)


@pytest.mark.parametrize("mode", ["CMYK", "L", "P", "RGBA", "LA", "I;16", "I", "F"])
def test_an_in_memory_image_converts_as_its_file_does(tmp_path, mode):
    rng = np.random.default_rng(0)
    if mode in ("I;16", "I", "F"):
        img = _sixteen((rng.integers(0, 65535, (12, 20))).astype(np.uint16), mode)
    else:
        rgba = Image.fromarray(rng.integers(0, 255, (12, 20, 4), dtype=np.uint8), "RGBA")
        img = rgba if mode in ("RGBA",) else rgba.convert("LA") if mode == "LA" else rgba.convert("RGB").convert(mode)
    path = tmp_path / f"x.{'tiff' if mode in ('CMYK', 'I;16', 'I', 'F') else 'png'}"
    img.save(path)
    from_file = _pixels(load_image(path))
    assert np.array_equal(_pixels(load_image(Image.open(path))), from_file)  # an opened, unloaded image
    assert np.array_equal(_pixels(load_image(img)), from_file)  # the image the file was written from


def test_rgba_goes_on_white_for_images_and_arrays():
    a = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black
    assert np.all(_pixels(load_image(a)) == 255)
    assert np.all(_pixels(load_image(Image.fromarray(a, "RGBA"))) == 255)


def test_arrays_rgb_grayscale_and_sixteen_bit(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (9, 7, 3), dtype=np.uint8)
    assert np.array_equal(_pixels(load_image(rgb)), rgb)
    gray = rgb[:, :, 0]
    out = _pixels(load_image(gray))
    assert out.shape == (9, 7, 3) and all(np.array_equal(out[:, :, c], gray) for c in range(3))
    assert np.array_equal(_pixels(load_image(gray[:, :, None])), out)  # HxWx1
    sixteen = np.linspace(0, 40000, 63, dtype=np.uint16).reshape(9, 7)
    Image.fromarray(sixteen).save(tmp_path / "g16.png")
    assert np.array_equal(_pixels(load_image(sixteen)), _pixels(load_image(tmp_path / "g16.png")))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((4, 4), dtype=np.float32), "float32 pixels"),
    (np.zeros((4, 4, 2), dtype=np.uint8), "not an image"),
    (np.zeros((0, 4, 3), dtype=np.uint8), "pixels is outside"),
    (np.zeros(5, dtype=np.uint8), "not an image"),
])
def test_unusable_arrays_are_refused_in_one_line(bad, match):
    with pytest.raises(DataError, match=match):
        from_array(bad)


def test_other_objects_are_refused():
    with pytest.raises(DataError, match="cannot read an image from a int"):
        load_image(3)


# -- the predictor -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from helpers import random_weight_bundle

    from src.predictor import Predictor

    return Predictor.load(random_weight_bundle(tmp_path_factory.mktemp("nb") / "models"), runtime="torch")


def test_predict_accepts_a_path_a_pil_image_and_an_array(predictor, tmp_path):
    rgb = np.random.default_rng(2).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(rgb).save(path)
    by_path = predictor.predict(path)
    assert isinstance(by_path, tuple) and by_path[0] in predictor.class_names
    for one in (str(path), Image.open(path), Image.fromarray(rgb), rgb):
        label, conf, probs = predictor.predict(one)
        assert label == by_path[0] and np.allclose(probs, by_path[2], atol=1e-5)
    rgba = Image.fromarray(rgb).convert("RGBA")
    assert np.allclose(predictor.predict(rgba)[2], by_path[2], atol=1e-5)  # opaque RGBA = RGB


def test_many_images_mixed_give_a_list_in_order(predictor, tmp_path):
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 255, (30 + i, 36, 3), dtype=np.uint8) for i in range(3)]
    Image.fromarray(arrays[0]).save(tmp_path / "a.png")
    mixed = [tmp_path / "a.png", Image.fromarray(arrays[1]), arrays[2], arrays[2][:, :, 0]]
    out = predictor.predict(mixed)
    assert isinstance(out, list) and len(out) == 4
    singles = [predictor.predict(x) for x in mixed]
    for (l1, c1, p1), (l2, c2, p2) in zip(out, singles):
        assert l1 == l2 and np.allclose(p1, p2, atol=1e-5)
    assert predictor.predict_paths(mixed[1])[0][0] == singles[1][0]  # one image: a list of one
    batch = np.stack([arrays[2], arrays[2]])  # N x H x W x 3
    assert [r[0] for r in predictor.predict(batch)] == [singles[2][0]] * 2
    assert predictor.predict([]) == [] and predictor.predict_paths([]) == []


def test_an_unusable_input_names_itself(predictor):
    with pytest.raises(DataError, match="float64 pixels"):
        predictor.predict(np.zeros((8, 8, 3)))
    with pytest.raises(DataError, match="cannot predict a int"):
        predictor.predict(7)


def test_public_api_has_docstrings():
    from src.monitoring.monitor import InferenceMonitor
    from src.predictor import Predictor
    from src.training.pipeline import run_training

    for obj in (Predictor, Predictor.load, Predictor.predict, Predictor.predict_paths, run_training,
                InferenceMonitor, *[getattr(InferenceMonitor, m) for m in dir(InferenceMonitor)
                                    if not m.startswith("_") and callable(getattr(InferenceMonitor, m))]):
        assert obj.__doc__ and len(obj.__doc__.strip()) > 30, obj
