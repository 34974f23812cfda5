"""Scan an ImageFolder dataset into a per-file manifest, re-hashing only what changed.

A dataset is ``DATA_DIR/{train,test[,val]}/{class_name}/{files}``, plus optionally an
unlabeled pool ``DATA_DIR/unlabeled/`` with images at any depth (its sub-folder names are
never classes: pool entries have split ``unlabeled`` and class ``""``). Every file under a
class folder or the pool becomes one manifest entry (path, split, class, sha256, size, and for
decodable images width, height, mode, format and a 64-bit dHash); files that are not
usable images are kept too, with an ``error`` kind, so a restore rebuilds the exact tree
and the quality gate can name them. A stat cache in the store (absolute path, size,
mtime_ns → sha256 + probe) makes re-versioning a large dataset cost one ``stat`` per
unchanged file.

Nothing outside the dataset folder is ever read: a file link, or a split or class folder
that is a link, whose target (every link resolved) lies outside the root is left out of
the manifest and reported as an ``outside_link`` note (a quality finding, a warning).
Links that stay inside the root are followed, like the files they point at; a link to a
folder below a class folder is not descended (an outside one is reported). FIFOs and
devices are refused.

Nothing is skipped silently either. The walk is iterative (a folder nested 2,500 deep once hit
Python's recursion limit) and notes, by name, what it could not walk: a folder or file it may
not read (``unreadable:``), a folder more than :data:`MAX_DEPTH` levels below its class folder
or the pool (``too_deep:``), a path longer than the system allows (``too_long:``). Versioning
and training refuse such a dataset in one line (a version would silently lack those files);
the quality check (``keep_going=True``) lists every one of them as an error finding.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from src.core.errors import DataError
from src.core.ownership import MENTION, Owner
from src.data.walk import WALK_PROBLEMS, problem_kind, scandir, shown, walk, walk_problem

log = logging.getLogger(__name__)

ICONIC = "iconic"  # optional catalogue shots per class (iconic/<class>/): labeled examples, never held out or tested
SPLITS = ("train", "test", "val", ICONIC)
POOL = "unlabeled"  # the folder (and manifest split) of images without a label
SHIFT = "shift"  # the manifest split of a lone ImageFolder split (list_split), e.g. training's --shift-dir
REQUIRED_SPLITS = ("train", "test")
CACHE_DDL = """
CREATE TABLE IF NOT EXISTS dataset_stat_cache (
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL, probe TEXT NOT NULL
);
"""
#: What gc asks of this cache (src.core.ownership): a file's sha256 on record, no blob kept for it.
OWNER = Owner("data.scan", tables=("dataset_stat_cache",), digests={"dataset_stat_cache.sha256": MENTION})
PROBE_KEYS = ("width", "height", "mode", "format", "dhash", "error", "error_detail")


def dataset_digest(manifest: list[dict]) -> str:
    """Content digest of a dataset: sha256 over the sorted (relative path, sha256) pairs."""
    h = hashlib.sha256()
    for path, sha in sorted((e["path"], e["sha256"]) for e in manifest):
        h.update(f"{path}\0{sha}\n".encode())
    return h.hexdigest()


def dhash(img) -> str:
    """64-bit difference hash (hex): sign of horizontal gradients on a 9x8 grey thumbnail."""
    import numpy as np
    from PIL import Image

    from src.core.images import to_rgb

    small = to_rgb(img).convert("L").resize((9, 8), Image.Resampling.LANCZOS)
    a = np.asarray(small, dtype=np.int16)
    bits = (a[:, 1:] > a[:, :-1]).flatten()
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def probe_bytes(data: bytes, name: str) -> dict[str, Any]:
    """Decode fully and describe; never raises for bad content (it is recorded instead)."""
    from PIL import Image, UnidentifiedImageError

    from src.core.images import MAX_PIXELS, is_image_name
    from src.core.limits import LIMITS

    out: dict[str, Any] = dict.fromkeys(PROBE_KEYS)
    if not data:
        out.update(error="zero_byte", error_detail="file is empty (0 bytes)")
        return out
    if not is_image_name(name):
        out.update(error="non_image", error_detail="not an image file extension")
        return out
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=LIMITS.formats) as img:  # the formats every command decodes
                w, h = img.size
                out.update(width=w, height=h, mode=img.mode, format=img.format)
                if w * h > MAX_PIXELS:
                    out.update(error="too_large", error_detail=f"{w}x{h} pixels, possible decompression bomb")
                    return out
                problem = LIMITS.size_problem(w, h)
                if problem:  # training, monitoring and the server refuse it: listed here first
                    out.update(error="bad_aspect_ratio", error_detail=f"image {problem}")
                    return out
                img.load()
                out["dhash"] = dhash(img)
    except UnidentifiedImageError:
        out.update(error="non_image", error_detail=f"not an image in an accepted format ({', '.join(LIMITS.formats)})")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        out.update(error="too_large", error_detail=str(e))
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        out.update(error="corrupt", error_detail=f"corrupted or truncated ({e})")
    return out


def _hash_and_probe(path: Path, rel: str) -> tuple[str, dict] | OSError:
    """(sha256, probe) of a file, or the error reading it (the caller decides: refuse or note)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return e
    return hashlib.sha256(data).hexdigest(), probe_bytes(data, rel)


