"""Stored dataset versions: the tables, version allocation, read back, diff, restore.

Building a version from a folder (scan, blobs, W&B mirror) is :mod:`src.data.version_builder`; the CLI
:mod:`src.data_versioning` re-exports the public functions of both. Tables: ``dataset_versions`` (one row per
immutable version, unique per content digest, with its W&B ``mirrored`` state: 1 mirrored,
0 or NULL not yet) and ``dataset_files`` (its manifest).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from src.core.errors import ConfigError, DataError, StoreError
from src.core.ownership import BLOB, MENTION, Owner, has_table
from src.core.paths import DEFAULT_DATA_DIR

DEFAULT_NAME = "grocery-dataset"


def default_dataset_name(data_dir: str | os.PathLike | None) -> str:
    """The name a dataset is versioned under when none is given: ``grocery-dataset`` for the
    default DS2GROCERIES folder (or no folder), else the folder's own name made store-safe, so a
    5-class toy set does not become a version of the project's dataset."""
    from src.core.names import slug

    if data_dir is None:
        return DEFAULT_NAME
    folder = Path(data_dir).expanduser().resolve().name
    if folder == DEFAULT_DATA_DIR:
        return DEFAULT_NAME
    return slug(folder, 128, DEFAULT_NAME)

DDL = """
CREATE TABLE IF NOT EXISTS dataset_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL, created_at TEXT NOT NULL,
    description TEXT, data_dir TEXT, metadata TEXT NOT NULL, quality TEXT NOT NULL, mirrored INTEGER,
    PRIMARY KEY (name, version), UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS dataset_files (
    name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, split TEXT NOT NULL,
    class TEXT NOT NULL, sha256 TEXT NOT NULL, size INTEGER NOT NULL, width INTEGER, height INTEGER,
    mode TEXT, format TEXT, dhash TEXT, error TEXT, error_detail TEXT, source TEXT,
    PRIMARY KEY (name, version, path),
    FOREIGN KEY (name, version) REFERENCES dataset_versions (name, version)
);
"""
# columns added to stores made before they existed (a file's label source reads back as unknown there)
ADDED_COLUMNS = {"dataset_versions": {"mirrored": "INTEGER"}, "dataset_files": {"source": "TEXT"}}
VERSION_COLS = ("name", "version", "digest", "created_at", "description", "data_dir", "metadata", "quality",
                "mirrored")
FILE_COLS = ("path", "split", "class", "sha256", "size", "width", "height", "mode", "format", "dhash",
             "error", "error_detail", "source")
SOURCES = ("human", "pseudo")  # who gave a labeled file its class; pool files have none


def open_store(store=None):
    """A :class:`~src.core.store.Store` (given, or from a folder / ``MLOPS_STORE``) with our tables."""
    from src.core.store import Store

    st = Store.of(store)
    st.ensure_schema("dataset_versions", DDL, ADDED_COLUMNS)  # Store.connect handles the fresh-database WAL race
    return st


MAX_VERSION = 10**9  # SQLite integers overflow far above this, and vMAX+1 must still fit


def parse_version(value: str | int) -> int:
    """``v3`` / ``3`` → 3."""
    s = str(value).strip()
    s = s[1:] if s[:1] in ("v", "V") else s
    if not s.isdigit() or not 1 <= int(s) <= MAX_VERSION:
        raise ConfigError(f"invalid dataset version {value!r}",
                          hint=f"use vN with 1 <= N <= {MAX_VERSION}, for example v1, or 'latest'")
    return int(s)


def _resolve(con, name: str, version: str | int) -> int:
    if str(version) == "latest":
        row = con.execute("SELECT MAX(version) FROM dataset_versions WHERE name=?", (name,)).fetchone()
        if row[0] is None:
            raise StoreError(f"no versions of dataset {name!r} in the store",
                             hint="create one with `data_dir=DIR` and `artifact_name=NAME`",
                             params=("data_dir", "artifact_name"))
        return row[0]
    v = parse_version(version)
    if not con.execute("SELECT 1 FROM dataset_versions WHERE name=? AND version=?", (name, v)).fetchone():
        raise StoreError(f"dataset {name}:v{v} does not exist", hint="see the versions with `list_versions`",
                         params=("list_versions",))
    return v


def lookup_digest(con, name: str, digest: str) -> int | None:
    row = con.execute("SELECT version FROM dataset_versions WHERE name=? AND digest=?", (name, digest)).fetchone()
    return row[0] if row else None


