"""Progress bars only where someone watches them: a terminal, never a log file.

Every bar of the project is made by :func:`progress_bar`, which leaves it off when the caller
asks (``progress=False``: ``--no-progress`` or ``-q``), when the job is too small to need one,
and when stderr is not a terminal (tqdm's ``disable=None``), so a redirected run writes no
``\\r`` updates into its log.
"""

from __future__ import annotations

from typing import Any, Iterable


def bar_disable(progress: bool = True, total: int | None = None, minimum: int = 0) -> bool | None:
    """tqdm's ``disable`` for a bar: ``True`` (off) or ``None`` (on when stderr is a terminal)."""
    if not progress or (total is not None and total < minimum):
        return True
    return None


def progress_bar(iterable: Iterable | None = None, *, progress: bool = True, total: int | None = None,
                 minimum: int = 0, **kwargs: Any):
    """A tqdm bar on stderr, drawn only when ``progress`` is on, ``total >= minimum`` and stderr is a terminal."""
    from tqdm import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(iterable, total=total, disable=bar_disable(progress, total, minimum), **kwargs)
