"""What the store's records reference, as their owners declare it: the blobs and extractors gc keeps.

gc writes no SQL over other packages' tables: each package that owns tables declares an
:class:`~src.core.ownership.Owner` next to its DDL (what its rows reference, what may be pruned) and
:func:`owners` lists them all. A test checks every table under ``src/`` against this list and every
digest found in a populated store against the owners' declared columns, so a new table or digest
column nobody declared fails a test instead of being invisible to gc.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Iterator, Mapping

from src.core.ownership import HELD_EXTRACTOR, PINS, Owner

DIGEST = re.compile(r"[0-9a-f]{64}")


def owners() -> tuple[Owner, ...]:
    """Every owner of store tables and files, in the order a blob's first reason is taken (du shows each
    blob under one kind). Imported here, not at the top: ``housekeeping.py --help`` stays instant."""
    from src.data import scan, version_store
    from src.features import exports, extraction, finetune
    from src.hpo import study
    from src.monitoring import records
    from src.registry import tables
    from src.tracking import journal
    from src.training import runs

    return (tables.OWNER, finetune.OWNER, version_store.OWNER, runs.OWNER, PINS, extraction.OWNER, exports.OWNER,
            records.OWNER, scan.OWNER, study.OWNER, journal.OWNER)


def existing_store(store):
    """A :class:`Store` for a folder that must already be a store (nothing is created for a typo)."""
    from src.core.errors import StoreError
    from src.core.store import Store, store_dir

    if not isinstance(store, Store) and not (store_dir(store) / "mlops.db").is_file():
        raise StoreError(f"no store database at {store_dir(store) / 'mlops.db'}",
                         hint="pass `store` (or MLOPS_STORE) pointing at a grocery-mlops store folder",
                         params=("store",))
    return Store.of(store)


def blob_kinds() -> tuple[str, ...]:
    """What a referenced blob can be referenced as (du's blob kinds), in the owners' order."""
    return tuple(k for o in owners() for k in o.blob_kinds)


def referenced_blobs(con: sqlite3.Connection, pruned: Mapping[str, frozenset[str]] | None = None) -> dict[str, str]:
    """digest → what references it (the first reason found); ``pruned``: owner name → its keys about to go."""
    refs: dict[str, str] = {}
    for owner in owners():
        if owner.database == "mlops.db":
            for digest, why in owner.blobs(con, frozenset((pruned or {}).get(owner.name, ()))):
                if digest:
                    refs.setdefault(digest, why)
    return refs


def kept_extractors(con: sqlite3.Connection, cutoff: float, held: Mapping[str, set[str]] | None = None) -> set[str]:
    """Extractor digests still needed: those the owners name (registered, a run since ``cutoff`` or the
    newest run, fine-tuned since ``cutoff``) and those a live process holds (a training in progress)."""
    keep = set((held or {}).get(HELD_EXTRACTOR, ()))
    for owner in owners():
        if owner.database == "mlops.db":
            keep.update(d for d in owner.extractors(con, cutoff) if d)
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
