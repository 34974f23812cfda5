"""The original guide's own commands and settings, as a W&B user types them (issue 27).

The guide names ``models/*.pkl`` files, tells users to edit ``src/wandb_config.py``, and calls
``create_sweep``/``train_with_wandb`` from notebooks; each works as written where safety allows.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    for h in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(h)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from helpers import train_tiny_models

    tmp = tmp_path_factory.mktemp("guide")
    data = train_tiny_models(tmp, test_per_class=3)
    return {"data": data, "models": tmp / "models"}


def _no_pickle_opened(monkeypatch):
    """Any attempt to read a .pkl file fails the test."""
    real = Path.read_bytes

    def read_bytes(self):
        assert self.suffix != ".pkl", f"{self} was opened"
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)


# -- 3. the guide's .pkl commands ----------------------------------------------------------
def test_guide_register_command_with_pkl_uses_the_skops_file(trained, capsys, monkeypatch):
    from src.model_registry import main

    _no_pickle_opened(monkeypatch)
    pkl = trained["models"] / "label_spreading_model.pkl"
    assert not pkl.exists()
    rc = main(["register", str(pkl), "--name", "label-spreading-classifier", "--accuracy", "0.85", "--f1", "0.84",
               "--wandb-mode", "disabled"])
    out, err = capsys.readouterr()
    assert rc == 0 and "registered label-spreading-classifier:v0" in out
    [notice] = [line for line in err.splitlines() if ".pkl" in line]
    assert "label_spreading_model.skops" in notice and "not opened" in notice


def test_guide_register_model_call_with_best_model_pkl(trained, monkeypatch, caplog):
    from src.model_registry import register_model

    _no_pickle_opened(monkeypatch)
    with caplog.at_level(logging.WARNING):
        res = register_model(model_path=str(trained["models"] / "best_model.pkl"), model_name="best",
                             metrics={"accuracy": 0.85, "f1": 0.84}, aliases=["staging"], wandb_mode="disabled")
    assert res["created"] and res["metadata"]["source_path"].endswith("best_model.skops")
    assert [r.getMessage() for r in caplog.records if "best_model.pkl" in r.getMessage()] == [
        f"using {trained['models'] / 'best_model.skops'} for best_model.pkl: models are .skops files now "
        "(the .pkl is not opened)"]


def test_guide_monitor_command_with_pkl(trained, capsys, monkeypatch):
    from src.inference_monitor import main

    _no_pickle_opened(monkeypatch)
    rc = main(["--model-path", str(trained["models"] / "label_spreading_model.pkl"), "--test-dir",
               str(trained["data"] / "test"), "--n-samples", "6", "--wandb-mode", "disabled", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 0
    assert len([line for line in err.splitlines() if "label_spreading_model.pkl" in line]) == 1


def test_pkl_without_a_skops_sibling_names_both_ways_out(tmp_path, capsys):
    from src.model_registry import main

    rc = main(["register", str(tmp_path / "models" / "old_model.pkl"), "--name", "x", "--accuracy", "0.8",
               "--f1", "0.8", "--wandb-mode", "disabled"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and "old_model.skops" in line and "convert" in line


def test_a_real_old_pickle_beside_no_skops_is_refused_unopened(tmp_path, capsys):
    from src.model_registry import main

    (tmp_path / "old_model.pkl").write_bytes(b"\x80\x04\x95" + b"\x00" * 20)
    rc = main(["register", str(tmp_path / "old_model.pkl"), "--name", "x", "--accuracy", "0.8", "--f1", "0.8",
               "--wandb-mode", "disabled"])
    [line] = capsys.readouterr().err.strip().splitlines()
    assert rc == 3 and "convert" in line


# -- 4. editing src/wandb_config.py ---------------------------------------------------------
def _edited_config(tmp_path, monkeypatch, project_line: str) -> None:
    from src.tracking import settings

    edited = tmp_path / "wandb_config.py"
    text = (ROOT / "src" / "wandb_config.py").read_text()
    assert 'WANDB_PROJECT = "grocery-classification-mlops"' in text
    edited.write_text(text.replace('WANDB_PROJECT = "grocery-classification-mlops"', project_line))
    monkeypatch.setattr(settings, "CONFIG_FILE", edited)
    monkeypatch.delitem(sys.modules, "src.wandb_config", raising=False)  # as in a fresh `python src/x.py`


def test_editing_wandb_config_changes_the_project_of_the_next_run(tmp_path, monkeypatch):
    from src.tracking import Tracker

    _edited_config(tmp_path, monkeypatch, 'WANDB_PROJECT = "edited-proj"')
    t = Tracker("probe", mode="offline")
    try:
        assert t.run.project == "edited-proj"
    finally:
        t.finish()
    monkeypatch.setenv("WANDB_PROJECT", "from-env")  # the environment still overrides
    t = Tracker("probe", mode="offline")
    try:
        assert t.run.project == "from-env"
    finally:
        t.finish()


def test_wandb_config_values_and_notebook_edits_are_the_defaults(monkeypatch):
    import src.wandb_config as wc
    from src.tracking.settings import default_entity, default_project

    assert (wc.WANDB_PROJECT, wc.WANDB_ENTITY) == ("grocery-classification-mlops", None)
    assert (default_project(), default_entity()) == ("grocery-classification-mlops", None)
    monkeypatch.setattr(wc, "WANDB_PROJECT", "notebook-proj")
    monkeypatch.setattr(wc, "WANDB_ENTITY", "my-team")
    assert (default_project(), default_entity()) == ("notebook-proj", "my-team")


# -- 5. create_sweep offline ---------------------------------------------------------------
def test_create_sweep_offline_prints_the_local_agent_command(capsys):
    from src.wandb_config import SWEEP_CONFIG, create_sweep

    sweep_id = create_sweep(SWEEP_CONFIG)
    err = capsys.readouterr().err
    assert f"python src/sweep_runner.py agent {sweep_id} --count" in err
    assert f"wandb agent {sweep_id}" not in err.replace("`wandb agent`", "")


# -- 7. help text on every flag --------------------------------------------------------------
def _actions(parser: argparse.ArgumentParser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                yield from _actions(sub)
        elif not isinstance(a, argparse._HelpAction):
            yield parser.prog, a


def _synth_parser() -> argparse.ArgumentParser:
    from src import synth

    seen = {}

    def capture(parser, argv, command, normalize=None, **_):
        seen["parser"] = parser
        return 0

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synth, "run_cli", capture)
        synth.main(["--help"])
    return seen["parser"]


def test_every_flag_of_synth_and_sweep_runner_has_help():
    from src.sweep_runner import build_parser

    missing = [f"{prog} {a.option_strings or a.dest}" for p in (_synth_parser(), build_parser())
               for prog, a in _actions(p) if not a.help]
    assert missing == []


def test_synth_json_is_json(tmp_path, capsys):
    import json

    from src.synth import main

    assert main(["--out", str(tmp_path / "d"), "--classes", "2", "--train-per-class", "1", "--test-per-class", "1",
                 "--image-size", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"out": str(tmp_path / "d")}


# -- 8. train_with_wandb's signature ---------------------------------------------------------
def test_train_with_wandb_signature_lists_every_option_with_its_default():
    from dataclasses import fields

    from src.train_with_wandb import TrainConfig, train_with_wandb

    params = inspect.signature(train_with_wandb).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert {f.name: f.default for f in fields(TrainConfig)} == {n: p.default for n, p in params.items()
                                                                if n != "epoch_callback"}
    assert "labeled_ratio: float | None = None" in str(inspect.signature(train_with_wandb))


def test_a_misspelt_option_names_the_one_meant():
    from src.train_with_wandb import train_with_wandb

    with pytest.raises(TypeError, match="did you mean 'labeled_ratio'"):
        train_with_wandb(labled_ratio=0.2)
