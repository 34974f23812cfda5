"""Training outputs, published as one set: staged beside ``--models-dir``, moved in at the end.

A run writes everything (extractor, bundles, ``best_model.*``, plots, results) into
``<parent>/.<name>.staging-<pid>-<token>``. Only a run that succeeded moves its files into
``models_dir``: one ``os.replace`` per file (same filesystem, so each file appears whole), the
results file last, so ``training_results.json`` never names a file that is not there. A failed
run removes its staging folder; a killed one leaves it, and the next run removes it once its PID
is gone (``os.kill(pid, 0)``; a live run's folder is never touched). Either way the previous set
in ``models_dir`` was never written to, so its bundles still match its extractor.

Which files the suite owns is recorded in ``.grocery-outputs.json`` inside ``models_dir``: a
publish replaces those, removes the ones the new run did not write (an algorithm not trained this
time), and leaves every other file (``.gitkeep``, a user's notes) alone. A folder written before
the manifest existed is read through its ``training_results.json`` (the files it names).

The move is journaled: before the first rename the staging folder gets ``.publishing.json``
(the new file list, the files to remove). A process killed inside the move (milliseconds) leaves
that journal, and the next run finishes the move before it starts (roll forward), so a folder
never stays half old, half new. Publishes into one folder are serialised by a ``flock`` on it.
Protection is against failed and killed processes, not power loss (nothing is fsynced).

A write the disk refuses (full, over quota, read-only: the CLI's ``WRITE_ERRNOS``) while a run
writes its outputs, or any error while it publishes them, is one
:class:`~src.core.errors.StoreError` line (exit 4) naming the file and saying what ``models_dir``
holds: the previous set, untouched (and, once the publish began, the next run moves this one in),
or part of this run's (the next run finishes the move). A ``models_dir`` that cannot be created or
written, or a parent that cannot hold the staging folder, is refused the same way before any work.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from src.core.cli import WRITE_ERRNOS, printable, written_path
from src.core.errors import StoreError
from src.core.paths import EXTRACTOR_FILE, pid_alive, write_text_atomic

log = logging.getLogger(__name__)

MANIFEST = ".grocery-outputs.json"
JOURNAL = ".publishing.json"
RESULTS_FILE = "training_results.json"
BEST_MODEL_STEM = "best_model"
FULL_ERRNOS = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
_ACTIVE: set[str] = set()  # staging folders of runs in progress in this process


def staging_prefix(models_dir: Path) -> str:
    return f".{models_dir.name}.staging-"


@contextlib.contextmanager
def staged_outputs(models_dir: str | os.PathLike) -> Iterator[Path]:
    """A fresh staging folder beside ``models_dir`` (after cleaning up killed runs' folders).

    Removed on the way out unless a publish began in it (then the next run finishes that publish).
    """
    models_dir = Path(models_dir).resolve()
    staging = models_dir.parent / f"{staging_prefix(models_dir)}{os.getpid()}-{secrets.token_hex(4)}"
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=models_dir, prefix=".write-check-")  # a read-only folder: now, not
        os.close(fd)                                                           # after the whole run
        os.unlink(probe)
        recover(models_dir)
        staging.mkdir()
    except OSError as e:
        raise StoreError(f"cannot write training outputs to {printable(str(models_dir))} "
                         f"({e.strerror or e}: {printable(written_path(e) or str(staging))})",
                         hint="pass --models-dir a folder you can write to (its parent too: runs are staged there)"
                         ) from e
    _ACTIVE.add(str(staging))
    try:
        yield staging
    except OSError as e:  # a refused write while training, or any error while publishing (only writes then)
        if e.errno not in WRITE_ERRNOS and not (staging / JOURNAL).exists():
            raise
        raise _refused(e, models_dir, staging) from e
    finally:
        _ACTIVE.discard(str(staging))
        if staging.is_dir() and not (staging / JOURNAL).exists():
            shutil.rmtree(staging, ignore_errors=True)


def _refused(e: OSError, models_dir: Path, staging: Path) -> StoreError:
    """One line for a write refused while a run wrote or published its outputs, saying what ``models_dir`` holds."""
    try:
        journal = json.loads((staging / JOURNAL).read_text())
    except (OSError, ValueError):
        journal = None  # the publish had not begun: nothing in models_dir was touched
    moved = journal is not None and any(not (staging / n).exists() for n in _safe_names(journal.get("files") or []))
    if moved:
        kept = f"{models_dir} holds part of this run's outputs; the next run finishes moving them in"
    else:
        kept = f"the previous outputs in {models_dir} are unchanged" + (
            "; the next run moves this run's in" if journal is not None else "")
    reason = ("no space left" if e.errno in FULL_ERRNOS else "read-only file system" if e.errno == errno.EROFS
              else e.strerror or type(e).__name__)
    return StoreError(f"{reason}: cannot write {printable(written_path(e) or str(models_dir))} ({printable(kept)})",
                      hint="free some space and re-run" if e.errno in FULL_ERRNOS
                      else "make --models-dir writable (or choose another) and re-run")


def publish(staging: Path, models_dir: str | os.PathLike) -> list[str]:
    """Move every file of ``staging`` into ``models_dir`` (results last); returns their names."""
    models_dir = Path(models_dir).resolve()
    files = sorted(p.name for p in staging.iterdir() if p.name != JOURNAL)
    folders = [n for n in files if not (staging / n).is_file()]
    if folders:
        raise ValueError(f"training outputs must be plain files, not {folders}")
    with _locked(models_dir):
        journal = {"files": files, "remove": sorted(set(owned_files(models_dir)) - set(files))}
        _write_json(staging / JOURNAL, journal)
        _finish(staging, models_dir, journal)
    return files


def owned_files(models_dir: Path) -> list[str]:
    """The files the suite wrote last time: the manifest, else the ones a results file names."""
    try:
        names = json.loads((models_dir / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        names = _named_by_results(models_dir / RESULTS_FILE)
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("%s is unreadable: no earlier outputs will be removed", models_dir / MANIFEST)
        names = []
    return _safe_names(names)


def _named_by_results(path: Path) -> list[str]:
    try:
        results = json.loads(path.read_text())
        names = [RESULTS_FILE, (results.get("extractor") or {}).get("path") or EXTRACTOR_FILE]
        for info in (results.get("algorithms") or {}).values():
            model = info.get("model_path")
            names += [model, f"{model}.sha256", info.get("confusion_matrix_png")] if model else []
        return names
    except (OSError, ValueError, AttributeError):
        return []


def _safe_names(names: Iterable[Any]) -> list[str]:
    """Plain file names only: a manifest or journal never reaches outside its folder."""
    return [n for n in names if isinstance(n, str) and n not in ("", ".", "..", MANIFEST, JOURNAL)
            and "/" not in n and "\\" not in n and "\0" not in n]


def _finish(staging: Path, models_dir: Path, journal: dict[str, Any]) -> None:
    """Idempotent: move what is still staged (results last), record the manifest, drop stale files."""
    files = _safe_names(journal.get("files") or [])
    for name in sorted(files, key=lambda n: n == RESULTS_FILE):
        if (staging / name).is_file():
            _move(staging / name, models_dir / name)
    _write_json(models_dir / MANIFEST, {"files": files})
    for name in _safe_names(journal.get("remove") or []):
        if name not in files and (models_dir / name).is_file():
            (models_dir / name).unlink()
    shutil.rmtree(staging, ignore_errors=True)


def recover(models_dir: Path) -> None:
    """Deal with staging folders of runs that are no longer alive: finish a begun publish, else delete."""
    prefix = staging_prefix(models_dir)
    for path in sorted(models_dir.parent.glob(glob.escape(prefix) + "*")):
        m = re.fullmatch(r"(\d+)-[0-9a-f]+", path.name[len(prefix):])
        if not m or not path.is_dir() or str(path) in _ACTIVE:
            continue
        pid = int(m[1])
        if pid != os.getpid() and pid_alive(pid):
            continue
        if (path / JOURNAL).is_file():
            with _locked(models_dir):
                try:
                    journal = json.loads((path / JOURNAL).read_text())
                except (OSError, ValueError):
                    continue  # another process finished it meanwhile, or the journal is damaged: keep it
                log.warning("finishing the publish of an interrupted training run (%s)", path.name)
                _finish(path, models_dir, journal)
        else:
            log.info("removing %s, left by a training run that did not finish", path)
            shutil.rmtree(path, ignore_errors=True)


def copy_best_model(out_dir: Path, model_path: str) -> str:
    """``best_model.<ext>`` (and its sidecars) as byte copies of the best algorithm's bundle."""
    name = BEST_MODEL_STEM + Path(model_path).suffix
    for side in out_dir.glob(glob.escape(model_path) + ".*"):  # e.g. the .sha256 digest file
        shutil.copyfile(side, out_dir / (name + side.name[len(model_path):]))
    shutil.copyfile(out_dir / model_path, out_dir / name)
    return name


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # Windows: publishes into one folder are not serialised
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _move(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")  # models_dir is a mount point
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)  # a full disk leaves no partial copy in models_dir
        src.unlink()


def _write_json(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")
