"""Where a dataset generation writes, so that a refused write is one line and leaves nothing behind.

``synth.py`` run from a read-only folder (or onto a full disk) used to end in a ``PermissionError``
or ``OSError`` traceback with exit 1 and, on a full disk, a half-written dataset. Generation now
writes through an :class:`OutputFolder`: it records every file and folder the run creates; on
any failure it removes them again (files that were there before are never touched) and a refused
write becomes one :class:`~src.core.errors.StoreError` line naming the path it tried to write
(exit 4, as for the store: a full disk, a read-only folder).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import TracebackType

from src.core.errors import StoreError

FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


class OutputFolder:
    """``with OutputFolder(out) as w: w.folder(d); w.save(img, path, quality=...)``."""

    def __init__(self, out: str | os.PathLike):
        self.out = Path(out)
        self.files: list[Path] = []
        self.dirs: list[Path] = []  # in the order they were created

    def __enter__(self) -> "OutputFolder":
        return self

    def __exit__(self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if e is None:
            return
        self.undo()
        if isinstance(e, OSError):
            raise write_error(e, self.out) from e

    def folder(self, d: Path) -> Path:
        """``d`` created with its missing parents (recorded, to remove them again on failure)."""
        missing = [p for p in (d, *d.parents) if not p.exists()]
        d.mkdir(parents=True, exist_ok=True)
        self.dirs += reversed(missing)
        return d

    def save(self, img, path: Path, **kw) -> None:
        """``img.save(path, **kw)``, recorded if new (before the write, so a half-written file is removed too)."""
        if not path.exists():
            self.files.append(path)
        img.save(path, **kw)

    def undo(self) -> None:
        """Remove what this run created: its files, then its folders once empty."""
        for p in self.files:
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass
        for d in reversed(self.dirs):
            try:
                d.rmdir()
            except OSError:  # not empty (someone else's file) or already gone
                pass


def write_error(e: OSError, out: Path) -> StoreError:
    """One line for a write the disk or folder refused, naming the absolute path it tried to write."""
    from src.core.cli import printable, written_path

    where = printable(os.path.abspath(written_path(e) or out))
    full = e.errno in FULL
    return StoreError(f"cannot write the dataset at {where} ({e.strerror or e}); nothing of this run was kept",
                      hint="free some space, or pass `out_dir` on another disk" if full
                      else "pass `out_dir` a folder you can write to, or run from one", params=("out_dir",))
