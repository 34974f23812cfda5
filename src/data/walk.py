"""The dataset walk: every file below a class folder or the pool, and, by name, what could not be walked.

``os.walk`` recursed once per folder level (a folder nested 2,500 deep inside a class folder
raised ``RecursionError`` in the quality check and in training) and skipped what it could not
read without a word (an unreadable sub-folder vanished; an unreadable class folder looked empty;
a path longer than the system's limit dropped out). This walk keeps ``os.walk``'s top-down order
with sorted names but holds its folders on a list, and notes instead of skipping:

- ``unreadable:PATH``: a folder (or, while hashing, a file) this user may not read;
- ``too_deep:PATH``: a folder more than :data:`MAX_DEPTH` levels below its class folder or the pool;
- ``too_long:PATH``: a path longer than the system allows (``PC_PATH_MAX``, 4,096 bytes on Linux).

Notes are ``kind:path`` strings, paths relative to the dataset folder, like the scanner's
``outside_link:`` notes. :func:`walk_problem` turns one into the line a scan refuses with.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from src.core.errors import DataError

MAX_DEPTH = 100  # folders below a class folder or the pool; deeper ones are noted, never walked
# the kinds of note for what the walk could not read, and the line each gets when a scan refuses it
WALK_PROBLEMS = {
    "unreadable": ("cannot read {where}", "fix its permissions or move it out of the dataset folder"),
    "too_deep": ("{where} is more than " + str(MAX_DEPTH) + " folders below its class folder or unlabeled/",
                 "move its images up, or out of the dataset folder"),
    "too_long": ("{where} is a path longer than the system allows", "shorten its folder or file names"),
}


def shown(where: str, limit: int = 160) -> str:
    """A path for a one-line message: control characters escaped (a newline in a file name must not
    split a line), and a path of thousands of characters cut in the middle."""
    from src.core.cli import printable

    text = printable(where)
    return text if len(text) <= limit else f"{text[:limit // 2]}…{text[-limit // 2:]} ({len(where):,} characters)"


def walk_problem(note: str) -> DataError | None:
    """The one-line refusal for a note of :data:`WALK_PROBLEMS` (None for any other note)."""
    kind, _, where = note.partition(":")
    if kind not in WALK_PROBLEMS:
        return None
    what, hint = WALK_PROBLEMS[kind]
    return DataError(what.format(where=shown(where)) + " (data_versioning.py --quality-check lists every such path)",
                     hint=hint)


def problem_kind(e: OSError) -> str:
    """``too_long`` or ``unreadable``: the note for an error reading a path."""
    return "too_long" if e.errno == errno.ENAMETOOLONG else "unreadable"


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


def scandir(folder: Path, root: Path, notes: list[str]) -> list[os.DirEntry] | None:
    """The entries of ``folder`` sorted by name, or None after noting why it cannot be read."""
    try:
        with os.scandir(folder) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        notes.append(f"{problem_kind(e)}:{rel(folder, root)}")
        return None


def walk(top: Path, root: Path, real_root: Path, notes: list[str],
         max_depth: int = MAX_DEPTH) -> list[tuple[Path, str]]:
    """``[(abs path, path relative to root)]`` of every file below ``top``, in ``os.walk``'s top-down
    order with sorted names, without recursion. Folder links are not descended (as ``os.walk``);
    links leading outside ``real_root``, folders that cannot be read, folders deeper than
    ``max_depth`` below ``top`` and paths over the system's limit are left out and noted."""
    from src.core.paths import is_inside

    limit = _path_max(top)
    out: list[tuple[Path, str]] = []
    stack = [(top, 0)]
    while stack:
        folder, depth = stack.pop()
        subdirs = []
        for entry in scandir(folder, root, notes) or ():
            p = Path(entry.path)
            if len(os.fsencode(entry.path)) >= limit:
                notes.append(f"too_long:{rel(p, root)}")
            elif is_dir(entry):
                if not entry.is_symlink():
                    subdirs.append(p)
                elif not is_inside(real_root, p):
                    notes.append(f"outside_link:{rel(p, root)}")
            else:
                _check_name(entry.name, folder)
                if entry.is_symlink() and not is_inside(real_root, p):
                    notes.append(f"outside_link:{rel(p, root)}")
                    continue
                out.append((p, rel(p, root)))
        if depth == max_depth:
            notes += [f"too_deep:{rel(p, root)}" for p in subdirs]
            continue
        stack += [(p, depth + 1) for p in reversed(subdirs)]
    return out


def is_dir(entry: os.DirEntry) -> bool:
    """What ``os.walk`` counts as a folder (a link to a folder included)."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _check_name(name: str, folder: Path) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{shown(str(folder))}/{name!r}: file name is not valid UTF-8",
                        hint="rename the file; names are stored in the manifest") from None


def _path_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):  # not POSIX, or no limit reported
        return 4096
