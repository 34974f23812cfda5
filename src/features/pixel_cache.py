"""Decoded pixels kept for the rest of a training run, so each image file is decoded once per size.

A default training reads the same files at the network's size in up to six stages: the near-duplicate
check, the first extractor's features, the pseudo-label round's extractor, the int8 calibration, the guard's
int8 pass and the test split. JPEG decoding and resizing cost about 1 ms of CPU per image (X5); on the
shipped sample ~900 of the ~1,400 decodes were repeats. Within :func:`pixel_cache` the uint8 pixels (after
resize and centre crop, before normalisation) of files are kept up to ``max_bytes``: first come, never
evicted (a run reads its images in the same order each stage, so an evicting cache that is too small
would keep nothing useful), dropped when the block ends. Keyed by the file's real path, size and
modification time and the preprocessing's key: a file changed on disk during the run is decoded again.
Images passed as PIL objects or arrays are never kept.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

import numpy as np

DEFAULT_MAX_BYTES = 512 * 2 ** 20  # ~3,500 images at 224 px: the Grocery Store's train/, pool and val/ fit

_active: list["PixelCache"] = []


class PixelCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._items: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    @staticmethod
    def key(path, preprocessing_key: str) -> tuple | None:
        if not isinstance(path, (str, os.PathLike)):
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None  # the loader says what is wrong with it
        return os.path.realpath(path), st.st_size, st.st_mtime_ns, preprocessing_key

    def pixels(self, path, preprocessing_key: str, decode: Callable[[], np.ndarray]) -> np.ndarray:
        """The uint8 pixels of ``path``: kept ones, else ``decode()``'s (kept while there is room)."""
        key = self.key(path, preprocessing_key)
        if key is not None:
            found = self._items.get(key)
            if found is not None:
                with self._lock:
                    self.hits += 1
                return found
        pixels = decode()
        if key is None:
            return pixels
        with self._lock:
            self.misses += 1
            if key not in self._items and self.bytes + pixels.nbytes <= self.max_bytes:
                pixels.flags.writeable = False  # shared by every later batch: nobody may change it
                self._items[key] = pixels
                self.bytes += pixels.nbytes
        return pixels


def active() -> PixelCache | None:
    """The cache of the innermost :func:`pixel_cache` block, if any."""
    return _active[-1] if _active else None


@contextlib.contextmanager
def pixel_cache(max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[PixelCache]:
    cache = PixelCache(max_bytes)
    _active.append(cache)
    try:
        yield cache
    finally:
        _active.remove(cache)
