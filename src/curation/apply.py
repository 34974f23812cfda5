"""Labels back into the dataset: each listed pool image moves to ``train/<label>/``.

The whole CSV is checked before anything moves (unknown or outside-the-pool paths, a path
listed twice, files that are not decodable images, class names against the one rule of
:mod:`src.core.names` — a label is NFC-normalised first —, unknown classes without
``--new-classes``, symlinks leading out of the data dir, malformed rows, confidences
outside [0, 1]), and so is everything the dataset version at the end needs (the data dir
is scanned as the version will scan it; the dataset name, the W&B mode, a writable store),
so a bad file moves nothing and a version never fails after the moves. Each move is one
``os.rename`` inside the data dir, which is atomic: an image is at its old path or its new
one, never both or neither, and never over an existing name (a dangling link included).

Applies on one data dir run one at a time, under a lock; a journal makes a killed apply
complete on the next run, and a log of applied moves lets a rerun of the same CSV end
cleanly (see :mod:`src.curation.journal`). The result is a new dataset version, under the
same default name as training and ``data_versioning.py`` use (the data folder's), whose
description says how many images were labeled, with each moved file's label source
(``human`` or ``pseudo``) in its manifest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

from src.core.errors import ConfigError, DataError
from src.core.names import class_name_problem, normalize_class_name
from src.core.paths import is_inside
from src.core.store import Store, sha256_file, validate_name
from src.curation.journal import (LOCK_TIMEOUT, applied_moves, apply_lock, journal_path, read_journal,
                                  record_applied, write_journal)
from src.curation.labels_csv import check_min_confidence, read_labels
from src.curation.paths import class_dir_problem, data_root, pool_path_problem
from src.data.scan import probe_bytes, scan_dataset
from src.data.version_store import SOURCES, default_dataset_name

log = logging.getLogger(__name__)
NAME_MAX = 255  # bytes in one file name on the file systems we run on


def _known_classes(root: Path) -> set[str]:
    return {p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith(".")}


def _dest_name(root: Path, label: str, src: Path, sha: str, taken: set[str]) -> str:
    """``train/<label>/<name>``, with a short digest suffix when the name is taken (a dangling link too)."""
    name, n = src.name, 8
    while os.path.lexists(root / "train" / label / name) or f"{label}/{name}" in taken:
        if n > 64:
            raise DataError(f"cannot find a free name for {src.name} in train/{label}", hint="rename the file")
        tail = f"_{sha[:n]}{src.suffix}"
        room = max(0, NAME_MAX - len(tail.encode()))
        name = src.stem.encode()[:room].decode("utf-8", "ignore") + tail  # stays under NAME_MAX
        n += 8
    taken.add(f"{label}/{name}")
    return name


def _already_applied(root: Path, m: dict | None) -> bool:
    """Whether an earlier apply's move ``m`` still stands: its image at its destination, unchanged."""
    if not m:
        return False
    dst = root / m["to"]
    return dst.is_file() and not dst.is_symlink() and sha256_file(dst) == m["sha256"]


def _class_problem(root: Path, label: str, classes: set[str], new_classes: bool) -> str | None:
    problem = class_name_problem(label) or class_dir_problem(root, label)
    if not problem and label not in classes and not new_classes:
        problem = f"unknown class {label!r} (known: {', '.join(sorted(classes))}; --new-classes creates it)"
    return problem


def _read(root: Path, rel: str) -> tuple[bytes, str | None]:
    try:
        return (root / rel).read_bytes(), None
    except OSError as e:
        return b"", f"cannot read {rel!r} ({e.strerror})"


def _image_problem(rel: str, data: bytes) -> str | None:
    probe = probe_bytes(data, rel)
    if probe["error"]:
        return f"{rel!r} is not an image that decodes ({probe['error_detail']}); only images can be labeled"
    return None


def plan_moves(root: Path, labels_csv: str | os.PathLike, new_classes: bool = False,
               min_confidence: float | None = None, source: str | None = None,
               applied: dict[str, dict] | None = None) -> dict[str, Any]:
    """Validate the whole CSV against the data dir; the moves it asks for (nothing moved).

    ``applied`` (pool path → an earlier apply's move) turns a row whose image an earlier apply
    already moved to the same class into an ``already_applied`` entry instead of an error.
    """
    lf = read_labels(labels_csv, min_confidence)
    source = source or ("pseudo" if "algorithm" in lf.columns else "human")
    if source not in SOURCES:
        raise ConfigError(f"unknown label source {source!r}", hint=f"use one of {', '.join(SOURCES)}")
    classes, applied = _known_classes(root), applied or {}
    seen: dict[str, int] = {}
    new: set[str] = set()
    taken: set[str] = set()
    moves, renamed, already = [], [], []
    where = Path(labels_csv)
    for r in lf.rows:
        rel, label = PurePosixPath(r.path).as_posix(), normalize_class_name(r.label)
        if rel in seen:
            problem = f"{rel} is listed twice (first on line {seen[rel]})"
        elif (problem := pool_path_problem(root, rel)) and not os.path.lexists(root / rel) \
                and _already_applied(root, applied.get(rel)):
            earlier = applied[rel]
            if earlier["label"] == label:
                seen[rel] = r.line
                already.append({"path": rel, "to": earlier["to"], "label": label, "line": r.line})
                continue
            problem = (f"{rel} was already labeled {earlier['label']!r} by an earlier apply (it is {earlier['to']} "
                       f"now); to relabel it, move that file to train/{label}/ yourself")
        problem = problem or _class_problem(root, label, classes, new_classes)
        data, problem = (b"", problem) if problem else _read(root, rel)
        problem = problem or _image_problem(rel, data)
        if problem:
            raise DataError(f"{where} line {r.line}: {problem}", hint="fix the CSV; nothing was moved")
        if label not in classes:
            new.add(label)
        seen[rel] = r.line
        src, sha = root / rel, hashlib.sha256(data).hexdigest()
        name = _dest_name(root, label, src, sha, taken)
        dst = f"train/{label}/{name}"
        if name != src.name:
            renamed.append({"path": rel, "to": dst})
        moves.append({"path": rel, "to": dst, "label": label, "sha256": sha, "line": r.line})
    return {"source": source, "moves": moves, "renamed": renamed, "new_classes": sorted(new),
            "already_applied": already, "skipped_blank": lf.skipped_blank,
            "skipped_low_confidence": lf.skipped_confidence, "skipped_not_accepted": lf.skipped_not_accepted}


