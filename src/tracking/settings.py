"""Which W&B project and entity a run goes to: ``src/wandb_config.py`` is where users set them.

The original guide says to edit ``WANDB_PROJECT`` / ``WANDB_ENTITY`` in ``src/wandb_config.py``; so
they are the real defaults of every run and sweep, whichever command starts it. A library module may
not import a script (the layers run one way), so the file is *read*, not imported: its two top-level
assignments are evaluated as literals (``ast.literal_eval``; nothing in it runs). Where a notebook has
imported ``src.wandb_config`` and changed the attribute (``wandb_config.WANDB_PROJECT = "x"``), that
value is used. ``WANDB_PROJECT`` / ``WANDB_ENTITY`` in the environment still override both.
"""

from __future__ import annotations

import ast
import logging
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WANDB_PROJECT = "grocery-classification-mlops"  # used when src/wandb_config.py cannot be read
WANDB_ENTITY = None
CONFIG_FILE = Path(__file__).resolve().parents[1] / "wandb_config.py"
_MISSING = object()


def _from_file(name: str, path: Path | None = None) -> Any:
    """The literal assigned to ``name`` at the top of ``path`` (default: src/wandb_config.py); ``_MISSING``
    when there is none."""
    path = path or CONFIG_FILE
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError, ValueError) as e:
        log.debug("cannot read %s: %s", path, e)
        return _MISSING
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else \
            node.target if isinstance(node, ast.AnnAssign) and node.value is not None else None
        if isinstance(target, ast.Name) and target.id == name:
            try:
                return ast.literal_eval(node.value)
            except ValueError:
                log.warning("%s = ... in %s is not a plain string; using %r", name, path,
                            globals()[name])
                return _MISSING
    return _MISSING


def _default(name: str) -> Any:
    env = os.environ.get(name)
    if env:
        return env
    module = sys.modules.get("src.wandb_config")
    value = getattr(module, name, _MISSING) if module is not None else _MISSING
    if value is _MISSING:
        value = _from_file(name)
    if value is _MISSING or (value is not None and not isinstance(value, str)):
        return globals()[name]
    return value or None


def default_project() -> str:
    """``$WANDB_PROJECT``, else ``WANDB_PROJECT`` of ``src/wandb_config.py``."""
    return _default("WANDB_PROJECT") or WANDB_PROJECT


def default_entity() -> str | None:
    """``$WANDB_ENTITY``, else ``WANDB_ENTITY`` of ``src/wandb_config.py`` (``None``: the key's default entity)."""
    return _default("WANDB_ENTITY")
