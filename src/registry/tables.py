"""Registry tables in the local store: model versions, aliases and the alias audit log.

Versions are allocated inside ``BEGIN IMMEDIATE`` (see :meth:`Store.transaction`), so
concurrent registrations queue instead of colliding, and a process killed mid-way leaves
either a whole version or none. Every alias move — including refused and forced
promotions — is one row in ``registry_events``; that table is the audit log.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from src.core.errors import StoreError
from src.core.ownership import BLOB, EXTRACTOR, MENTION, Owner, has_table
from src.core.store import Store, validate_name
from src.registry.policy import DEFAULT_TOLERANCE, check_request, decide

SCHEMA = """
CREATE TABLE IF NOT EXISTS registry_versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    extractor_digest TEXT NOT NULL,
    metrics TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at REAL NOT NULL,
    mirrored INTEGER,
    PRIMARY KEY (name, version),
    UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS registry_aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES registry_versions (name, version)
);
CREATE TABLE IF NOT EXISTS registry_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    from_version INTEGER,
    to_version INTEGER NOT NULL,
    action TEXT NOT NULL,
    reason TEXT,
    details TEXT,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS registry_events_by_name ON registry_events (name, id);
"""

# Columns added to stores made before they existed. ``mirrored``: 1 once the version (with its aliases as
# they were then) was logged to W&B; 0 while its mirror failed, never ran, or ran with W&B disabled;
# NULL (versions from before the column) reads as pending, like dataset versions: W&B finds an
# already mirrored one by content, so mirroring it again adds no W&B version.
ADDED_COLUMNS = {"registry_versions": {"mirrored": "INTEGER"}}
VERSION_COLS = ("name", "version", "digest", "extractor_digest", "metrics", "metadata", "created_at", "mirrored")

LATEST = "latest"
_VERSION_RE = re.compile(r"^v(\d+)$")


def open_registry(store: Store | str | None = None) -> Store:
    """A :class:`Store` with the registry tables created."""
    st = Store.of(store)
    st.ensure_schema("registry", SCHEMA, ADDED_COLUMNS)  # read-only stores are left as they are
    return st


def vname(version: int | None) -> str | None:
    return None if version is None else f"v{version}"


def parse_version(text: str) -> int | None:
    """``"v3"`` → 3; anything else → ``None`` (an alias)."""
    m = _VERSION_RE.fullmatch(text)
    return int(m.group(1)) if m else None


def validate_alias(alias: str, *, allow_latest: bool = False) -> str:
    validate_name(alias, "alias")
    if parse_version(alias) is not None:
        raise StoreError(f"invalid alias {alias!r}: 'vN' names are reserved for versions",
                         hint="choose a word such as staging or production")
    if alias == LATEST and not allow_latest:
        raise StoreError("alias 'latest' moves automatically to the newest version",
                         hint="choose another alias such as staging or production")
    return alias


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME:alias`` or ``NAME:vK`` → (name, alias-or-version or None)."""
    name, sep, tag = ref.partition(":")
    validate_name(name, "model name")
    if sep:
        if parse_version(tag) is None:
            validate_alias(tag, allow_latest=True)
    return name, (tag if sep else None)


@dataclass
class ModelVersion:
    name: str
    version: int
    digest: str
    extractor_digest: str
    metrics: dict[str, float]
    metadata: dict[str, Any]
    created_at: float
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:v{self.version}"

    def to_dict(self, full: bool = True) -> dict[str, Any]:
        d = {"name": self.name, "version": vname(self.version), "ref": self.ref, "digest": self.digest,
             "extractor_digest": self.extractor_digest, "aliases": sorted(self.aliases),
             "metrics": self.metrics, "created_at": _iso(self.created_at)}
        if full:
            d["metadata"] = self.metadata
        return d


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _row_to_version(row: sqlite3.Row, aliases: list[str] | None = None) -> ModelVersion:
    return ModelVersion(row["name"], row["version"], row["digest"], row["extractor_digest"],
                        json.loads(row["metrics"]), json.loads(row["metadata"]), row["created_at"],
                        list(aliases or []))