def insert_version(st, name: str, want: int | None, digest: str, manifest: list[dict], meta: dict,
                    quality: dict, description: str | None, data_dir: str) -> tuple[int, bool]:
    """Allocate the version number and insert, atomically; returns (version, created).

    Every blob the manifest names must exist when the row is written (checked under the
    write lock, the lock a failed run also takes to remove the blobs it wrote).
    """
    from datetime import datetime, timezone

    with st.transaction() as con:
        same = lookup_digest(con, name, digest)
        if same is not None:
            return same, False
        missing = next((e for e in manifest if not st.has_blob(e["sha256"])), None)
        if missing is not None:
            raise StoreError(f"blob {missing['sha256'][:12]} of {missing['path']} vanished before the version "
                             "was written (a failed run removed its blobs)", hint="re-run")
        if want is not None:
            row = con.execute("SELECT digest FROM dataset_versions WHERE name=? AND version=?",
                              (name, want)).fetchone()
            if row:
                raise StoreError(f"dataset {name}:v{want} already exists with other content",
                                 hint="versions are immutable; omit `version` to create the next one",
                                 params=("version",))
            v = want
        else:
            v = (con.execute("SELECT MAX(version) FROM dataset_versions WHERE name=?", (name,)).fetchone()[0] or 0) + 1
        con.execute(f"INSERT INTO dataset_versions ({','.join(VERSION_COLS)}) VALUES (?,?,?,?,?,?,?,?,?)",
                    (name, v, digest, datetime.now(timezone.utc).isoformat(timespec="seconds"), description,
                     data_dir, json.dumps(meta), json.dumps(quality), 0))
        con.executemany(f"INSERT INTO dataset_files VALUES (?,?,{','.join('?' * len(FILE_COLS))})",
                        [(name, v, *(e.get(c) for c in FILE_COLS)) for e in manifest])
    return v, True


def set_mirrored(st, name: str, version: int, mirrored: bool) -> None:
    with st.transaction() as con:
        con.execute("UPDATE dataset_versions SET mirrored=? WHERE name=? AND version=?", (int(mirrored), name, version))


def set_description(st, name: str, version: int, description: str) -> bool:
    """Replace a version's description; True when it changed."""
    with st.transaction() as con:
        cur = con.execute("UPDATE dataset_versions SET description=? WHERE name=? AND version=? "
                          "AND description IS NOT ?", (description, name, version, description))
        return cur.rowcount > 0


def is_mirrored(con, name: str, version: int) -> bool:
    row = con.execute("SELECT * FROM dataset_versions WHERE name=? AND version=?", (name, version)).fetchone()
    return bool(row and "mirrored" in row.keys() and row["mirrored"])


def pending_mirrors(st, name: str | None = None) -> list[tuple[str, int]]:
    """(name, version) of every version not yet mirrored to W&B, oldest first."""
    with st.read() as con:
        cols = {r["name"] for r in con.execute("PRAGMA table_info(dataset_versions)")}
        cond = "AND (mirrored IS NULL OR mirrored = 0)" if "mirrored" in cols else ""
        return [(r["name"], r["version"]) for r in con.execute(
            f"SELECT name, version FROM dataset_versions WHERE (? IS NULL OR name=?) {cond} ORDER BY name, version",
            (name, name))]


def _manifest(con, name: str, v: int) -> list[dict]:
    rows = con.execute(f"SELECT {','.join(FILE_COLS)} FROM dataset_files WHERE name=? AND version=? "
                       "ORDER BY path", (name, v))
    return [{k: r[k] for k in FILE_COLS} for r in rows]


def list_versions(name: str | None = None, store=None) -> list[dict]:
    """Every version (of ``name``, or of all datasets), oldest first."""
    if name is not None:
        from src.core.store import validate_name

        validate_name(name, "artifact name")
    st = open_store(store)
    with st.read() as con:
        rows = con.execute("SELECT * FROM dataset_versions WHERE ? IS NULL OR name=? ORDER BY name, version",
                           (name, name)).fetchall()
    out = []
    for r in rows:
        meta = json.loads(r["metadata"])
        out.append({"name": r["name"], "version": f"v{r['version']}", "digest": r["digest"],
                    "created_at": r["created_at"], "description": r["description"],
                    "total_samples": meta["total_samples"], "num_classes": meta["num_classes"],
                    "quality_issues": json.loads(r["quality"])["issue_count"],
                    "mirrored": bool(r["mirrored"]) if "mirrored" in r.keys() else False})
    return out


def load_dataset_artifact(name: str = DEFAULT_NAME, version: str = "latest", store=None) -> dict:
    """Metadata, manifest, quality report and version history of ``name:version``, offline."""
    from src.core.store import validate_name

    validate_name(name, "artifact name")
    st = open_store(store)
    with st.read() as con:
        v = _resolve(con, name, version)
        r = con.execute("SELECT * FROM dataset_versions WHERE name=? AND version=?", (name, v)).fetchone()
        manifest = _manifest(con, name, v)
    return {"name": name, "version": f"v{v}", "digest": r["digest"], "created_at": r["created_at"],
            "description": r["description"], "data_dir": r["data_dir"], "metadata": json.loads(r["metadata"]),
            "quality": json.loads(r["quality"]), "manifest": manifest, "history": list_versions(name, st)}