def list_files(data_dir: str | os.PathLike) -> tuple[Path, list[tuple[Path, str, str, str]], list[str]]:
    """(root, [(abs path, rel path, split, class)], notes) — validates the layout.

    Notes are ``kind:where`` strings: ``stray:``, ``empty_class:`` and ``outside_link:``
    (a link leading outside the root, left out).
    """
    from src.core.paths import is_inside

    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset folder {root} does not exist",
                        hint="pass `data_dir` pointing at a folder with train/ and test/ sub-folders",
                        params=("data_dir",))
    real_root = Path(os.path.realpath(root))
    outside = [s for s in SPLITS if (root / s).is_symlink() and not is_inside(real_root, root / s)]
    splits = [s for s in SPLITS if (root / s).is_dir() and s not in outside]
    notes = [f"outside_link:{s}" for s in outside]
    if not splits:
        raise DataError(f"{root} has no train/, val/ or test/ folder" + (" inside it" if outside else ""),
                        hint="lay the dataset out as DATA_DIR/{train,test}/{class_name}/{images}")
    top = scandir(root, root, notes)
    if top is None:
        kind = notes.pop().partition(":")[0]
        raise DataError(f"cannot read the dataset folder {shown(str(root))} ({kind.replace('_', ' ')})",
                        hint=WALK_PROBLEMS[kind][1])
    notes += [f"stray:{e.name}" for e in top if e.name not in splits and e.name not in outside and e.name != POOL]
    files: list[tuple[Path, str, str, str]] = []
    for split in splits:
        files += _list_classes(root / split, split, root, real_root, notes)
    files += list_pool(root, real_root, notes)
    if not files:
        raise DataError(f"{root} contains no files under {{split}}/{{class}}/ folders",
                        hint="add images as DATA_DIR/train/<class>/<image>.jpg")
    links = [n.partition(":")[2] for n in notes if n.startswith("outside_link:")]
    if links:
        log.warning("left out %d link(s) leading outside %s (e.g. %s); they are never read", len(links), root,
                    shown(links[0]))
    return root, files, notes


def _list_classes(split_dir: Path, split: str, root: Path, real_root: Path,
                  notes: list[str]) -> list[tuple[Path, str, str, str]]:
    """``[(abs path, rel path, split, class)]`` of the class folders of ``split_dir`` (paths relative to ``root``)."""
    from src.core.paths import is_inside

    files: list[tuple[Path, str, str, str]] = []
    entries = scandir(split_dir, root, notes)
    for cdir in [Path(e.path) for e in entries or ()]:
        rel_dir = cdir.relative_to(root).as_posix()
        if cdir.is_symlink() and not is_inside(real_root, cdir):
            notes.append(f"outside_link:{rel_dir}")
            continue
        if not cdir.is_dir():
            notes.append(f"stray:{rel_dir}")
            continue
        if not cdir.name.startswith("."):  # hidden folders are never classes
            _check_class_folder(cdir, rel_dir)
        n0 = len(files)
        files += [(p, rel, split, cdir.name) for p, rel in walk(cdir, root, real_root, notes)]
        if len(files) == n0 and not any(n.partition(":")[2] == rel_dir for n in notes):  # not: unreadable
            notes.append(f"empty_class:{rel_dir}")
    return files