# -- reads --------------------------------------------------------------------------------
def alias_map(con: sqlite3.Connection, name: str | None = None) -> dict[tuple[str, int], list[str]]:
    sql = "SELECT name, alias, version FROM registry_aliases"
    rows = con.execute(sql + (" WHERE name = ?" if name else ""), (name,) if name else ()).fetchall()
    out: dict[tuple[str, int], list[str]] = {}
    for r in rows:
        out.setdefault((r["name"], r["version"]), []).append(r["alias"])
    return out


def all_versions(con: sqlite3.Connection, name: str | None = None) -> list[ModelVersion]:
    sql = "SELECT * FROM registry_versions"
    sql += " WHERE name = ? ORDER BY version" if name else " ORDER BY name, version"
    rows = con.execute(sql, (name,) if name else ()).fetchall()
    amap = alias_map(con, name)
    return [_row_to_version(r, amap.get((r["name"], r["version"]))) for r in rows]


def get_version(con: sqlite3.Connection, name: str, version: int) -> ModelVersion | None:
    row = con.execute("SELECT * FROM registry_versions WHERE name = ? AND version = ?",
                      (name, version)).fetchone()
    if row is None:
        return None
    aliases = [r[0] for r in con.execute(
        "SELECT alias FROM registry_aliases WHERE name = ? AND version = ?", (name, version))]
    return _row_to_version(row, aliases)


def resolve(con: sqlite3.Connection, name: str, tag: str | None = None) -> ModelVersion:
    """The version that ``name:tag`` points at (tag: alias or vK; default ``latest``)."""
    validate_name(name, "model name")
    tag = tag or LATEST
    if not con.execute("SELECT 1 FROM registry_versions WHERE name = ? LIMIT 1", (name,)).fetchone():
        raise StoreError(f"no model named {name!r} in the registry",
                         hint="see `python src/model_registry.py list`")
    version = parse_version(tag)
    if version is None:
        row = con.execute("SELECT version FROM registry_aliases WHERE name = ? AND alias = ?",
                          (name, tag)).fetchone()
        if row is None:
            held = sorted(alias_map(con, name).values())
            raise StoreError(f"model {name!r} has no alias {tag!r}",
                             hint=f"aliases: {', '.join(a for al in held for a in al) or 'none'}; "
                                  f"promote a version first")
        version = row["version"]
    mv = get_version(con, name, version)
    if mv is None:
        raise StoreError(f"model {name!r} has no version v{version}", hint="see `list` for its versions")
    return mv


def history(con: sqlite3.Connection, name: str) -> list[dict[str, Any]]:
    rows = con.execute("SELECT * FROM registry_events WHERE name = ? ORDER BY id", (name,)).fetchall()
    return [{"id": r["id"], "at": _iso(r["at"]), "alias": r["alias"], "from": vname(r["from_version"]),
             "to": vname(r["to_version"]), "action": r["action"], "reason": r["reason"],
             "details": json.loads(r["details"]) if r["details"] else {}} for r in rows]


# -- writes (call inside Store.transaction) -----------------------------------------------
def insert_version(con: sqlite3.Connection, name: str, digest: str, extractor_digest: str,
                   metrics: dict[str, float], metadata: dict[str, Any]) -> tuple[int, bool]:
    """Allocate the next version for ``name``; identical bytes return the existing one."""
    row = con.execute("SELECT version FROM registry_versions WHERE name = ? AND digest = ?",
                      (name, digest)).fetchone()
    if row is not None:
        return row["version"], False
    version = con.execute("SELECT COALESCE(MAX(version), -1) + 1 FROM registry_versions WHERE name = ?",
                          (name,)).fetchone()[0]
    con.execute(f"INSERT INTO registry_versions ({', '.join(VERSION_COLS)}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, version, digest, extractor_digest, json.dumps(metrics), json.dumps(metadata),
                 time.time(), 0))
    return version, True


