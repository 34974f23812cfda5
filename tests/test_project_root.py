"""One rule for where the store and wandb/ live: the nearest .mlops/ above the working directory, else it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from src.core.paths import default_sweep_config, project_root, source_checkout
from src.core.store import store_dir
from src.tracking import wandb_dir

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_overrides(monkeypatch):
    monkeypatch.delenv("MLOPS_STORE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)


def test_without_mlops_the_store_is_in_the_working_directory(tmp_path, monkeypatch, no_overrides):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert project_root() == work.resolve()
    assert store_dir() == work.resolve() / ".mlops"
    assert wandb_dir() == work.resolve()


def test_a_subfolder_finds_the_nearest_mlops_above(tmp_path, monkeypatch, no_overrides):
    (tmp_path / "proj" / ".mlops").mkdir(parents=True)
    deep = tmp_path / "proj" / "notebooks" / "week1"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    proj = (tmp_path / "proj").resolve()
    assert project_root() == proj and store_dir() == proj / ".mlops" and wandb_dir() == proj
    (deep / ".mlops").mkdir()  # a nearer one wins
    assert store_dir() == deep.resolve() / ".mlops"


def test_a_file_named_mlops_is_not_a_store(tmp_path, monkeypatch, no_overrides):
    (tmp_path / ".mlops").write_text("not a folder")
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    assert store_dir() == sub.resolve() / ".mlops"


def test_explicit_settings_still_win(tmp_path, monkeypatch, no_overrides):
    (tmp_path / ".mlops").mkdir()
    monkeypatch.chdir(tmp_path)
    assert store_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setenv("MLOPS_STORE", str(tmp_path / "env"))
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    assert store_dir() == tmp_path / "env" and wandb_dir() == tmp_path / "wb"
    assert wandb_dir(tmp_path / "flag") == tmp_path / "flag"


def test_nothing_defaults_to_the_package_location(tmp_path, no_overrides):
    """In a fresh process started elsewhere, every default is under that directory, not the package's."""
    code = ("from src.core.store import store_dir; from src.tracking import wandb_dir; "
            "from src.data_versioning import DEFAULT_DATA_DIR; import pathlib; "
            "print(store_dir()); print(wandb_dir()); print(DEFAULT_DATA_DIR.resolve())")
    env = {k: v for k, v in os.environ.items() if k not in ("MLOPS_STORE", "WANDB_DIR")}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True,
                         env={**env, "PYTHONPATH": str(ROOT)}).stdout.split()
    here = tmp_path.resolve()
    assert out == [str(here / ".mlops"), str(here), str(here / "DS2GROCERIES")]


def test_code_version_comes_from_the_packages_own_checkout_only(tmp_path, monkeypatch):
    import src.core.paths as paths
    from src.training.fitting import code_version

    if source_checkout() is not None:  # running from a clone or worktree: its HEAD
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
        assert code_version() == head.strip()
    # installed inside another repository (site-packages of a venv in a clone): no commit is claimed
    inside = tmp_path / "repo" / ".venv" / "site-packages"
    inside.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    monkeypatch.setattr(paths, "_PACKAGE_PARENT", inside)
    assert source_checkout() is None and code_version() is None


def test_the_sweep_config_default(tmp_path, monkeypatch):
    import src.core.paths as paths

    if source_checkout() is not None and (ROOT / "sweep_config.yaml").is_file():
        assert default_sweep_config() == ROOT / "sweep_config.yaml"
    monkeypatch.setattr(paths, "_PACKAGE_PARENT", tmp_path / "site-packages")
    assert default_sweep_config() == Path("sweep_config.yaml")  # read in the working directory
