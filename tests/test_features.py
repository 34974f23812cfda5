import numpy as np
import pytest
from helpers import make_image_folder

from src.features.backbone import Preprocessing, create_model
from src.data.dataset import image_dataset as scan_dataset
from src.features.extraction import FeatureCache, TorchExtractor, cached_features, digest_files, extract
from src.core.store import Store


class CountingExtractor:
    """Deterministic stand-in network that counts how many images it saw."""

    def __init__(self, key="k1"):
        self.preprocessing = Preprocessing.for_size(32)
        self.key = key
        self.seen = 0

    def __call__(self, batch):
        self.seen += len(batch)
        feats = np.zeros((len(batch), 1280), dtype=np.float32)
        feats[:, :3] = batch.mean(axis=(1, 2))
        return feats


@pytest.fixture
def dataset(tmp_path):
    return scan_dataset(make_image_folder(tmp_path / "d"))


def test_cache_second_pass_extracts_nothing(dataset, tmp_path):
    cache = FeatureCache(Store(tmp_path / "store"))
    ex = CountingExtractor()
    paths = dataset.train.paths
    digests = digest_files(paths)
    f1, n1 = cached_features(ex, paths, digests, cache, batch_size=4, progress=False)
    f2, n2 = cached_features(ex, paths, digests, cache, batch_size=4, progress=False)
    assert n1 == len(paths) and n2 == 0 and ex.seen == len(paths)
    assert np.array_equal(f1, f2)


def test_cache_keyed_by_extractor(dataset, tmp_path):
    cache = FeatureCache(Store(tmp_path / "store"))
    paths, digests = dataset.test.paths, digest_files(dataset.test.paths)
    cached_features(CountingExtractor("k1"), paths, digests, cache, progress=False)
    other = CountingExtractor("k2")
    _, n = cached_features(other, paths, digests, cache, progress=False)
    assert n == len(paths)


def test_cache_keyed_by_content_not_path(dataset, tmp_path):
    cache = FeatureCache(Store(tmp_path / "store"))
    ex = CountingExtractor()
    paths = dataset.test.paths
    cached_features(ex, paths, digest_files(paths), cache, progress=False)
    copy = tmp_path / "copy.png"
    copy.write_bytes(paths[0].read_bytes())
    _, n = cached_features(ex, [copy], digest_files([copy]), cache, progress=False)
    assert n == 0


def test_partial_cache_keeps_order(dataset, tmp_path):
    cache = FeatureCache(Store(tmp_path / "store"))
    ex = CountingExtractor()
    paths = dataset.train.paths
    digests = digest_files(paths)
    cached_features(ex, paths[::2], digests[::2], cache, progress=False)
    mixed, n = cached_features(ex, paths, digests, cache, progress=False)
    assert n == len(paths[1::2])
    assert np.array_equal(mixed, extract(CountingExtractor(), paths, progress=False))


def test_real_extraction_batches_agree(dataset):
    ex = TorchExtractor(create_model(num_classes=0), Preprocessing.for_size(64), key="x")
    paths = dataset.test.paths
    a = extract(ex, paths, batch_size=2, progress=False)
    b = extract(ex, paths, batch_size=6, progress=False)
    assert a.shape == (len(paths), 1280)
    assert np.allclose(a, b, atol=1e-4)
    assert not np.allclose(a[0], a[-1])  # different classes, different features