def _move(root: Path, m: dict) -> str | None:
    """One atomic rename; None when the image is at its destination (now, or before a crash), else why
    it stays where it is. Never overwrites."""
    src, dst = root / m["path"], root / m["to"]
    if not os.path.lexists(src):
        return None if _already_applied(root, m) else f"{m['path']} is gone, and not at {m['to']} either"
    if os.path.lexists(dst):
        return f"{m['to']} was taken meanwhile"
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if not is_inside(root, dst.parent):
            return f"{dst.parent} leaves the data dir"
        os.rename(src, dst)
    except OSError as e:
        raise DataError(f"cannot move {m['path']} to {m['to']} ({e.strerror})",
                        hint="fix that and apply again: the next apply completes this one first") from e
    return None


def _run_journal(root: Path, store: Store, journal: Path, payload: dict, wandb_mode: str | None) -> dict:
    from src.data.version_builder import create_dataset_artifact

    done, left = [], []
    for m in payload["moves"]:
        why = _move(root, m)
        if why:
            log.warning("left %s where it is: %s", m["path"], why)
            left.append({"path": m["path"], "to": m["to"], "why": why})
        else:
            done.append(m)
    n = len(done)
    desc = (f"labeling: {n} image{'s' * (n != 1)} labeled from the pool ({payload['source']} labels, "
            f"{Path(payload['labels']).name})")
    version = create_dataset_artifact(root, payload["artifact_name"], description=desc, store=store,
                                      wandb_mode=wandb_mode, sources={m["to"]: payload["source"] for m in done})
    record_applied(store, root, done)
    journal.unlink(missing_ok=True)
    return {"moves": done, "labeled": n, "left": left, "version": f"{version['name']}:{version['version']}",
            "created": version["created"], "description": desc}


def resume_interrupted(root: Path, store: Store, artifact_name: str | None = None,
                       wandb_mode: str | None = None) -> dict | None:
    """Complete an ``apply`` that was killed before it finished (None when there is none); call it under
    :func:`~src.curation.journal.apply_lock`."""
    journal = journal_path(store, root)
    if not journal.exists():
        return None
    payload = read_journal(journal)
    payload["artifact_name"] = payload.get("artifact_name") or artifact_name or default_dataset_name(root)
    log.warning("completing an interrupted apply of %d image(s) from %s", len(payload["moves"]), payload["labels"])
    r = _run_journal(root, store, journal, payload, wandb_mode)
    return {"moves": r["labeled"], "version": r["version"], "created": r["created"], "left": r["left"],
            "description": r["description"]}


def _preflight(name: str, store: Store, wandb_mode: str | None) -> None:
    """What the version at the end needs, checked before anything moves."""
    from src.tracking import resolve_mode

    validate_name(name, "artifact name")
    resolve_mode(wandb_mode)
    store.require_writable()


def apply_labels(data_dir: str | os.PathLike, labels: str | os.PathLike, *, dry_run: bool = False,
                 new_classes: bool = False, min_confidence: float | None = None, source: str | None = None,
                 store=None, artifact_name: str | None = None, wandb_mode: str | None = None,
                 lock_timeout: float = LOCK_TIMEOUT) -> dict[str, Any]:
    """Move each listed pool image to ``train/<label>/`` and record a dataset version (see module doc).

    ``artifact_name`` defaults to the data folder's name, as in training and ``data_versioning.py``.
    """
    check_min_confidence(min_confidence)
    root = data_root(data_dir)
    st = Store.of(store)
    name = artifact_name or default_dataset_name(root)
    if not dry_run:
        _preflight(name, st, wandb_mode)
    with apply_lock(root, lock_timeout):
        journal = journal_path(st, root)
        resumed = None if dry_run else resume_interrupted(root, st, name, wandb_mode)
        scan_dataset(root, st, progress=False)  # what the version at the end scans is refused now, not midway
        plan = plan_moves(root, labels, new_classes, min_confidence, source, applied_moves(st, root))
        out = {"data_dir": str(root), "labels": str(labels), "dry_run": dry_run, "labeled": len(plan["moves"]),
               **plan, "left": [], "resumed": resumed, "interrupted_apply_pending": dry_run and journal.exists()}
        if dry_run or not plan["moves"]:
            return out | {"version": None, "created": False}
        payload = {"labels": str(Path(labels).resolve()), "source": plan["source"], "artifact_name": name,
                   "moves": plan["moves"]}
        write_journal(journal, payload)
        return out | _run_journal(root, st, journal, payload, wandb_mode)
