"""Where things live, and safe file-system paths: the project root, writes that stay inside
their target, temp folders of dead runs.

``project_root`` is the one rule for the default store (``.mlops/``) and ``wandb/``: the
nearest folder at or above the working directory that holds ``.mlops/`` (as git and DVC find
their roots), else the working directory; never the folder the package is installed in.

``contained_path`` is the one check every command that writes files named by data (a
restore's stored paths, a future labeling or import command) uses before writing.
Temporary names carry the host and process id (``temp_prefix``) so the next run can tell
the leftovers of a killed process (removed) from those of a live one (kept).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import shutil
import socket
import time
from pathlib import Path, PurePosixPath

from src.core.errors import DataError

log = logging.getLogger(__name__)
LEGACY_TEMP_AGE_S = 24 * 3600  # temp entries without a pid in their name are removed once this old
STORE_DIRNAME = ".mlops"
# The dataset folder every command defaults to, in the working directory; training and sweeps generate it
# from the shipped sample when missing (src.training.pipeline.ensure_dataset).
DEFAULT_DATA_DIR = "DS2GROCERIES"
EXTRACTOR_FILE = "feature_extractor.pth"  # the feature extractor, saved beside the models trained with it
# The folder holding the ``src`` package: a git checkout in development, site-packages when installed.
_PACKAGE_PARENT = Path(__file__).resolve().parents[2]


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding ``.mlops/``,
    else ``start`` itself. The default store is ``project_root() / ".mlops"``; ``wandb/`` goes beside it."""
    here = Path(start) if start is not None else Path.cwd()
    here = here.absolute()
    for folder in (here, *here.parents):
        if (folder / STORE_DIRNAME).is_dir():
            return folder
    return here


def source_checkout() -> Path | None:
    """The git checkout this package runs from (an editable install or a clone), else ``None``."""
    return _PACKAGE_PARENT if (_PACKAGE_PARENT / ".git").exists() else None


def default_sweep_config() -> Path:
    """The checkout's ``sweep_config.yaml`` when there is one, else ``sweep_config.yaml`` in the
    working directory (relative: read where the caller is when it is used)."""
    checkout = source_checkout()
    if checkout is not None and (checkout / "sweep_config.yaml").is_file():
        return checkout / "sweep_config.yaml"
    return Path("sweep_config.yaml")


def contained_path(root: str | os.PathLike, rel: str, what: str = "path") -> Path:
    """``root / rel``, refused unless it lies inside ``root`` once every link is resolved.

    ``rel`` must be relative, in ``/`` form, with no ``..``, ``.`` or empty components and
    no NUL; an existing link on the way (in ``root`` or below it) that leads outside is
    refused too. Raises :class:`DataError`, before anything is written.
    """
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise DataError(f"{what} {rel!r} is not a usable relative path", hint="the record was edited or is damaged")
    parts = rel.split("/")
    if (rel.startswith("/") or PurePosixPath(rel).is_absolute() or re.match(r"^[A-Za-z]:", rel)
            or any(p in ("", ".", "..") for p in parts)):
        raise DataError(f"{what} {rel!r} would be written outside {root}",
                        hint="refused: stored paths must be plain relative paths; the record was tampered with")
    base = Path(root)
    real_root = Path(os.path.realpath(base))
    target = Path(os.path.realpath(base.joinpath(*parts)))
    if target == real_root or not target.is_relative_to(real_root):
        raise DataError(f"{what} {rel!r} leads outside {root} through a link",
                        hint="refused: remove the link from the target folder")
    return base.joinpath(*parts)


def is_inside(real_root: Path, path: str | os.PathLike) -> bool:
    """Whether ``path`` resolves (following every link) to ``real_root`` or below it."""
    return Path(os.path.realpath(path)).is_relative_to(real_root)


def write_text_atomic(path: str | os.PathLike, text: str, *, fsync: bool = False) -> Path:
    """Write ``text`` beside ``path`` under a temp name of this process and rename it into place, so
    a reader never sees half a file; ``fsync`` also forces it to disk first (journals)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{temp_prefix()}tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# -- temporary files of killed runs --------------------------------------------------------
def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes of a file, or of every file under a folder (links not followed, entries that vanish meanwhile
    skipped); 0 when nothing is there."""
    with contextlib.suppress(OSError):
        if os.path.isfile(path):
            return os.stat(path).st_size
    total, todo = 0, [os.fspath(path)]
    while todo:
        with contextlib.suppress(OSError), os.scandir(todo.pop()) as entries:
            for e in entries:
                with contextlib.suppress(OSError):
                    if e.is_dir(follow_symlinks=False):
                        todo.append(e.path)
                    elif e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
    return total


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (a process we may not signal counts as alive)."""
    if pid <= 0:
        return False
    if os.name == "nt":  # there os.kill(pid, 0) would terminate the process: assume alive, remove nothing
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as e:
        return e.errno != errno.ESRCH
    return True


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:32] or "host"


def temp_prefix() -> str:
    """``HOST-PID-``: the prefix of every temporary entry a store writes."""
    return f"{_host()}-{os.getpid()}-"


_TEMP_RE = re.compile(r"^(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")


def clean_stale_temps(folder: str | os.PathLike) -> int:
    """Remove entries of ``folder`` left by dead processes of this host; returns how many.

    An entry named ``HOST-PID-...`` goes when HOST is this host and PID is not alive;
    entries of other hosts (a shared store) and of live processes stay. Entries without a
    pid (written before names carried one) go once older than a day.
    """
    folder = Path(folder)
    try:
        entries = list(folder.iterdir())
    except OSError:
        return 0
    host, removed, now = _host(), 0, time.time()
    for p in entries:
        m = _TEMP_RE.match(p.name)
        if m:
            if m["host"] != host or pid_alive(int(m["pid"])):
                continue
        else:
            try:
                if now - p.lstat().st_mtime < LEGACY_TEMP_AGE_S:
                    continue
            except OSError:
                continue
        if remove_tree(p):
            removed += 1
    if removed:
        log.info("removed %d temporary entr%s of killed runs from %s", removed, "y" if removed == 1 else "ies", folder)
    return removed


def clean_pid_siblings(path: str | os.PathLike, marker: str, suffixes: tuple[str, ...] = ("",)) -> int:
    """Remove ``.NAME{marker}PID{suffix}`` siblings of ``path`` (one of ``suffixes``) whose process is gone
    (a killed generation or export)."""
    path = Path(path)
    ends = "|".join(re.escape(s) for s in suffixes)
    pattern = re.compile(rf"^\.{re.escape(path.name)}{re.escape(marker)}(\d+)(?:{ends})$")
    removed = 0
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return 0
    for p in siblings:
        m = pattern.match(p.name)
        if m and int(m[1]) != os.getpid() and not pid_alive(int(m[1])) and remove_tree(p):
            log.info("removed %s, left by a killed run", p)
            removed += 1
    return removed


def remove_tree(p: Path) -> bool:
    """Remove a file, link or folder; True when it is gone."""
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    except FileNotFoundError:
        pass
    except OSError as e:
        log.debug("could not remove %s: %s", p, e)
        return False
    return True
