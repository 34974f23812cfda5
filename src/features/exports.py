"""The ONNX exports in ``<store>/onnx/`` as gc sees them (:mod:`src.core.ownership`).

Every file there is named by its extractor's sha256: ``<digest>-<size>.onnx`` (float32,
:func:`~src.features.onnx_runtime.onnx_cache_path`), ``<digest>-<size>-int8-<recipe>.onnx`` (the generic
int8 variant) and ``<digest>-<size>-int8-<calibration>.onnx`` with its ``.ranges.json`` and ``.rounding.json``
(:mod:`src.features.int8_calibration`). An export may go when its extractor is kept by nothing and
the file is older than the cutoff (a fresh one may serve a running job); other files stay.
"""

from __future__ import annotations

import re
from pathlib import Path

from src.core.ownership import Keep, Owner, Pruning
from src.core.store import Store

EXPORT_NAME = re.compile(r"([0-9a-f]{64})-\d+(?:-int8(?:-[0-9a-z]+)?)?(?:\.onnx|\.ranges\.json|\.rounding\.json)")


def export_digest(name: str) -> str | None:
    """The extractor digest an export file is named by, or None for any other file."""
    m = EXPORT_NAME.fullmatch(name)
    return m[1] if m else None


def prunable(store: Store, _con, keep: Keep) -> list[Pruning]:
    folder = store.root / "onnx"
    doomed: list[tuple[Path, int]] = []
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        digest = export_digest(p.name)
        if digest is None or digest in keep.extractors:
            continue
        try:
            s = p.stat()
        except FileNotFoundError:  # removed meanwhile (another gc)
            continue
        if s.st_mtime < keep.cutoff:
            doomed.append((p, s.st_size))
    if not doomed:
        return []

    def remove(now: Keep) -> None:  # a training that started meanwhile may hold one again
        for p, _ in doomed:
            if export_digest(p.name) not in now.extractors:
                p.unlink(missing_ok=True)

    return [Pruning("onnx exports", keys=[p.name for p, _ in doomed], items=[p.name for p, _ in doomed],
                    count=len(doomed), bytes=sum(n for _, n in doomed), after=remove)]


OWNER = Owner("features.exports", prune=prunable, database=None)  # files only, no table
