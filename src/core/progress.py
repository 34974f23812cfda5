"""Progress bars only where someone watches them: a terminal, never a log file.

Every bar of the project is made by :func:`progress_bar`, which leaves it off when the caller
asks (``progress=False``: ``--no-progress`` or ``-q``), when the job is too small to need one,
and when stderr is not a terminal (tqdm's ``disable=None``), so a redirected run writes no
``\\r`` updates into its log. In a Jupyter notebook stderr is no terminal, yet someone watches: there
the bars are drawn, as notebook widgets where ipywidgets is installed (``tqdm.auto``), else as text; a
default training would otherwise run silent for many minutes.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable


def in_notebook() -> bool:
    """True inside a Jupyter kernel (IPython with a kernel attached), not in a terminal IPython."""
    ipython = sys.modules.get("IPython")
    try:
        shell = ipython.get_ipython() if ipython is not None else None
    except Exception:  # an IPython too old or half imported: no notebook
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def bar_disable(progress: bool = True, total: int | None = None, minimum: int = 0) -> bool | None:
    """tqdm's ``disable`` for a bar: ``True`` (off), ``False`` (on: a notebook) or ``None`` (on when stderr is a
    terminal)."""
    if not progress or (total is not None and total < minimum):
        return True
    return False if in_notebook() else None


def progress_bar(iterable: Iterable | None = None, *, progress: bool = True, total: int | None = None,
                 minimum: int = 0, **kwargs: Any):
    """A tqdm bar on stderr, drawn only when ``progress`` is on, ``total >= minimum`` and stderr is a terminal."""
    if in_notebook():
        from tqdm.auto import tqdm
    else:
        from tqdm import tqdm

    if total is None and iterable is not None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    return tqdm(iterable, total=total, disable=bar_disable(progress, total, minimum), **kwargs)
