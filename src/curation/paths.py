"""Paths inside a data dir: every write of the labeling loop stays inside it, symlinks included."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from src.core.errors import DataError
from src.core.paths import is_inside
from src.data.scan import POOL


def data_root(data_dir: str | os.PathLike) -> Path:
    """The resolved data dir, which must hold ``train/``."""
    root = Path(data_dir).expanduser()
    hint = "pass --data-dir DIR with train/ and unlabeled/"
    try:  # a name longer than the system allows raises instead of answering False
        if not root.is_dir():
            raise DataError(f"dataset folder {root} does not exist", hint=hint)
        root = root.resolve()
        if not (root / "train").is_dir():
            raise DataError(f"{root} has no 'train' folder", hint=f"expected {root}/train/<class_name>/<images>")
    except OSError as e:
        raise DataError(f"dataset folder {root}: {e.strerror}", hint=hint) from e
    return root


def pool_path_problem(root: Path, rel: str) -> str | None:
    """Why ``rel`` is not a movable pool image (None when it is)."""
    p = PurePosixPath(rel)
    if not rel or p.is_absolute() or "\\" in rel or any(part in ("..", ".") for part in p.parts) \
            or len(p.parts) < 2 or p.parts[0] != POOL:
        return f"path {rel!r} is outside the pool ({POOL}/), relative to the data dir"
    full = root / rel
    if not os.path.lexists(full):
        return f"unknown path {rel!r}: no such file in the pool"
    here = root
    for part in p.parts:
        here = here / part
        if here.is_symlink():
            return f"{here.relative_to(root).as_posix()} is a symlink; refusing to move through it"
    if not full.is_file():
        return f"{rel!r} is not a regular file"
    if not is_inside(root / POOL, full):
        return f"{rel!r} resolves outside the pool"
    return None


def class_dir_problem(root: Path, name: str) -> str | None:
    """A class folder that exists as a symlink or resolves outside the data dir would move images out."""
    d = root / "train" / name
    if d.is_symlink() or (root / "train").is_symlink() or (d.exists() and not is_inside(root, d)):
        return f"train/{name} is a symlink; refusing to move images into it"
    if d.exists() and not d.is_dir():
        return f"train/{name} is not a folder"
    return None
