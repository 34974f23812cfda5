"""What the store's records reference: the blobs and the extractors that gc must keep.

Blobs are named by every table that stores a digest: dataset version manifests
(``dataset_files.sha256``), registered models and their extractors (``registry_versions``),
the fine-tune cache (``finetune_cache.blob``), training runs' confusion matrices
(``runs.images``) and pins (``blob_pins``: files handed to W&B by path). Extractors are named
by their file's sha256: in the registry, in training runs (``results.extractor.digest``), in the
fine-tune cache; ONNX exports and cached features carry that digest in their name or key.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Iterable, Iterator

DIGEST = re.compile(r"[0-9a-f]{64}")
ONNX_NAME = re.compile(r"([0-9a-f]{64})-\d+(?:-int8)?\.onnx")


def existing_store(store):
    """A :class:`Store` for a folder that must already be a store (nothing is created for a typo)."""
    from src.core.errors import StoreError
    from src.core.store import Store, store_dir

    if not isinstance(store, Store) and not (store_dir(store) / "mlops.db").is_file():
        raise StoreError(f"no store database at {store_dir(store) / 'mlops.db'}",
                         hint="pass --store (or MLOPS_STORE) pointing at a grocery-mlops store folder")
    return Store.of(store)


def tables(con: sqlite3.Connection) -> set[str]:
    return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def columns(con: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in con.execute(f"PRAGMA table_info({table})")}


def referenced_blobs(con: sqlite3.Connection, dropped_finetune_keys: Iterable[str] = ()) -> dict[str, str]:
    """digest → what references it (the first reason found); ``dropped_finetune_keys`` count as gone."""
    have, refs = tables(con), {}
    dropped = set(dropped_finetune_keys)

    def add(digests: Iterable[str | None], why: str) -> None:
        for d in digests:
            if d:
                refs.setdefault(d, why)

    if "registry_versions" in have:
        rows = con.execute("SELECT digest, extractor_digest FROM registry_versions").fetchall()
        add((r[0] for r in rows), "registered model")
        add((r[1] for r in rows), "registered extractor")
    if "finetune_cache" in have:
        add((r[1] for r in con.execute("SELECT key, blob FROM finetune_cache") if r[0] not in dropped),
            "fine-tuned extractor")
    if "dataset_files" in have:
        add((r[0] for r in con.execute("SELECT DISTINCT sha256 FROM dataset_files")), "dataset file")
    if "runs" in have and "images" in columns(con, "runs"):
        for (images,) in con.execute("SELECT images FROM runs WHERE images IS NOT NULL"):
            add(json.loads(images).values(), "run image")
    if "blob_pins" in have:
        add((r[0] for r in con.execute("SELECT digest FROM blob_pins")), "pinned")
    return refs


def kept_extractors(con: sqlite3.Connection, cutoff: float) -> set[str]:
    """Extractor digests still needed: registered, used by a run since ``cutoff`` (or the newest run),
    or fine-tuned since ``cutoff``."""
    have, keep = tables(con), set()
    if "registry_versions" in have:
        keep |= {r[0] for r in con.execute("SELECT extractor_digest FROM registry_versions")}
    if "runs" in have:
        rows = con.execute("SELECT results FROM runs WHERE created_at >= ? OR id = "
                           "(SELECT id FROM runs ORDER BY created_at DESC, id DESC LIMIT 1)", (cutoff,))
        for (results,) in rows:
            digest = (json.loads(results).get("extractor") or {}).get("digest")
            if digest:
                keep.add(digest)
    if "finetune_cache" in have:
        keep |= {r[0] for r in con.execute("SELECT blob FROM finetune_cache WHERE created_at >= ?", (cutoff,))}
    return keep


def stored_blobs(blob_root: Path) -> Iterator[Path]:
    """Every blob file (``blobs/ab/<sha256>``)."""
    if not blob_root.is_dir():
        return
    for sub in sorted(blob_root.iterdir()):
        if sub.is_dir() and len(sub.name) == 2:
            for p in sorted(sub.iterdir()):
                if DIGEST.fullmatch(p.name) and p.name[:2] == sub.name and p.is_file():
                    yield p
