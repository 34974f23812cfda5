"""Within a training run each image file is decoded once per size (features/pixel_cache.py)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from helpers import make_image_folder
from PIL import Image

import src.features.extraction as extraction
from src.features.backbone import Preprocessing
from src.features.extraction import extract
from src.features.pixel_cache import PixelCache, active, pixel_cache


class MeanExtractor:
    takes_pixels = False

    def __init__(self, size=32, takes_pixels=False):
        self.preprocessing = Preprocessing.for_size(size)
        self.takes_pixels = takes_pixels
        self.key = "mean"

    def __call__(self, batch):
        feats = np.zeros((len(batch), 1280), dtype=np.float32)
        feats[:, :3] = np.asarray(batch, dtype=np.float32).mean(axis=(1, 2))
        return feats


@pytest.fixture
def files(tmp_path):
    root = make_image_folder(tmp_path / "d", per_split={"train": 4})
    return sorted((root / "train").rglob("*.png"))


@pytest.fixture
def decodes(monkeypatch):
    calls = []
    real = extraction.load_image

    def counting(p, **kw):
        calls.append(p)
        return real(p, **kw)

    monkeypatch.setattr(extraction, "load_image", counting)
    return calls


def test_a_second_pass_decodes_nothing_and_gives_the_same_features(files, decodes):
    plain = extract(MeanExtractor(), files, batch_size=5, progress=False)
    assert len(decodes) == len(files)
    with pixel_cache() as cache:
        first = extract(MeanExtractor(), files, batch_size=5, progress=False)
        again = extract(MeanExtractor(), files, batch_size=5, progress=False)
        as_pixels = extract(MeanExtractor(takes_pixels=True), files, batch_size=5, progress=False)
    assert len(decodes) == 2 * len(files)  # the cached block decoded each file once
    assert cache.hits == 2 * len(files) and cache.misses == len(files)
    assert np.array_equal(plain, first) and np.array_equal(first, again)
    assert not np.array_equal(first, as_pixels)  # normalised vs raw pixels: both served from one entry
    assert active() is None


def test_each_size_has_its_own_entry(files, decodes):
    with pixel_cache() as cache:
        extract(MeanExtractor(32), files, progress=False)
        extract(MeanExtractor(48), files, progress=False)
    assert cache.misses == 2 * len(files) and len(decodes) == 2 * len(files)


def test_memory_stays_within_the_bound(files, decodes):
    one = 32 * 32 * 3
    with pixel_cache(max_bytes=3 * one) as cache:
        extract(MeanExtractor(), files, progress=False)
        extract(MeanExtractor(), files, progress=False)
    assert cache.bytes == 3 * one and cache.hits == 3
    assert len(decodes) == 2 * len(files) - 3


def test_a_file_changed_on_disk_is_decoded_again(files, decodes):
    with pixel_cache():
        before = extract(MeanExtractor(), files[:1], progress=False)
        Image.new("RGB", (40, 40), (0, 0, 0)).save(files[0])
        os.utime(files[0], ns=(1, 1))  # even where the clock has not moved
        after = extract(MeanExtractor(), files[:1], progress=False)
    assert len(decodes) == 2 and not np.array_equal(before, after)


def test_images_in_memory_are_not_kept_and_kept_pixels_are_read_only(files):
    cache = PixelCache()
    arr = np.zeros((4, 4, 3), np.uint8)
    assert cache.pixels(Image.new("RGB", (4, 4)), "k", lambda: arr) is arr and len(cache) == 0
    kept = cache.pixels(files[0], "k", lambda: np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError):
        kept[0, 0, 0] = 1


def test_outside_a_block_nothing_is_kept(files, decodes):
    extract(MeanExtractor(), files, progress=False)
    extract(MeanExtractor(), files, progress=False)
    assert len(decodes) == 2 * len(files)