def is_mirrored(con: sqlite3.Connection, name: str, version: int) -> bool:
    """True once ``name:vK`` was logged to W&B and nothing (an alias move) has happened since."""
    row = con.execute("SELECT * FROM registry_versions WHERE name = ? AND version = ?", (name, version)).fetchone()
    return bool(row and "mirrored" in row.keys() and row["mirrored"])


def pending_mirrors(con: sqlite3.Connection, name: str | None = None) -> list[tuple[str, int]]:
    """(name, version) of every version whose W&B mirror failed or never ran, oldest first."""
    cols = {r["name"] for r in con.execute("PRAGMA table_info(registry_versions)")}
    cond = "AND (mirrored IS NULL OR mirrored = 0)" if "mirrored" in cols else ""
    return [(r["name"], r["version"]) for r in con.execute(
        f"SELECT name, version FROM registry_versions WHERE (? IS NULL OR name = ?) {cond} ORDER BY name, version",
        (name, name))]


def set_mirrored(con: sqlite3.Connection, name: str, version: int, mirrored: bool) -> None:
    con.execute("UPDATE registry_versions SET mirrored = ? WHERE name = ? AND version = ?",
                (int(mirrored), name, version))


def move_alias(con: sqlite3.Connection, name: str, alias: str, version: int, *, reason: str | None = None,
               force: bool = False, tolerance: float = DEFAULT_TOLERANCE) -> dict[str, Any]:
    """Point ``name:alias`` at ``version`` and log it; a refused gated move is logged, not applied.

    Returns the event (``action``: moved, forced, refused or unchanged); the gate and the force rules are
    :mod:`src.registry.policy`'s.
    """
    check_request(force=force, reason=reason, tolerance=tolerance)
    candidate = get_version(con, name, version)
    if candidate is None:
        raise StoreError(f"model {name!r} has no version v{version}", hint="see `list` for its versions")
    row = con.execute("SELECT version FROM registry_aliases WHERE name = ? AND alias = ?",
                      (name, alias)).fetchone()
    previous = row["version"] if row else None
    event = {"name": name, "alias": alias, "from": vname(previous), "to": vname(version), "reason": reason}
    if previous == version:
        return {**event, "action": "unchanged"}
    current = get_version(con, name, previous) if previous is not None else None
    action, details = decide(alias, current, candidate, force=force, tolerance=tolerance)
    con.execute("INSERT INTO registry_events (name, alias, from_version, to_version, action, reason, details, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, alias, previous, version, action, reason, json.dumps(details) if details else None,
                 time.time()))
    if action != "refused":
        con.execute("INSERT INTO registry_aliases VALUES (?, ?, ?, ?) ON CONFLICT (name, alias) DO UPDATE "
                    "SET version = excluded.version, updated_at = excluded.updated_at",
                    (name, alias, version, time.time()))
    return {**event, "action": action, "details": details}


# -- what gc and du ask the registry (src.core.ownership) ------------------------------------
def _referenced_blobs(con: sqlite3.Connection, _pruned: frozenset[str]):
    """Every version's model and extractor: registered versions are never collected."""
    if has_table(con, "registry_versions"):
        for digest, extractor in con.execute("SELECT digest, extractor_digest FROM registry_versions"):
            yield digest, "registered model"
            yield extractor, "registered extractor"


def _needed_extractors(con: sqlite3.Connection, _cutoff: float):
    if has_table(con, "registry_versions"):
        yield from (d for (d,) in con.execute("SELECT DISTINCT extractor_digest FROM registry_versions"))


OWNER = Owner("registry", tables=("registry_versions", "registry_aliases", "registry_events"),
              digests={"registry_versions.digest": BLOB, "registry_versions.extractor_digest": (BLOB, EXTRACTOR),
                       "registry_versions.metadata": MENTION, "registry_events.details": MENTION},
              blob_kinds=("registered model", "registered extractor"), blobs=_referenced_blobs,
              extractors=_needed_extractors)
