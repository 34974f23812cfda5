"""Building a dataset version from a folder: scan, quality report, content-addressed blobs, W&B mirror.

A version is an immutable, content-addressed manifest (per file: path, split, class,
sha256, size, dimensions, mode) of an ImageFolder dataset; the bytes live once in the
store's blobs whatever the number of versions. The same content never makes a second
version; ``find_or_create_version`` is what training calls to pin its input data. Reading
versions back (list, show, diff, restore) and their tables are :mod:`src.data.version_store`.

A failed version (full disk, unreadable file, interrupt) removes the blobs it wrote; a
version whose W&B mirror failed stays ``mirrored = 0`` and is mirrored again by the next
run on the same content, or by ``mirror_pending`` (``--mirror-pending``). A mirror first hashes
every stored blob it hands to W&B; one that fails its digest check stops it (nothing logged, still pending).
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.core.errors import ConfigError, DataError, TrackingError
from src.data.scan import dataset_digest
from src.data.version_store import (DEFAULT_NAME, insert_version, is_mirrored, load_dataset_artifact, lookup_digest,
                                    open_store, parse_version, pending_mirrors, set_description, set_mirrored)

log = logging.getLogger(__name__)
DEFAULT_SAMPLES_PER_CLASS = 4


def build_metadata(manifest: list[dict]) -> dict[str, Any]:
    """Counts a user looks at first: samples, classes, splits, imbalance (the pool is no class)."""
    from src.data.quality import imbalance_ratio
    from src.data.scan import POOL

    valid = [e for e in manifest if not e.get("error")]
    classes = Counter(e["class"] for e in valid if e["split"] != POOL)
    split_class: dict[str, dict[str, int]] = {}
    for e in valid:
        d = split_class.setdefault(e["split"], {})
        d[e["class"]] = d.get(e["class"], 0) + 1
    return {
        "total_samples": len(valid),
        "total_files": len(manifest),
        "invalid_files": len(manifest) - len(valid),
        "total_bytes": sum(e["size"] for e in manifest),
        "num_classes": len(classes),
        "classes": sorted(classes),
        "class_distribution": dict(sorted(classes.items())),
        "split_counts": {s: sum(c.values()) for s, c in sorted(split_class.items())},
        "split_class_counts": {s: dict(sorted(c.items())) for s, c in sorted(split_class.items())},
        "imbalance_ratio": imbalance_ratio(classes),
        "pool_samples": sum(1 for e in valid if e["split"] == POOL),
    }


# -- create --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Committed:
    """A version just written to the store, with what its W&B mirror needs."""
    name: str
    version: int
    root: Path
    manifest: list[dict]
    meta: dict
    quality: dict
    description: str | None
    samples_per_class: int
    store: Any


def _mirror(tracker, v: _Committed, tables: bool = True, content: tuple | None = None) -> None:
    """Log the version as a W&B ``dataset`` artifact plus sample and statistics tables.

    ``tables=False`` (a caller's run, e.g. training) logs only the artifact, so the
    caller's step counter is left alone. ``content`` is :func:`_artifact_content` already made
    (its blobs already checked against their digests).
    """
    if not getattr(tracker, "enabled", True):  # W&B disabled: nothing to stage
        return
    manifest, meta, quality, st = v.manifest, v.meta, v.quality, v.store
    blobs, metadata = content or _artifact_content(v)
    # W&B numbers versions itself (from v0, none for identical content) and reads a `vN` alias as its own
    # version index, so the local number is metadata (`local_version`) and the alias `local-vN`, which lets a
    # synced run declare this version as its input (src.tracking.journal).
    from src.tracking.journal import local_alias

    tracker.log_artifact(v.name, "dataset", immutable_files=blobs, metadata=metadata,
                         aliases=["latest", local_alias(v.version)], description=v.description)
    if not tables:
        return
    rows, seen = [], {}
    for e in manifest:
        key = (e["split"], e["class"])
        if not e.get("error") and seen.get(key, 0) < v.samples_per_class and st.has_blob(e["sha256"]):
            seen[key] = seen.get(key, 0) + 1  # the stored bytes, never the dataset folder as it is now
            rows.append([e["split"], e["class"], e["path"], _image(st.blob_path(e["sha256"]))])
    if rows:
        tracker.image_table("dataset/samples", ["split", "class", "path", "image"], rows, image_col=3)
    stats = [[s, c, n] for s, cc in meta["split_class_counts"].items() for c, n in cc.items()]
    tracker.table("dataset/statistics", ["split", "class", "count"], stats)
    tracker.summary({f"dataset/{k}": v for k, v in meta.items() if isinstance(v, (int, float, str))}
                    | {"dataset/quality_issues": quality["issue_count"]})


def _artifact_content(v: _Committed) -> tuple[dict[str, Path], dict[str, Any]]:
    """The files and metadata of the W&B ``dataset`` artifact of ``v``; the same bytes every time, so
    W&B gives every log of one version the same digest."""
    st = v.store
    # Everything is handed to W&B as the store's read-only blobs, referenced in place: a
    # temporary copy deleted right after log_artifact lost the artifact about half the time
    # (W&B stages files in the background), and `wandb sync` needs the files later anyway.
    files = {"manifest.json": st.put_bytes(_canonical(sorted(v.manifest, key=lambda e: e["path"]))),
             "quality.json": st.put_bytes(_canonical(v.quality))}
    st.pin(files.values(), f"dataset {v.name}:v{v.version} W&B mirror")  # no table names them: keep them from gc
    blobs = {arcname: st.blob_path(d) for arcname, d in files.items()}
    digests = dict(files) | {f"data/{e['path']}": e["sha256"] for e in v.manifest if st.has_blob(e["sha256"])}
    _check_blobs(st, f"{v.name}:v{v.version}", digests)
    blobs |= {arcname: st.blob_path(d) for arcname, d in digests.items() if arcname.startswith("data/")}
    return blobs, {**v.meta, "local_version": f"v{v.version}"}


def _check_blobs(st, ref: str, digests: dict[str, str]) -> None:
    """Every stored blob handed to W&B must still hash to its digest (each distinct blob hashed once)."""
    from src.core.errors import StoreError
    from src.core.store import sha256_file

    checked: set[str] = set()
    for arcname, digest in sorted(digests.items()):
        if digest in checked:
            continue
        try:
            actual = sha256_file(st.blob_path(digest))
        except OSError as e:
            actual = f"unreadable ({e.strerror or e})"
        if actual != digest:
            raise StoreError(f"{ref} was not mirrored to W&B: its stored {arcname} fails its digest check "
                             f"(expected {digest[:12]}, found {actual[:12]})",
                             hint="the store was damaged or tampered with; the version stays pending "
                                  "(restore the blob or re-create the version from a good copy)")
        checked.add(digest)


def _canonical(obj: Any) -> bytes:
    """One byte form whatever the order a manifest was scanned or read back in (tuples as lists)."""
    return json.dumps(json.loads(json.dumps(obj)), sort_keys=True).encode()


def dataset_artifact(name: str, version: str, store=None) -> dict[str, Any]:
    """A stored version as its W&B ``dataset`` artifact: ``{"name", "files", "metadata"}``.

    A run that *uses* the version online hands these to W&B, which finds its version by content
    (local version numbers are not W&B's).
    """
    st = open_store(store)
    v = _committed(st, name, parse_version(version))
    files, metadata = _artifact_content(v)
    return {"name": name, "files": files, "metadata": metadata}


def _image(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        return im.copy()


def _mirror_or_explain(tracker, v: _Committed, wandb_mode: str | None, result: dict) -> None:
    """Mirror a committed version to W&B (the caller's run, or a run of our own) and record it.

    Only a mirror that happened (W&B not disabled) marks the version mirrored; a failure
    leaves it pending for the next run and is one line, as does a stored blob that fails its digest check.
    """
    from src.tracking import Tracker, resolve_mode

    own = tracker is None
    wanted = tracker.enabled if not own else resolve_mode(wandb_mode) != "disabled"
    content = _artifact_content(v) if wanted else None  # checked before any run opens: a bad blob logs nothing
    try:
        tr = tracker
        if own:
            config = {"artifact_name": v.name, "data_dir": str(v.root), "version": f"v{v.version}"}
            tr = Tracker("dataset-version", config, mode=wandb_mode, name=f"{v.name}-v{v.version}")
        enabled = bool(tr.enabled)
        try:
            _mirror(tr, v, tables=own, content=content)
            result["run_dir"] = tr.run_dir
        finally:
            if own:
                tr.finish()
    except (TrackingError, OSError) as e:
        why = e.args[0] if isinstance(e, TrackingError) else f"{e.strerror or e}"
        raise TrackingError(f"{v.name}:v{v.version} is stored locally, but mirroring it to W&B failed: {why}",
                            hint="it is mirrored again on the next run, or with `mirror_pending`; or run with "
                                 "`wandb_mode=offline` and `wandb sync` later", params=("mirror_pending", "wandb_mode")) from e
    if enabled:
        set_mirrored(v.store, v.name, v.version, True)
    result["mirrored"] = enabled


def _committed(st, name: str, version: int, samples_per_class: int = DEFAULT_SAMPLES_PER_CLASS) -> _Committed:
    """A stored version, as its W&B mirror needs it."""
    info = load_dataset_artifact(name, f"v{version}", st)
    return _Committed(name, version, Path(info["data_dir"] or "."), info["manifest"], info["metadata"],
                      info["quality"], info["description"], samples_per_class, st)


def mirror_pending(artifact_name: str | None = None, store=None, wandb_mode: str | None = None) -> list[str]:
    """Mirror every version whose W&B mirror failed or never ran; returns the refs mirrored."""
    from src.tracking import resolve_mode

    mode = resolve_mode(wandb_mode)
    if mode == "disabled":
        raise ConfigError("`mirror_pending` needs W&B: the mode is 'disabled'",
                          hint="pass `wandb_mode=offline` (then `wandb sync`) or online",
                          params=("mirror_pending", "wandb_mode"))
    st = open_store(store)
    done = []
    for name, version in pending_mirrors(st, artifact_name):
        _mirror_or_explain(None, _committed(st, name, version), mode, {})
        done.append(f"{name}:v{version}")
    return done


def _stored_blobs(st, root: Path, manifest: list[dict], link: bool) -> list[str]:
    """Put every new file's bytes into the store; on any failure remove the blobs put here."""
    from src.core.paths import is_inside
    from src.core.store import write_error

    real_root, new = Path(os.path.realpath(root)), []
    try:
        for sha, e in {e["sha256"]: e for e in manifest}.items():
            if st.has_blob(sha):
                continue
            src = root / e["path"]
            if not is_inside(real_root, src):  # it became a link to elsewhere after the scan
                raise DataError(f"{src} now leads outside {root}", hint="re-run; links to outside files are left out")
            try:
                st.put_file(src, sha, link=link)
            except OSError as err:
                if src.is_file() and os.access(src, os.R_OK):  # the source is fine: writing the store failed
                    raise write_error(err, st.root) from err
                raise DataError(f"{src}: disappeared or became unreadable while versioning ({err.strerror})",
                                hint="re-run when the dataset is not being modified") from err
            new.append(sha)
    except BaseException:
        discard_blobs(st, new)
        raise
    return new


def discard_blobs(st, digests: list[str]) -> None:
    """Remove a failed operation's new blobs that no dataset version references (under the write lock)."""
    if not digests:
        return

    def drop(con) -> int:
        used: set[str] = set()
        for i in range(0, len(digests), 500):
            chunk = digests[i:i + 500]
            used |= {r[0] for r in con.execute(
                f"SELECT DISTINCT sha256 FROM dataset_files WHERE sha256 IN ({','.join('?' * len(chunk))})", chunk)}
        return st.remove_blobs([d for d in digests if d not in used])

    try:
        with st.transaction() as con:
            n = drop(con)
    except Exception:  # the database cannot be locked (full disk): check without the lock
        with st.read() as con:
            n = drop(con)
    log.debug("removed %d blob(s) of a failed version", n)


def assign_sources(st, name: str, manifest: list[dict], sources: dict[str, str] | None = None) -> None:
    """Give each labeled file its label source: ``sources[path]`` (a labeling just done), else the
    previous version's for the same path and bytes (carried forward while the file is unchanged),
    else ``human``; pool files have none."""
    from src.data.scan import POOL

    sources = sources or {}
    with st.read() as con:
        prev = {r["path"]: (r["sha256"], r["source"]) for r in con.execute(
            "SELECT path, sha256, source FROM dataset_files WHERE name=? AND version="
            "(SELECT MAX(version) FROM dataset_versions WHERE name=?)", (name, name))}
    for e in manifest:
        if e["split"] == POOL:
            e["source"] = None
        elif e["path"] in sources:
            e["source"] = sources[e["path"]]
        else:
            sha, src = prev.get(e["path"], (None, None))
            e["source"] = src if sha == e["sha256"] and src else "human"


def _create(data_dir, name: str, version, description, samples_per_class: int, store, wandb_mode,
            tracker, link: bool, scan: dict | None = None, sources: dict[str, str] | None = None,
            progress: bool = True) -> dict:
    from src.data.scan import scan_dataset
    from src.data.quality import analyze
    from src.core.store import validate_name

    validate_name(name, "artifact name")
    want = parse_version(version) if version not in (None, "") else None
    if samples_per_class < 0:
        raise ConfigError(f"`samples_per_class` must be >= 0, got {samples_per_class}", params=("samples_per_class",))
    if tracker is None:
        from src.tracking import resolve_mode

        wandb_mode = resolve_mode(wandb_mode)  # a bad mode fails before anything is stored
    st = open_store(store)
    st.require_writable()  # before the scan: a read-only store cannot take a version
    scan = scan if scan is not None else scan_dataset(data_dir, st, progress=progress)
    manifest, root = scan["manifest"], Path(scan["root"])
    digest = dataset_digest(manifest)
    result = {"name": name, "digest": digest, "scan": scan["stats"]}
    with st.read() as con:
        same = lookup_digest(con, name, digest)
    if same is None:
        meta = build_metadata(manifest) | {"digest": digest, "data_dir": str(root)}
        if not meta["total_samples"]:
            raise DataError(f"{root} has no usable images ({len(manifest)} unreadable or non-image files)",
                            hint="run `quality_check` to see what is wrong with them", params=("quality_check",))
        quality = analyze(manifest, scan["notes"])
        assign_sources(st, name, manifest, sources)
        meta["label_sources"] = dict(Counter(e["source"] for e in manifest if e["source"]))
        new = _stored_blobs(st, root, manifest, link)
        result["new_blobs"] = stored = len(new)
        try:
            same, created = insert_version(st, name, want, digest, manifest, meta, quality, description, str(root))
        except BaseException:
            discard_blobs(st, new)
            raise
        if created:
            log.debug("created %s:v%d (%d files, %d new blobs)", name, same, len(manifest), stored)
            committed = _Committed(name, same, root, manifest, meta, quality, description, samples_per_class, st)
            _mirror_or_explain(tracker, committed, wandb_mode, result)
            return result | {"version": f"v{same}", "created": True, "quality": quality, "metadata": meta}
    if want is not None and want != same:
        log.warning("content equals %s:v%d; v%d not created", name, same, want)
    if description is not None:  # a new description for the same content replaces the old one
        result["description_updated"] = set_description(st, name, same, description)
    with st.read() as con:  # the same content keeps its verdict: --fail-on-issues must not flip
        row = con.execute("SELECT quality FROM dataset_versions WHERE name=? AND version=?", (name, same)).fetchone()
        pending = not is_mirrored(con, name, same)
    wanted = tracker.enabled if tracker is not None else wandb_mode != "disabled"
    if pending and wanted and st.writable:  # its mirror failed (or W&B was off) last time: try again
        _mirror_or_explain(tracker, _committed(st, name, same, samples_per_class), wandb_mode, result)
    return result | {"version": f"v{same}", "created": False, "equals": f"v{same}",
                     "quality": json.loads(row["quality"]) if row else None}


def create_dataset_artifact(data_dir: str | os.PathLike, artifact_name: str = DEFAULT_NAME,
                            version: str | None = None, description: str | None = None,
                            samples_per_class: int = DEFAULT_SAMPLES_PER_CLASS, store=None,
                            wandb_mode: str | None = None, link: bool = False,
                            sources: dict[str, str] | None = None, progress: bool = True) -> dict:
    """Version ``data_dir`` (or find the version with the same content).

    Returns ``{"name", "version", "digest", "created", ...}``; a new version also carries
    ``metadata`` and its ``quality`` report. ``version`` (``vN``) must be new unless the
    content is the same. Bytes are copied into the store once per distinct content;
    ``link=True`` hard-links instead (no extra space, but the dataset files become
    read-only and editing one in place as root would corrupt the stored version).
    ``sources`` maps relative paths to ``human``/``pseudo`` for files just labeled (the others carry
    the previous version's source forward while unchanged; see :func:`assign_sources`).
    ``progress=False`` draws no bar while hashing.
    """
    return _create(data_dir, artifact_name, version, description, samples_per_class, store, wandb_mode,
                   None, link, sources=sources, progress=progress)


def find_or_create_version(data_dir: str | os.PathLike, artifact_name: str = DEFAULT_NAME, store=None,
                           tracker=None, scan: dict | None = None, wandb_mode: str | None = None,
                           progress: bool = True) -> dict:
    """The version whose content digest matches ``data_dir``, created if none; for lineage.

    ``scan`` is a manifest the caller already made of ``data_dir`` (training's), so nothing is scanned twice.
    A new version is mirrored by ``tracker`` when given, else by a ``dataset-version`` run of its own in
    ``wandb_mode`` (training does that: its run *uses* the dataset, it does not produce it).
    """
    r = _create(data_dir, artifact_name, None, None, DEFAULT_SAMPLES_PER_CLASS, store, wandb_mode, tracker, False,
                scan, progress=progress)
    return {k: r[k] for k in ("name", "version", "digest", "created")}


def quality_check(data_dir: str | os.PathLike, store=None, progress: bool = True) -> dict:
    """Quality report of ``data_dir`` without creating a version (see :mod:`src.data.quality`)."""
    from src.data.quality import quality_check as _qc

    return _qc(data_dir, store=open_store(store), progress=progress)