def _check_class_folder(cdir: Path, rel_dir: str) -> None:
    """A class is born here: its folder name must follow :mod:`src.core.names`' rule."""
    from src.core.names import class_name_problem, normalize_class_name

    problem = class_name_problem(cdir.name)
    if problem is None:
        return
    twin = normalize_class_name(cdir.name)
    if twin != cdir.name and os.path.lexists(cdir.with_name(twin)):
        problem = (f"it is {twin!r} written in another Unicode form, beside a folder {twin!r}: two classes that "
                   f"look identical")
    raise DataError(f"class folder {rel_dir!r}: {problem}",
                    hint="rename the folder (merge it into its twin if it has one)")


def check_split_dir(split_dir: str | os.PathLike, what: str = "split folder") -> Path:
    """``split_dir`` as a Path; one :class:`DataError` line if it is missing or not a folder (cheap: no walk)."""
    root = Path(split_dir).expanduser()
    if not root.exists():
        raise DataError(f"{what} {root} does not exist", hint="pass a folder laid out as DIR/<class_name>/<images>")
    if not root.is_dir():
        raise DataError(f"{what} {root} is not a folder", hint="pass a folder laid out as DIR/<class_name>/<images>")
    return root


def list_split(split_dir: str | os.PathLike, what: str = "split folder"
               ) -> tuple[Path, list[tuple[Path, str, str, str]], list[str]]:
    """(root, [(abs path, rel path, SHIFT, class)], notes) of ONE ImageFolder split ``split_dir/<class>/<files>``
    (e.g. training's ``--shift-dir``), with a dataset split's rules: the same walk, links leading outside
    ``split_dir`` left out and noted, files beside the class folders noted as ``stray:``."""
    root = check_split_dir(split_dir, what)
    notes: list[str] = []
    files = _list_classes(root, SHIFT, root, Path(os.path.realpath(root)), notes)
    return root, files, notes


def list_pool(root: Path, real_root: Path | None = None, notes: list[str] | None = None
              ) -> list[tuple[Path, str, str, str]]:
    """``[(abs path, rel path, "unlabeled", "")]`` for every file under ``root/unlabeled/``, any depth.

    Links leading outside the dataset (the pool folder itself, a sub-folder or a file) are left
    out and noted as ``outside_link:`` in ``notes``, as for the labeled splits.
    """
    from src.core.paths import is_inside

    real_root = real_root or Path(os.path.realpath(root))
    notes = notes if notes is not None else []
    pool = root / POOL
    if not pool.is_dir():
        return []
    if pool.is_symlink() and not is_inside(real_root, pool):
        notes.append(f"outside_link:{POOL}")
        return []
    return [(p, rel, POOL, "") for p, rel in walk(pool, root, real_root, notes)]


def scan_dataset(data_dir: str | os.PathLike, store=None, workers: int | None = None, progress: bool = True,
                 keep_going: bool = False) -> dict:
    """Manifest of ``data_dir`` plus scan statistics (files hashed vs served from cache).

    Hashing 1000 files or more draws a progress bar when ``progress`` is on and stderr is a terminal.
    A folder or file that cannot be read, a folder too deep or a path too long (``WALK_PROBLEMS``)
    is refused in one :class:`DataError` line, or with ``keep_going`` (the quality check) left out
    of the manifest and noted.

    Returns ``{"root", "manifest": [entry...], "notes": [...], "stats": {...}}``.
    """
    import time

    t0 = time.perf_counter()
    root, files, notes = list_files(data_dir)
    _refuse_walk_problems(notes, keep_going)
    manifest, stats = _hash_files(files, store, workers, progress, notes if keep_going else None)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    log.debug("scanned %s: %s", root, stats)
    return {"root": str(root), "manifest": manifest, "notes": notes, "stats": stats}