def diff_versions(name: str, a: str, b: str, store=None) -> dict:
    """Added, removed, modified (same path, new bytes), labeled (a pool image moved under a class,
    same bytes), relabeled (same bytes, other class) and moved (same bytes and class, other path)
    files, plus per-class count changes (the pool counted as ``(unlabeled)``)."""
    from src.data.scan import POOL

    va, vb = load_dataset_artifact(name, a, store), load_dataset_artifact(name, b, store)
    A = {e["path"]: e for e in va["manifest"]}
    B = {e["path"]: e for e in vb["manifest"]}
    added = sorted(set(B) - set(A))
    removed = sorted(set(A) - set(B))
    modified = sorted(p for p in set(A) & set(B) if A[p]["sha256"] != B[p]["sha256"])
    labeled, relabeled, moved = [], [], []
    gone: dict[str, list[str]] = {}
    for p in removed:
        gone.setdefault(A[p]["sha256"], []).append(p)
    for p in list(added):
        cands = gone.get(B[p]["sha256"])
        if cands:
            src = next((c for c in cands if A[c]["class"] != B[p]["class"]), cands[0])
            cands.remove(src)
            added.remove(p)
            removed.remove(src)
            rec = {"from": src, "to": p, "from_class": A[src]["class"], "to_class": B[p]["class"]}
            if A[src]["split"] == POOL and B[p]["split"] != POOL:
                labeled.append({**rec, "source": B[p].get("source")})
            else:
                (relabeled if rec["from_class"] != rec["to_class"] else moved).append(rec)
    classes: dict[str, dict[str, int]] = {}
    for side, m in (("a", A), ("b", B)):
        for e in m.values():
            if e.get("error"):  # the same usable images --show and the metadata count
                continue
            c = classes.setdefault(e["class"] if e["split"] != POOL else f"({POOL})", {"a": 0, "b": 0})
            c[side] += 1
    changes = {c: {**n, "delta": n["b"] - n["a"]} for c, n in sorted(classes.items()) if n["a"] != n["b"]}
    return {"name": name, "a": va["version"], "b": vb["version"], "added": added, "removed": removed,
            "modified": modified, "labeled": labeled, "relabeled": relabeled, "moved": moved,
            "class_changes": changes,
            "counts": {"added": len(added), "removed": len(removed), "modified": len(modified),
                       "labeled": len(labeled), "relabeled": len(relabeled), "moved": len(moved)}}


def restore_version(name: str, version: str, to_dir: str | os.PathLike, store=None) -> dict:
    """Rebuild the exact tree of ``name:version`` in ``to_dir`` (new or empty), verifying bytes."""
    import shutil

    from src.core.paths import clean_pid_siblings, contained_path
    from src.core.store import sha256_file

    info = load_dataset_artifact(name, version, store)
    st = open_store(store)
    dest = Path(to_dir).expanduser()
    for e in info["manifest"]:  # every stored path, before anything is written
        contained_path(dest, e["path"], what=f"stored path of {name}:{info['version']}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DataError(f"restore target {dest} exists and is not an empty folder",
                        hint="pass `to_dir=DIR`, a new or empty folder; nothing is overwritten", params=("to_dir",))
    # Everything goes into a hidden sibling first and is moved into place at the end, so a
    # failed or interrupted restore never leaves a tree that looks complete.
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        clean_pid_siblings(dest, ".partial-")
        partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
    except OSError as e:
        raise DataError(f"cannot write restore target {dest}: {e.strerror}",
                        hint="pass `to_dir=DIR`, a new folder in a writable location", params=("to_dir",)) from e
    total = 0
    try:
        for e in info["manifest"]:
            src = st.blob_path(e["sha256"])
            if not src.exists():
                raise StoreError(f"blob {e['sha256'][:12]} of {e['path']} is missing from the store",
                                 hint="the store was edited by hand; restore it from a backup")
            out = contained_path(partial, e["path"], what=f"stored path of {name}:{info['version']}")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out)
            if sha256_file(out) != e["sha256"]:
                raise StoreError(f"blob {e['sha256'][:12]} of {e['path']} is corrupted (digest mismatch)",
                                 hint="a hard-linked source file was edited in place; re-create the version")
            total += e["size"]
        if dest.exists():  # an empty folder the caller made: move the entries in
            for child in partial.iterdir():
                os.replace(child, dest / child.name)
            partial.rmdir()
        else:
            os.replace(partial, dest)
    except OSError as e:
        raise DataError(f"cannot write restore target {dest}: {e.strerror}",
                        hint="check free space and permissions; nothing was left behind") from e
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return {"name": name, "version": info["version"], "to": str(dest), "files": len(info["manifest"]),
            "bytes": total, "digest": info["digest"]}


# -- what gc and du ask the dataset versions (src.core.ownership) ----------------------------
def _referenced_blobs(con, _pruned: frozenset[str]):
    """Every file of every version: dataset versions are never collected."""
    if has_table(con, "dataset_files"):
        yield from ((d, "dataset file") for (d,) in con.execute("SELECT DISTINCT sha256 FROM dataset_files"))


OWNER = Owner("data.version_store", tables=("dataset_versions", "dataset_files"),
              digests={"dataset_files.sha256": BLOB, "dataset_versions.digest": MENTION,
                       "dataset_versions.metadata": MENTION, "dataset_versions.quality": MENTION},
              blob_kinds=("dataset file",), blobs=_referenced_blobs)
