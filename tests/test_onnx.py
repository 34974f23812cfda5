"""ONNX Runtime extraction: static padding is exact, ORT matches torch, exports are cached once."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from src.features import onnx_runtime as onnx_runtime
from src.features.backbone import Preprocessing, create_model, load_extractor, save_extractor
from src.core.errors import ModelError
from src.features.runtimes import load_runtime
from src.features.extraction import TorchExtractor, extract
from src.features.onnx_runtime import OrtExtractor, onnx_cache_path, static_padding
from src.core.store import Store, sha256_file

SIZE = 64
TOL = 1e-4


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """{"pretrained"|"perturbed": (path, digest)} — two extractors saved like training does."""
    root = tmp_path_factory.mktemp("extractors")
    pre = Preprocessing.for_size(SIZE)
    model = create_model(num_classes=0, pretrained=True).eval()
    out = {}
    path = root / "pretrained.pth"
    save_extractor(model, path, pre)
    out["pretrained"] = (path, sha256_file(path))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in list(model.parameters()) + [b for n, b in model.named_buffers() if "running_mean" in n]:
            t.add_(0.05 * t.std().nan_to_num(0.0) * torch.randn(t.shape, generator=gen))
    path = root / "perturbed.pth"
    save_extractor(model, path, pre)
    out["perturbed"] = (path, sha256_file(path))
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from src.data.synth import generate_dataset

    root = generate_dataset(tmp_path_factory.mktemp("synth") / "d", n_classes=3, train_per_class=4,
                            test_per_class=1, image_size=96, seed=3)
    return sorted((root / "train").rglob("*.jpg"))


@pytest.fixture
def store(tmp_path):
    return Store(tmp_path / "onnx_store")


# -- static padding --------------------------------------------------------------------------
@pytest.mark.parametrize("size,kernel,stride", [(64, 3, 2), (75, 3, 2), (33, 5, 2), (10, 5, 1), (7, 3, 3)])
def test_same_pads_agree_with_timm(size, kernel, stride):
    from timm.layers.padding import get_same_padding

    before, after = onnx_runtime._same_pads(size, kernel, stride, 1)
    total = get_same_padding(size, kernel, stride, 1)
    assert (before, after) == (total // 2, total - total // 2)


@pytest.mark.parametrize("size", [64, 75])
def test_static_padding_is_exact_and_removes_dynamic_layers(saved, size):
    model, _ = load_extractor(saved["pretrained"][0])
    static = static_padding(model, size)
    assert onnx_runtime._dynamic_same_layers(model)  # tf_ variants do use them
    assert onnx_runtime._dynamic_same_layers(static) == []
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        np.testing.assert_allclose(static(x).numpy(), model(x).numpy(), atol=1e-6, rtol=0)


def test_static_padding_handles_same_pooling():
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    net = torch.nn.Sequential(MaxPool2dSame(3, 2), AvgPool2dSame(3, 2)).eval()
    x = torch.randn(1, 4, 21, 21) - 5  # negative: max-pool padding must not be zeros
    static = static_padding(net, 21)
    assert onnx_runtime._dynamic_same_layers(static) == []
    with torch.inference_mode():
        torch.testing.assert_close(static(x), net(x), atol=1e-6, rtol=0)


# -- ORT against torch -----------------------------------------------------------------------
@pytest.mark.parametrize("which", ["pretrained", "perturbed"])
def test_ort_matches_torch_on_random_input(saved, store, which):
    path, digest = saved[which]
    ort_ext = load_runtime(path, digest, runtime="onnx", store=store)
    torch_ext = load_runtime(path, digest, runtime="torch")
    assert isinstance(ort_ext, OrtExtractor) and isinstance(torch_ext, TorchExtractor)
    x = np.random.default_rng(0).standard_normal((5, SIZE, SIZE, 3)).astype(np.float32)
    a, b = ort_ext(x), torch_ext(x)
    assert a.shape == (5, 1280) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0)
    np.testing.assert_allclose(ort_ext(x[:1]), b[:1], atol=TOL, rtol=0)  # dynamic batch axis


@pytest.mark.parametrize("which", ["pretrained", "perturbed"])
def test_ort_matches_torch_on_real_images(saved, store, images, which):
    path, digest = saved[which]
    ort_ext = load_runtime(path, digest, runtime="onnx", store=store)
    torch_ext = load_runtime(path, digest, runtime="torch")
    a = extract(ort_ext, images, batch_size=5, progress=False)
    b = extract(torch_ext, images, batch_size=5, progress=False)
    assert np.abs(b).max() > 0.1
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0)


def test_key_and_preprocessing_identical_across_runtimes(saved, store):
    path, digest = saved["perturbed"]
    a = load_runtime(path, digest, runtime="onnx", store=store)
    b = load_runtime(path, digest, runtime="torch")
    assert a.key == b.key == f"{digest}:{Preprocessing.for_size(SIZE).key()}"
    assert a.preprocessing == b.preprocessing


# -- export cache ----------------------------------------------------------------------------
def test_export_cached_once_per_digest_and_size(saved, store, monkeypatch):
    path, digest = saved["pretrained"]
    first = load_runtime(path, digest, runtime="onnx", store=store)
    cached = onnx_cache_path(store, digest, SIZE)
    assert first.path == cached and cached.is_file()
    assert not list(cached.parent.glob(".*.tmp"))  # atomic write left no temporary behind
    mtime = cached.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    monkeypatch.setattr("src.features.backbone.load_extractor", no_export)  # cached: torch not needed
    second = load_runtime(path, digest, runtime="onnx", store=store)
    assert second.path == cached and cached.stat().st_mtime_ns == mtime
    assert second.key == first.key


def test_cache_uses_the_environment_store_by_default(saved):
    path, digest = saved["pretrained"]
    ext = load_runtime(path, digest, runtime="onnx")
    assert ext.path == onnx_cache_path(Store(), digest, SIZE)


# -- int8 ------------------------------------------------------------------------------------
def test_int8_is_a_separate_quantised_export_with_its_own_key(saved, store, images, monkeypatch):
    import onnx

    path, digest = saved["pretrained"]
    fp = load_runtime(path, digest, runtime="onnx", store=store)
    q = load_runtime(path, digest, runtime="onnx-int8", store=store)
    assert q.path == onnx_cache_path(store, digest, SIZE, int8=True) != fp.path
    assert (fp.precision, q.precision) == ("float32", "int8")
    assert q.key == f"{fp.key}:{onnx_runtime.INT8_RECIPE}"  # int8 features never mix with float32 in the cache
    assert q.preprocessing == fp.preprocessing
    ops = {n.op_type for n in onnx.load(str(q.path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert onnx_runtime.cached_onnx(digest, store) == fp.path  # the float32 lookup ignores the int8 file
    assert onnx_runtime.cached_onnx(digest, store, int8=True) == q.path
    a = extract(fp, images, batch_size=5, progress=False)
    b = extract(q, images, batch_size=5, progress=False)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.mean() > 0.9, cos  # close to float32 ...
    assert np.abs(a - b).max() > 1e-3  # ... but really quantised

    def no_quantize(*args, **kwargs):
        raise AssertionError("quantised again")

    monkeypatch.setattr(onnx_runtime, "quantize_int8", no_quantize)
    assert load_runtime(path, digest, runtime="onnx-int8", store=store).path == q.path


def test_files_of_a_killed_export_or_quantisation_are_removed_by_the_next(saved, store):
    """A process killed while exporting or quantising leaves its temporary files beside the output (the
    float32 export and the int8 model are ~13 MB each); the next export removes those of dead processes."""
    import subprocess
    import sys

    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        path, digest = saved["perturbed"]
        fp, q = onnx_cache_path(store, digest, SIZE), onnx_cache_path(store, digest, SIZE, int8=True)
        fp.parent.mkdir(parents=True, exist_ok=True)
        dead = [fp.with_name(f".{fp.name}.{done.pid}.tmp")] + [
            q.with_name(f".{q.name}.{done.pid}{s}") for s in (".pre.tmp", ".tmp", ".ranges.tmp")]
        alive = [q.with_name(f".{q.name}.{sleeper.pid}.pre.tmp"), q.with_name(f".{q.name}.{done.pid}.other")]
        for f in dead + alive:
            f.write_bytes(b"half")
        load_runtime(path, digest, runtime="onnx-int8", store=store)
        assert [f.name for f in dead if f.exists()] == []
        assert all(f.exists() for f in alive)  # a live process's file and names that are not ours stay
    finally:
        sleeper.kill()
        sleeper.wait()


def test_int8_calibration_is_fixed():
    pre = Preprocessing.for_size(SIZE)
    a, b = onnx_runtime.calibration_batch(pre, 8), onnx_runtime.calibration_batch(pre, 8)
    assert a.shape == (8, SIZE, SIZE, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


# -- runtime selection -----------------------------------------------------------------------
def test_auto_prefers_onnx(saved, store, monkeypatch):
    monkeypatch.delenv("MLOPS_RUNTIME", raising=False)
    assert isinstance(load_runtime(*saved["pretrained"], store=store), OrtExtractor)


@pytest.mark.parametrize("env,expected", [("torch", TorchExtractor), ("onnx", OrtExtractor),
                                          ("ONNX", OrtExtractor)])
def test_environment_overrides_auto(saved, store, monkeypatch, env, expected):
    monkeypatch.setenv("MLOPS_RUNTIME", env)
    assert isinstance(load_runtime(*saved["pretrained"], store=store), expected)


def test_explicit_runtime_beats_environment(saved, store, monkeypatch):
    monkeypatch.setenv("MLOPS_RUNTIME", "onnx")
    assert isinstance(load_runtime(*saved["pretrained"], runtime="torch", store=store), TorchExtractor)


@pytest.mark.parametrize("bad", [{"runtime": "tensorrt"}, {"env": "gpu"}])
def test_unknown_runtime_is_rejected(saved, store, monkeypatch, bad):
    if "env" in bad:
        monkeypatch.setenv("MLOPS_RUNTIME", bad["env"])
    with pytest.raises(ValueError, match="auto, onnx, onnx-int8, torch"):
        load_runtime(*saved["pretrained"], runtime=bad.get("runtime", "auto"), store=store)


def test_auto_falls_back_to_torch_with_a_warning(saved, store, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(onnx_runtime, "export_onnx", broken)
    with caplog.at_level(logging.WARNING, logger="src.features.runtimes"):
        ext = load_runtime(*saved["pretrained"], store=store)
    assert isinstance(ext, TorchExtractor)
    assert "falling back to torch" in caplog.text and "exporter exploded" in caplog.text
    with pytest.raises(RuntimeError, match="exporter exploded"):
        load_runtime(*saved["pretrained"], runtime="onnx", store=store)


def test_the_pretrained_backbone_runs_in_onnx_runtime_where_its_export_pays(store, images, monkeypatch):
    from src.core.leases import working
    from src.features.backbone import pretrained_weights_path
    from src.features.runtimes import ONNX_PRETRAINED_FROM, pretrained_extractor

    monkeypatch.delenv("MLOPS_RUNTIME", raising=False)
    pre = Preprocessing.for_size(SIZE)
    torch_ext = pretrained_extractor(pre)  # no store: torch, as before
    few = pretrained_extractor(pre, store, images=ONNX_PRETRAINED_FROM - 1)
    assert isinstance(torch_ext, TorchExtractor) and isinstance(few, TorchExtractor)  # the export would not pay
    with monkeypatch.context() as m:
        m.setattr(Store, "writable", property(lambda self: False))
        assert isinstance(pretrained_extractor(pre, store, images=10**6), TorchExtractor)  # nowhere to export to
    with working(store):
        many = pretrained_extractor(pre, store, images=ONNX_PRETRAINED_FROM)
    assert isinstance(many, OrtExtractor) and many.key == torch_ext.key  # float32 either way: one cache
    export = onnx_cache_path(store, sha256_file(pretrained_weights_path()), SIZE)
    assert export.is_file()
    np.testing.assert_allclose(extract(many, images, progress=False), extract(torch_ext, images, progress=False),
                               rtol=TOL, atol=TOL)
    with working(store):
        assert isinstance(pretrained_extractor(pre, store, images=0), OrtExtractor)  # exported once: always used
    assert isinstance(pretrained_extractor(pre, store, images=10**6, runtime="torch"), TorchExtractor)


def test_the_pretrained_backbone_stays_in_torch_when_its_export_fails(store, monkeypatch, caplog):
    from src.core.leases import working
    from src.features.runtimes import pretrained_extractor

    monkeypatch.setattr(onnx_runtime, "export_onnx", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with working(store), caplog.at_level(logging.WARNING, logger="src.features.runtimes"):
        ext = pretrained_extractor(Preprocessing.for_size(SIZE), store, images=10**6)
    assert isinstance(ext, TorchExtractor) and "stays in torch" in caplog.text and "boom" in caplog.text


def test_auto_does_not_mask_a_bad_extractor_file(tmp_path, store):
    bad = tmp_path / "feature_extractor.pth"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelError, match="not a grocery-mlops feature extractor"):
        load_runtime(bad, sha256_file(bad), store=store)


# -- predictor -------------------------------------------------------------------------------
def test_predictor_predictions_equal_between_runtimes(saved, images, tmp_path, monkeypatch):
    from sklearn.linear_model import LogisticRegression

    from src.learning.bundles import load_model_bundle, save_model_bundle
    from src.predictor import EXTRACTOR_FILENAME, Predictor

    path, digest = saved["perturbed"]
    models = tmp_path / "models"
    models.mkdir()
    shutil.copyfile(path, models / EXTRACTOR_FILENAME)
    feats = extract(load_runtime(path, digest, runtime="torch"), images, progress=False)
    labels = np.array([sorted({p.parent.name for p in images}).index(p.parent.name) for p in images])
    clf = LogisticRegression(C=100, max_iter=2000).fit(feats, labels)
    save_model_bundle(models / "lr_model.skops", {
        "algorithm": "lr", "classifier": clf, "class_names": sorted({p.parent.name for p in images}),
        "extractor_digest": digest, "preprocessing": Preprocessing.for_size(SIZE).to_dict()})
    by_runtime = {rt: Predictor.load(models / "lr_model.skops", runtime=rt) for rt in ("onnx", "torch")}
    assert isinstance(by_runtime["onnx"].extractor, OrtExtractor)
    assert isinstance(by_runtime["torch"].extractor, TorchExtractor)
    a, b = (by_runtime[rt].predict_paths(images) for rt in ("onnx", "torch"))
    assert [name for name, _, _ in a] == [name for name, _, _ in b]
    np.testing.assert_allclose(np.stack([p for _, _, p in a]), np.stack([p for _, _, p in b]), atol=1e-3)
    assert Path(by_runtime["onnx"].extractor.path).parent == Store().root / "onnx"
    assert by_runtime["onnx"].extractor.precision == "float32"
    int8 = tmp_path / "int8"
    shutil.copytree(models, int8)
    bundle = load_model_bundle(int8 / "lr_model.skops")
    bundle.pop("_digest", None)
    save_model_bundle(int8 / "lr_model.skops", {**bundle, "extractor_precision": "int8"})
    monkeypatch.delenv("MLOPS_RUNTIME", raising=False)
    assert Predictor.load(int8 / "lr_model.skops").extractor.precision == "int8"  # trained on int8 features
    monkeypatch.setenv("MLOPS_RUNTIME", "onnx")  # an explicit choice still wins
    assert Predictor.load(int8 / "lr_model.skops").extractor.precision == "float32"
    elsewhere = tmp_path / "other-store"  # an explicit store (a path, as the CLIs pass it) holds the export
    moved = Predictor.load(models / "lr_model.skops", runtime="onnx", store=elsewhere)
    assert Path(moved.extractor.path).parent == elsewhere / "onnx"


def test_single_image_extraction_matches_the_batched_path(saved, store, images):
    """One image skips the thread pools (monitoring latency) and gives the same features."""
    ext = load_runtime(saved["pretrained"][0], saved["pretrained"][1], runtime="onnx", store=store)
    batched = extract(ext, images[:3], batch_size=2, progress=False)
    single = extract(ext, images[1:2], progress=False)
    np.testing.assert_array_equal(single, batched[1:2])


# -- pixel input (normalisation inside the graph) --------------------------------------------
def test_preprocessing_is_normalised_pixels(images):
    from src.core.images import open_image

    pre = Preprocessing.for_size(SIZE)
    img = open_image(images[0])
    px = pre.pixels(img)
    assert px.dtype == np.uint8 and px.shape == (SIZE, SIZE, 3)
    np.testing.assert_array_equal(pre.normalise(px), pre(img))


@pytest.mark.parametrize("int8", [False, True])
def test_pixel_input_gives_bit_identical_features(saved, store, images, int8, monkeypatch):
    """uint8 pixels through the graph's own normalisation = the float batch, to the last bit
    (also when a batch runs in chunks: 5 images in chunks of 2)."""
    from concurrent.futures import ThreadPoolExecutor

    import onnx

    from src.features.extraction import load_batch

    path, digest = saved["perturbed"]
    ext = load_runtime(path, digest, runtime="onnx-int8" if int8 else "onnx", store=store)
    assert ext.takes_pixels and ext._pixel_session is None  # built on first use only
    with ThreadPoolExecutor(2) as pool:
        floats = load_batch(images[:5], ext.preprocessing, pool)
        pixels = load_batch(images[:5], ext.preprocessing, pool, pixels=True)
    assert pixels.dtype == np.uint8 and floats.dtype == np.float32
    monkeypatch.setattr(onnx_runtime, "PIXEL_CHUNK", 2)
    a, b = ext(floats), ext(pixels)
    assert b.shape == (5, 1280)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a).max() > 0.1
    graph = onnx.load_from_string(onnx_runtime.pixel_input_model(ext.path, ext.preprocessing)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [n.op_type for n in graph.node[:5]] == ["Transpose", "Cast", "Div", "Sub", "Div"]  # permute on bytes
    assert onnx.load(str(ext.path)).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # cache untouched


def test_extract_feeds_pixels_to_ort_and_floats_to_torch(saved, store, images, monkeypatch):
    from src.features import extraction

    path, digest = saved["pretrained"]
    seen = []
    real = extraction.load_batch
    monkeypatch.setattr(extraction, "load_batch", lambda *a, **k: seen.append(real(*a, **k).dtype) or real(*a, **k))
    ort_ext = load_runtime(path, digest, runtime="onnx", store=store)
    a = extract(ort_ext, images, batch_size=4, progress=False)
    assert set(seen) == {np.dtype(np.uint8)}
    seen.clear()
    b = extract(load_runtime(path, digest, runtime="torch"), images, batch_size=4, progress=False)
    assert set(seen) == {np.dtype(np.float32)}
    np.testing.assert_allclose(a, b, atol=TOL, rtol=0)
