"""Batched feature extraction with parallel decoding and a persistent feature cache.

Decoding runs in a thread pool (PIL releases the GIL) overlapped with inference, JPEGs
are decoded at reduced size with ``Image.draft``, and the network runs channels_last
(plain NCHW is 2–3× slower on CPU). Features are cached in the store keyed by
(image sha256, extractor key), where the extractor key covers the weights digest and
the preprocessing, so a rerun with the same extractor extracts nothing.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from src.features.backbone import NUM_FEATURES, Preprocessing
from src.features.pixel_cache import active
from src.core.images import load_image
from src.core.ownership import EXTRACTOR, MENTION, Keep, Owner, Pruning, has_table
from src.core.store import Store, sha256_file

log = logging.getLogger(__name__)


def decode_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def load_batch(paths: Sequence, pre: Preprocessing, pool: ThreadPoolExecutor, pixels: bool = False) -> np.ndarray:
    """Decode and preprocess ``paths`` (files, PIL images or arrays) in parallel → float32 NHWC batch
    (``pixels=True``: the uint8 pixels before normalisation, for extractors that normalise themselves)."""
    draft = pre.resize
    cache, key = active(), pre.key()

    def decode(p):
        return pre.pixels(load_image(p, draft_size=draft))

    def one(p):
        px = decode(p) if cache is None else cache.pixels(p, key, lambda: decode(p))
        return px if pixels else pre.normalise(px)

    return np.stack(list(pool.map(one, paths)))


class _Serial:
    """A pool stand-in that maps in the calling thread (one image: no threads to start)."""

    @staticmethod
    def map(fn, items):
        return map(fn, items)


class TorchExtractor:
    """Pooled 1280-d features from a torch model (eval mode, channels_last, no grad)."""

    precision = "float32"

    def __init__(self, model, preprocessing: Preprocessing, key: str):
        import torch

        self.model = model.eval().to(memory_format=torch.channels_last)
        self.preprocessing = preprocessing
        self.key = key  # identifies weights + preprocessing for the cache

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return self.model(x).float().numpy()


def _batches(items: Sequence, size: int) -> Iterator[Sequence]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def extract(extractor, paths: Sequence, batch_size: int = 32, progress: bool = True,
            desc: str = "extracting features") -> np.ndarray:
    """Features for ``paths`` (files, PIL images or arrays, see :func:`src.core.images.load_image`) in
    order; decoding of batch k+1 overlaps inference on batch k."""
    from src.core.progress import progress_bar

    out = np.empty((len(paths), NUM_FEATURES), dtype=np.float32)
    if not paths:
        return out
    if len(paths) == 1:  # single-image latency (monitoring): no thread pools, no progress bar
        return extractor(load_batch(list(paths), extractor.preprocessing, _Serial))
    batches = list(_batches(list(paths), batch_size))
    pixels = bool(getattr(extractor, "takes_pixels", False))  # normalising in the graph: ~0.5 ms/image less here
    with ThreadPoolExecutor(decode_workers()) as pool, ThreadPoolExecutor(1) as prefetch, \
            progress_bar(total=len(paths), progress=progress, minimum=64, desc=desc, unit="img") as bar:
        pending = prefetch.submit(load_batch, batches[0], extractor.preprocessing, pool, pixels)
        start = 0
        for i in range(len(batches)):
            batch = pending.result()
            if i + 1 < len(batches):
                pending = prefetch.submit(load_batch, batches[i + 1], extractor.preprocessing, pool, pixels)
            feats = extractor(batch)
            out[start:start + len(feats)] = feats
            start += len(feats)
            bar.update(len(feats))
    return out


class FeatureCache:
    """(image sha256, extractor key) → float32 vector, in ``<store>/features.db``."""

    def __init__(self, store: Store | None = None):
        self.store = store or Store()
        self.path = self.store.root / "features.db"
        con = self._connect()
        con.execute("CREATE TABLE IF NOT EXISTS features (image_sha TEXT, extractor TEXT, vec BLOB, "
                    "PRIMARY KEY (image_sha, extractor)) WITHOUT ROWID")
        con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode = WAL")
        con.execute("PRAGMA busy_timeout = 60000")
        return con

    def get(self, digests: Sequence[str], extractor: str) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        con = self._connect()
        try:
            uniq = list(dict.fromkeys(digests))
            for chunk in _batches(uniq, 500):
                q = f"SELECT image_sha, vec FROM features WHERE extractor = ? AND image_sha IN ({','.join('?' * len(chunk))})"
                for sha, vec in con.execute(q, [extractor, *chunk]):
                    found[sha] = np.frombuffer(vec, dtype=np.float32)
        finally:
            con.close()
        return found

    def put(self, digests: Sequence[str], extractor: str, feats: np.ndarray) -> None:
        con = self._connect()
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?)",
                                [(d, extractor, f.astype(np.float32).tobytes()) for d, f in zip(digests, feats)])
        finally:
            con.close()


def cached_features(extractor, paths: Sequence[Path], digests: Sequence[str], cache: FeatureCache | None,
                    batch_size: int = 32, progress: bool = True, desc: str = "extracting features"
                    ) -> tuple[np.ndarray, int]:
    """Features for ``paths`` using the cache; returns (features, number extracted)."""
    found = cache.get(digests, extractor.key) if cache else {}
    missing = [i for i, d in enumerate(digests) if d not in found]
    new = extract(extractor, [paths[i] for i in missing], batch_size, progress, desc) if missing else None
    if cache and missing:
        cache.put([digests[i] for i in missing], extractor.key, new)
    out = np.empty((len(paths), NUM_FEATURES), dtype=np.float32)
    for i, d in enumerate(digests):
        if d in found:
            out[i] = found[d]
    if missing:
        out[missing] = new
    log.info("%s: %d from cache, %d extracted", desc, len(paths) - len(missing), len(missing))
    return out, len(missing)


def digest_files(paths: Sequence[Path]) -> list[str]:
    with ThreadPoolExecutor(decode_workers()) as pool:
        return list(pool.map(sha256_file, paths))


# -- what gc and du ask the feature cache (src.core.ownership) -------------------------------
def _cache_db(store: Store) -> sqlite3.Connection | None:
    path = store.root / "features.db"
    if not path.is_file():
        return None
    con = sqlite3.connect(path, timeout=60, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 60000")
    return con


def prunable(store: Store, _con, keep: Keep) -> list[Pruning]:
    """Features of every extractor nothing keeps (the cache has no dates: an extractor kept keeps them all)."""
    con = _cache_db(store)
    if con is None:
        return []
    try:
        if not has_table(con, "features"):
            return []
        rows = [(key, int(n), int(size or 0)) for key, n, size in con.execute(
            "SELECT extractor, COUNT(*), SUM(LENGTH(vec) + LENGTH(image_sha) + LENGTH(extractor)) FROM features "
            "GROUP BY extractor") if key.split(":", 1)[0] not in keep.extractors]
    finally:
        con.close()
    if not rows:
        return []
    keys = [k for k, _, _ in rows]

    def drop(now: Keep) -> None:  # after gc committed: a training that started meanwhile may hold one again
        con = _cache_db(store)
        if con is None:
            return
        try:
            con.execute("BEGIN IMMEDIATE")
            con.executemany("DELETE FROM features WHERE extractor = ?",
                            [(k,) for k in keys if k.split(":", 1)[0] not in now.extractors])
            con.execute("COMMIT")
        finally:
            con.close()

    return [Pruning("cached features", keys=keys, items=keys, count=sum(n for _, n, _ in rows),
                    bytes=sum(s for _, _, s in rows), after=drop)]


OWNER = Owner("features.extraction", tables=("features",), database="features.db",
              digests={"features.image_sha": MENTION, "features.extractor": EXTRACTOR}, prune=prunable)
