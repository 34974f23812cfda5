"""The contract between a package that owns store tables and the store's upkeep (gc, du).

Each package that owns tables states, in one :class:`Owner` next to its DDL, what its rows
reference and what may be pruned; :mod:`src.upkeep` asks the owners (:func:`src.upkeep.references.owners`) and never
writes SQL over their tables. An owner declares:

* ``tables`` — every table it creates, and ``digests`` — what each digest-holding column names:
  :data:`BLOB` (a blob its rows need: gc keeps it), :data:`EXTRACTOR` (an extractor, by its file's
  sha256: that extractor's fine-tune cache, ONNX exports and cached features stay) or :data:`MENTION`
  (a digest on record only — an image's content, lineage — which keeps nothing). A test checks every
  table in ``src/`` against the owners and every digest in a populated store against ``digests``,
  so a new digest column nobody declared fails there rather than losing data in gc;
* ``blobs(con, pruned)`` — ``(digest, why)`` for each blob its rows need, leaving out the rows in
  ``pruned`` (the keys of its own :class:`Pruning` in this gc);
* ``extractors(con, cutoff)`` — extractor digests its rows still need (used since ``cutoff``, ...);
* ``prune(store, con, keep)`` — what may go: :class:`Pruning` per kind, each with the deletion.

``con`` is the store database read inside gc's write transaction (or a read for ``--dry-run``);
owners find their tables possibly missing (a store made by another package) and answer nothing then.
Holds of live processes (:mod:`src.core.leases`) reach the owners through :class:`Keep`.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

BLOB = "blob"
EXTRACTOR = "extractor"
MENTION = "mention"
HELD_EXTRACTOR = "extractor"  # the lease kind of an extractor held by work in progress (src.core.leases)


@dataclass(frozen=True)
class Keep:
    """What gc must leave: the cutoff time, extractors still needed, holds of live processes."""

    cutoff: float
    extractors: frozenset[str] = frozenset()
    held: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def holds(self, kind: str) -> frozenset[str]:
        return frozenset(self.held.get(kind, ()))


@dataclass
class Pruning:
    """What one owner would remove of one kind; ``delete`` runs inside gc's write transaction,
    ``after`` once it committed (another database, files) with the holds read again."""

    kind: str
    keys: list[str] = field(default_factory=list)
    items: list[str] = field(default_factory=list)
    count: int = 0
    bytes: int = 0
    releases: frozenset[str] = frozenset()  # blobs the removed rows referenced: they go if nothing else does
    delete: Callable[[sqlite3.Connection], None] | None = None
    after: Callable[[Keep], None] | None = None


def _nothing(*_args) -> tuple:
    return ()


@dataclass(frozen=True)
class Owner:
    """One package's tables as upkeep sees them (see the module docstring)."""

    name: str
    tables: tuple[str, ...] = ()
    digests: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)  # "table.column" → role(s)
    blob_kinds: tuple[str, ...] = ()  # the ``why`` values its ``blobs`` yields (du's blob kinds)
    blobs: Callable[[sqlite3.Connection, frozenset[str]], Iterable[tuple[str, str]]] = _nothing
    extractors: Callable[[sqlite3.Connection, float], Iterable[str]] = _nothing
    prune: Callable[..., Iterable[Pruning]] = _nothing
    database: str | None = "mlops.db"  # where its tables are (None: it owns files only)


def has_table(con: sqlite3.Connection, table: str) -> bool:
    return con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone() is not None


def _pinned(con: sqlite3.Connection, _pruned: frozenset[str]) -> Iterable[tuple[str, str]]:
    if has_table(con, "blob_pins"):
        yield from ((d, "pinned") for (d,) in con.execute("SELECT DISTINCT digest FROM blob_pins"))


#: The store's own table (:meth:`src.core.store.Store.pin`): blobs no table names, handed to W&B by path.
PINS = Owner("core.store", tables=("blob_pins",), digests={"blob_pins.digest": BLOB}, blob_kinds=("pinned",),
             blobs=_pinned)
