"""Sweep creation under bad input (issue 25.9): absurd or interrupted grids, in-memory storage, parameter
ranges training refuses, duplicated YAML keys and huge values. Each is one error line and a documented exit
code, and nothing is left stored that an agent would run as a complete sweep."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pg import postgres_server, postgresql_url  # noqa: F401 (fixtures)
from src import sweep_runner as sr
from src.core.errors import MAX_LINE, ConfigError, GroceryError
from src.core.store import Store
from src.hpo.space import MAX_GRID_POINTS
from src.hpo.study import list_sweeps
from src.sweep_config import load_sweep_config
from src.training.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
HEAD = ("program: src/train_with_wandb.py\nmethod: grid\nmetric: {name: test_accuracy, goal: maximize}\n"
        "parameters:\n")


@pytest.fixture(autouse=True)
def _drop_log_handlers():
    """main() binds logging to the captured stderr of its test; unbind it afterwards."""
    yield
    for h in logging.root.handlers[:]:
        logging.root.removeHandler(h)


def sweep_yaml(tmp_path: Path, parameters: str, head: str = HEAD) -> Path:
    p = tmp_path / "sweep.yaml"
    p.write_text(head + parameters, encoding="utf-8")
    return p


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("INFO ")]  # progress logs are fine
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def stored_sweeps(url: str | None = None) -> tuple[list[str], list[str]]:
    """(the studies in ``url``, default the store's optuna.db; the sweeps the store records)."""
    import optuna

    store = Store()
    db = store.root / "optuna.db"
    studies = (optuna.get_all_study_names(url) if url else
               optuna.get_all_study_names(sr.default_storage_url(store)) if db.exists() else [])
    return sorted(studies), list_sweeps(store)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request) -> str | None:
    """The store's own optuna.db (None), or a throwaway PostgreSQL database (skips without a server)."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgresql_url")


GRID_80K = "  n_neighbors: {distribution: int_uniform, min: 1, max: 16000}\n  labeled_ratio: {values: [0.1, 0.2, 0.3, 0.4, 0.5]}\n"
GRID_12 = "  n_neighbors: {distribution: int_uniform, min: 1, max: 4}\n  labeled_ratio: {values: [0.1, 0.2, 0.3]}\n"


# -- grid size and atomic creation -----------------------------------------------------------------------
def test_an_absurd_grid_is_refused_with_its_size_and_the_limit_before_any_work(tmp_path, capsys):
    assert sr.main(["create", str(sweep_yaml(tmp_path, GRID_80K))]) == 2
    line = one_error_line(capsys)
    assert "grid of 80,000 points" in line and f"limit of {MAX_GRID_POINTS:,}" in line
    assert not (Store().root / "optuna.db").exists()  # nothing was created, not even the database
    cfg = yaml.safe_load(HEAD + "  n_neighbors: {distribution: int_uniform, min: 1, max: 1000000000000}\n")
    with pytest.raises(ConfigError, match="grid of 1,000,000,000,000 points"):  # counted, never listed
        sr.create_local_sweep(cfg)


def test_a_create_interrupted_while_queueing_leaves_no_sweep(tmp_path, monkeypatch, capsys, storage):
    import optuna

    flag = ["--storage", storage] if storage else []
    sr.create_local_sweep(yaml.safe_load(HEAD + "  labeled_ratio: {values: [0.1, 0.2]}\n"), storage=storage)  # kept
    before = stored_sweeps(storage)
    real, calls = optuna.Study.enqueue_trial, []

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", interrupted)
    assert sr.main(["create", str(sweep_yaml(tmp_path, GRID_12)), *flag]) == 130
    assert one_error_line(capsys) == "error: interrupted"
    assert stored_sweeps(storage) == before and len(before[0]) == 1  # none of the 4 queued points, no study, no record
    monkeypatch.setattr(optuna.Study, "enqueue_trial", real)
    assert sr.main(["create", str(sweep_yaml(tmp_path, GRID_12)), *flag, "-q"]) == 0  # the storage is still usable
    sweep = sr.open_sweep(capsys.readouterr().out.strip(), storage)
    assert sweep.study.user_attrs["grid_points"] == 12 and len(sweep.study.get_trials()) == 12


@pytest.mark.slow
def test_a_killed_create_leaves_no_sweep(tmp_path):
    """SIGKILL in the middle of queueing: the database drops the open transaction."""
    grid = sweep_yaml(tmp_path, "  n_neighbors: {distribution: int_uniform, min: 1, max: 1000}\n"
                                "  labeled_ratio: {values: [0.1, 0.2, 0.3, 0.4, 0.5]}\n")
    proc = subprocess.Popen([sys.executable, "src/sweep_runner.py", "create", str(grid), "--no-progress"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:
            if "queueing 5000 grid points" in line:
                time.sleep(1.0)  # some points are in
                break
        else:
            pytest.fail("create never started queueing")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert stored_sweeps() == ([], [])


# -- storage --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite:///file::memory:?uri=true"])
def test_an_in_memory_storage_is_one_error_line(tmp_path, capsys, url):
    cfg = sweep_yaml(tmp_path, "  labeled_ratio: {values: [0.1, 0.2]}\n")
    assert sr.main(["create", str(cfg), "--storage", url]) == ConfigError.exit_code == 2
    line = one_error_line(capsys)
    assert "in-memory database" in line and "agents cannot share the sweep" in line
    assert not Path(os.environ["MLOPS_STORE"]).exists()  # refused before the store was made
    with pytest.raises(ConfigError, match="in-memory"):
        sr.open_storage(url)


# -- parameter ranges: TrainConfig's rules are the sweep's ------------------------------------------------
@pytest.mark.parametrize("spec, value", [
    ("{distribution: int_uniform, min: -20, max: -5}", "-20"),
    ("{values: [5, 0]}", "0"),
    ("{distribution: q_uniform, min: -4, max: 12, q: 4}", "-4"),
])
def test_sweep_ranges_training_refuses_are_refused_at_create(tmp_path, capsys, spec, value):
    assert sr.main(["create", str(sweep_yaml(tmp_path, f"  n_neighbors: {spec}\n"))]) == 2
    line = one_error_line(capsys)
    assert f"parameter 'n_neighbors': {value}" in line and "n_neighbors must be a positive integer" in line
    assert stored_sweeps() == ([], [])


def test_train_config_refuses_what_the_training_flag_refuses(tmp_path, capsys):
    from src import train_with_wandb

    with pytest.raises(ConfigError, match="n_neighbors must be a positive integer, got -20"):
        TrainConfig(n_neighbors=-20).validated()
    assert TrainConfig(n_neighbors=1).validated().n_neighbors == 1
    # the CLI gives the same line, before any dataset is looked at (this folder does not exist)
    assert train_with_wandb.main(["--n-neighbors", "0", "--data-dir", str(tmp_path / "nowhere")]) == 2
    assert "n_neighbors must be a positive integer, got 0" in one_error_line(capsys)


# -- YAML that does not say what its author meant ----------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    (HEAD.replace("method: grid\n", "method: grid\nmethod: random\n") + "  labeled_ratio: {values: [0.1]}\n",
     "duplicate key 'method' at line 3 (first at line 2)"),
    (HEAD + "  n_neighbors: {values: [5]}\n  labeled_ratio: {values: [0.1]}\n  n_neighbors: {values: [6]}\n",
     "duplicate key 'n_neighbors' at line 7 (first at line 5)"),
    (HEAD.replace("method: grid", "run_cap: " + "9" * 5000) + "  n_neighbors: {values: [5]}\n",
     "an integer of 5,000 digits at line 2"),
])
def test_a_duplicated_yaml_key_is_refused_with_the_key_and_its_lines(tmp_path, capsys, text, message):
    p = tmp_path / "sweep.yaml"
    p.write_text(text, encoding="utf-8")
    assert sr.main(["create", str(p)]) == 2
    assert f"error: {p}: {message}" in one_error_line(capsys)
    assert stored_sweeps() == ([], [])


def test_a_key_twice_on_one_line_is_refused_but_a_merge_override_is_not(tmp_path):
    with pytest.raises(ConfigError, match=r"duplicate key 'values' at line 5, column 30 \(first at line 5, column 17\)"):
        load_sweep_config(sweep_yaml(tmp_path, "  n_neighbors: {values: [5], values: [6]}\n"))
    p = sweep_yaml(tmp_path, "  labeled_ratio: &ratios {values: [0.1, 0.2]}\n"
                             "  n_neighbors: {<<: *ratios, values: [5, 6]}\n")
    assert load_sweep_config(p)["parameters"]["n_neighbors"] == {"values": [5, 6]}  # the override wins, as in YAML


# -- error lines stay short whatever the user wrote -----------------------------------------------------------
BIG = "x" * 1_000_000


@pytest.mark.parametrize("text", [
    HEAD + f"  algorithm: {{values: [{BIG}]}}\n",  # quoted by the sweep check and again by training's message
    HEAD.replace("method: grid", f"method: {BIG}") + "  labeled_ratio: {values: [0.1]}\n",
    HEAD + f"  labeled_ratio: {{values: [0.1]}}\n? {BIG}\n: 1\n",  # an unknown top-level key (explicit: over 1024)
    HEAD + f"  ? {BIG}\n  : {{values: [1]}}\n",  # a parameter name
    HEAD + f"  labeled_ratio: {{distribution: {BIG}, min: 0.1, max: 0.2}}\n",
])
def test_a_huge_value_in_a_sweep_file_makes_a_short_error_line(tmp_path, capsys, text):
    p = tmp_path / "sweep.yaml"
    p.write_text(text, encoding="utf-8")
    assert sr.main(["create", str(p)]) == 2
    line = one_error_line(capsys)
    assert len(line) < 600 and "…" in line and "xxxxxxxx" in line


def test_every_error_line_is_bounded():
    line = str(GroceryError("bad: " + "y" * 100_000, hint="do this instead"))
    assert len(line) <= MAX_LINE + 60 and line.startswith("bad: yyy") and line.endswith("(do this instead)")
