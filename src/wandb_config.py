"""W&B settings users import: project, entity, the default training config, the sweep definition.

``WANDB_PROJECT`` and ``WANDB_ENTITY`` below are the defaults of every run and sweep, whichever command
starts it: edit them here (``$WANDB_PROJECT`` / ``$WANDB_ENTITY`` still override). The tracking package
reads these two lines from this file (see :mod:`src.tracking.settings`), so keep each a plain string
(or ``None`` for the entity: your API key's default entity).

The code that talks to W&B lives in :mod:`src.tracking` (the one module that imports ``wandb``);
this module re-exports what the seed documented, and ``create_sweep`` from :mod:`src.hpo`.

    from src.wandb_config import WANDB_PROJECT, SWEEP_CONFIG, create_sweep
"""

from __future__ import annotations

from typing import Any

from src.core.paths import default_sweep_config
from src.hpo.study import create_sweep
from src.tracking import MODES, Tracker, base_url, has_api_key, resolve_mode, wandb_dir
from src.training.config import default_config

WANDB_PROJECT = "grocery-classification-mlops"
WANDB_ENTITY = None

SWEEP_CONFIG_PATH = default_sweep_config()  # the checkout's file, else ./sweep_config.yaml
DEFAULT_CONFIG: dict[str, Any] = default_config()

__all__ = ["WANDB_PROJECT", "WANDB_ENTITY", "DEFAULT_CONFIG", "SWEEP_CONFIG", "SWEEP_CONFIG_PATH", "create_sweep",
           "MODES", "Tracker", "base_url", "has_api_key", "resolve_mode", "wandb_dir"]


def __getattr__(name: str) -> Any:
    # SWEEP_CONFIG is read from sweep_config.yaml on first use, not at import time.
    if name == "SWEEP_CONFIG":
        from src.hpo.space import load_sweep_config

        return load_sweep_config(SWEEP_CONFIG_PATH)
    raise AttributeError(name)
