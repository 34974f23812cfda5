"""Experiment tracking: the only package that talks to W&B (:mod:`src.tracking.wandb_tracker` imports ``wandb``)."""

from src.tracking.wandb_tracker import (MODES, WANDB_ENTITY, WANDB_PROJECT, Tracker, base_url, create_wandb_sweep,
                                        has_api_key, in_sweep, resolve_mode, wandb_dir)

__all__ = ["MODES", "WANDB_ENTITY", "WANDB_PROJECT", "Tracker", "base_url", "create_wandb_sweep", "has_api_key",
           "in_sweep", "resolve_mode", "wandb_dir"]
