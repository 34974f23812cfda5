"""Every test runs isolated: its own store, W&B offline into a temp dir, no credentials."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_SWEEP_ID",
                "WANDB_RUN_ID", "MLOPS_STORE", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("MLOPS_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_root"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    yield


@pytest.fixture
def drop_log_handlers():
    """``main()`` points logging at the captured stderr of its test; detach it afterwards."""
    import logging

    yield
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