def scan_split(split_dir: str | os.PathLike, store=None, progress: bool = True, what: str = "split folder") -> dict:
    """:func:`scan_dataset` for one ImageFolder split (:func:`list_split`): manifest entries have split
    ``shift``, ``path`` relative to ``split_dir``, and use the same stat cache."""
    root, files, notes = list_split(split_dir, what)
    _refuse_walk_problems(notes, keep_going=False)
    manifest, stats = _hash_files(files, store, None, progress)
    return {"root": str(root), "manifest": manifest, "notes": notes, "stats": stats}


def _refuse_walk_problems(notes: list[str], keep_going: bool) -> None:
    problems = [n for n in notes if n.partition(":")[0] in WALK_PROBLEMS]
    if problems and not keep_going:
        raise walk_problem(problems[0])
    if problems:
        kind, _, where = problems[0].partition(":")
        log.warning("left out %d path(s) the walk cannot read (e.g. %s: %s)", len(problems), shown(where), kind)


def _unreadable(e: OSError, p: Path, rel: str, problems: list[str] | None) -> None:
    """Note a file that cannot be stat'ed or read in ``problems``, or refuse it (``problems`` None)."""
    if problems is None:
        raise DataError(f"{shown(str(p))}: cannot read file ({e.strerror})",
                        hint="fix its permissions or remove it from the dataset") from e
    problems.append(f"{problem_kind(e)}:{rel}")


def _hash_files(files: list[tuple[Path, str, str, str]], store, workers: int | None,
                progress: bool, problems: list[str] | None = None) -> tuple[list[dict], dict]:
    """Manifest entries of ``files`` (sha256 and probe, from the stat cache where unchanged) and statistics.

    A file that cannot be read is refused (one :class:`DataError`), or noted in ``problems`` and left out."""
    cache: dict[str, tuple] = {}
    if store is not None:
        store.ensure_schema("dataset_stat_cache", CACHE_DDL)
        with store.read() as con:
            cache = {r["path"]: (r["size"], r["mtime_ns"], r["sha256"], r["probe"])
                     for r in con.execute("SELECT * FROM dataset_stat_cache")}
    manifest, todo = [], []
    for p, rel, split, cls in files:
        try:
            st = p.stat()
        except OSError as e:
            _unreadable(e, p, rel, problems)
            continue
        if not stat.S_ISREG(st.st_mode):  # a FIFO or a device would block or never end
            raise DataError(f"{p}: not a regular file", hint="remove it (or what the link points at) from the dataset")
        entry = {"path": rel, "split": split, "class": cls, "size": st.st_size}
        key = str(p.resolve())
        hit = cache.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            entry["sha256"] = hit[2]
            entry.update(json.loads(hit[3]))
        else:
            todo.append((entry, p, key, st.st_size, st.st_mtime_ns))
        manifest.append(entry)
    workers = workers or min(4, os.cpu_count() or 1)
    bytes_hashed = 0
    from src.core.progress import progress_bar

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda t: _hash_and_probe(t[1], t[0]["path"]), todo)
        updates = []
        bar = progress_bar(zip(todo, results), progress=progress, total=len(todo), minimum=1000, desc="hashing",
                           unit="file", leave=False)
        unread = set()
        for (entry, p, key, size, mtime_ns), result in bar:
            if isinstance(result, OSError):
                _unreadable(result, p, entry["path"], problems)
                unread.add(id(entry))
                continue
            sha, probe = result
            entry["sha256"] = sha
            entry.update(probe)
            bytes_hashed += entry["size"]
            updates.append((key, size, mtime_ns, sha, json.dumps(probe)))
    manifest = [e for e in manifest if id(e) not in unread]
    if store is not None and updates and store.writable:
        from src.core.errors import StoreError

        try:
            with store.transaction() as con:
                con.executemany("INSERT OR REPLACE INTO dataset_stat_cache VALUES (?,?,?,?,?)", updates)
        except StoreError as e:  # a full disk: the cache is an optimisation, the scan itself is done
            log.warning("stat cache not updated: %s", e)
    return manifest, {"files": len(manifest), "hashed": len(todo), "cached": len(manifest) - len(todo),
                      "bytes_hashed": bytes_hashed}
