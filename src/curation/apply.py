"""Labels back into the dataset: each listed pool image moves to ``train/<label>/``.

The whole CSV is checked before anything moves (unknown or outside-the-pool paths, a path
listed twice, unknown or invalid classes, symlinks leading out of the data dir, malformed
rows), so a bad file moves nothing. Each move is one ``os.rename`` inside the data dir,
which is atomic: an image is at its old path or its new one, never both or neither. A
journal of the planned moves is written to the store first; an ``apply`` that was killed
half-way is completed by the next ``apply`` before it reads its own CSV. The result is a
new dataset version whose description says how many images were labeled, with each moved
file's label source (``human`` or ``pseudo``) in its manifest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path, PurePosixPath
from typing import Any

from src.core.errors import ConfigError, DataError
from src.core.paths import is_inside, write_text_atomic
from src.core.store import Store, sha256_file
from src.curation.labels_csv import read_labels
from src.curation.paths import (
    class_dir_problem,
    class_name_problem,
    data_root,
    pool_path_problem,
)
from src.data.versions import DEFAULT_NAME, SOURCES

log = logging.getLogger(__name__)


def journal_path(store: Store, root: Path) -> Path:
    key = hashlib.sha256(str(root).encode()).hexdigest()[:16]
    return store.root / "labeling" / f"journal-{key}.json"


def _write_journal(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload), fsync=True)


def _known_classes(root: Path) -> set[str]:
    return {p.name for p in (root / "train").iterdir() if p.is_dir() and not p.name.startswith(".")}


def _dest_name(root: Path, label: str, src: Path, sha: str, taken: set[str]) -> str:
    """``train/<label>/<name>``, with a short digest suffix when the name is taken."""
    name = src.name
    n = 8
    while (root / "train" / label / name).exists() or f"{label}/{name}" in taken:
        name = f"{src.stem}_{sha[:n]}{src.suffix}"
        if n >= 64:
            raise DataError(f"cannot find a free name for {src.name} in train/{label}", hint="rename the file")
        n += 8
    taken.add(f"{label}/{name}")
    return name


def plan_moves(root: Path, labels_csv: str | os.PathLike, new_classes: bool = False,
               min_confidence: float | None = None, source: str | None = None) -> dict[str, Any]:
    """Validate the whole CSV against the data dir; the moves it asks for (nothing moved)."""
    lf = read_labels(labels_csv, min_confidence)
    source = source or ("pseudo" if "algorithm" in lf.columns else "human")
    if source not in SOURCES:
        raise ConfigError(f"unknown label source {source!r}", hint=f"use one of {', '.join(SOURCES)}")
    classes = _known_classes(root)
    seen: dict[str, int] = {}
    new: set[str] = set()
    taken: set[str] = set()
    moves, renamed = [], []
    where = Path(labels_csv)
    for r in lf.rows:
        rel = PurePosixPath(r.path).as_posix()
        problem = pool_path_problem(root, rel)
        if rel in seen:
            problem = f"{rel} is listed twice (first on line {seen[rel]})"
        problem = problem or class_name_problem(r.label) or class_dir_problem(root, r.label)
        if not problem and r.label not in classes:
            if not new_classes:
                problem = (f"unknown class {r.label!r} (known: {', '.join(sorted(classes))}; "
                           f"--new-classes creates it)")
            new.add(r.label)
        if problem:
            raise DataError(f"{where} line {r.line}: {problem}", hint="fix the CSV; nothing was moved")
        seen[rel] = r.line
        src = root / rel
        sha = sha256_file(src)
        name = _dest_name(root, r.label, src, sha, taken)
        dst = f"train/{r.label}/{name}"
        if name != src.name:
            renamed.append({"path": rel, "to": dst})
        moves.append({"path": rel, "to": dst, "label": r.label, "sha256": sha, "line": r.line})
    return {"source": source, "moves": moves, "renamed": renamed, "new_classes": sorted(new),
            "skipped_blank": lf.skipped_blank, "skipped_low_confidence": lf.skipped_confidence}


def _move(root: Path, m: dict) -> bool:
    """One atomic rename; True when done now or already, before a crash. Never overwrites."""
    src, dst = root / m["path"], root / m["to"]
    if not os.path.lexists(src):
        if dst.exists():
            return True  # moved before an interruption
        raise DataError(f"{m['path']} vanished during labeling (not at {m['to']} either)",
                        hint="restore it from the last dataset version (data_versioning.py --restore)")
    if os.path.lexists(dst):
        raise DataError(f"{m['to']} appeared while labeling; refusing to overwrite it", hint="re-run apply")
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not is_inside(root, dst.parent):
        raise DataError(f"{dst.parent} leaves the data dir", hint="remove the symlink")
    os.rename(src, dst)
    return True


def _run_journal(root: Path, store: Store, journal: Path, payload: dict, artifact_name: str,
                 wandb_mode: str | None) -> dict:
    from src.data.versioning import create_dataset_artifact

    for m in payload["moves"]:
        _move(root, m)
    n = len(payload["moves"])
    desc = (f"labeling: {n} image{'s' * (n != 1)} labeled from the pool ({payload['source']} labels, "
            f"{Path(payload['labels']).name})")
    sources = {m["to"]: payload["source"] for m in payload["moves"]}
    version = create_dataset_artifact(root, artifact_name, description=desc, store=store, wandb_mode=wandb_mode,
                                      sources=sources)
    journal.unlink(missing_ok=True)
    return {"version": f"{version['name']}:{version['version']}", "created": version["created"],
            "description": desc}


def resume_interrupted(root: Path, store: Store, artifact_name: str = DEFAULT_NAME,
                       wandb_mode: str | None = None) -> dict | None:
    """Complete an ``apply`` that was killed before it finished (None when there is none)."""
    journal = journal_path(store, root)
    if not journal.exists():
        return None
    payload = json.loads(journal.read_text())
    log.warning("completing an interrupted apply of %d image(s) from %s", len(payload["moves"]), payload["labels"])
    return {"moves": len(payload["moves"]), **_run_journal(root, store, journal, payload, artifact_name, wandb_mode)}


def apply_labels(data_dir: str | os.PathLike, labels: str | os.PathLike, *, dry_run: bool = False,
                 new_classes: bool = False, min_confidence: float | None = None, source: str | None = None,
                 store=None, artifact_name: str = DEFAULT_NAME, wandb_mode: str | None = None) -> dict[str, Any]:
    """Move each listed pool image to ``train/<label>/`` and record a dataset version (see module doc)."""
    root = data_root(data_dir)
    st = Store.of(store)
    journal = journal_path(st, root)
    resumed = None
    if journal.exists() and not dry_run:
        resumed = resume_interrupted(root, st, artifact_name, wandb_mode)
    plan = plan_moves(root, labels, new_classes, min_confidence, source)
    out = {"data_dir": str(root), "labels": str(labels), "dry_run": dry_run, "labeled": len(plan["moves"]),
           **plan, "resumed": resumed, "interrupted_apply_pending": dry_run and journal.exists()}
    if dry_run or not plan["moves"]:
        return out | {"version": None}
    payload = {"labels": str(Path(labels).resolve()), "source": plan["source"], "moves": plan["moves"]}
    _write_journal(journal, payload)
    return out | _run_journal(root, st, journal, payload, artifact_name, wandb_mode)
