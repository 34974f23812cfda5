"""Runs a W&B user recognises, and output that says only what matters (issue 27.6-7)."""

from __future__ import annotations

import glob
import logging
import os
import sys
import time
import types
from pathlib import Path

import pytest

from wandb_records import read_run


@pytest.fixture(autouse=True)
def _reset_logging():
    yield
    for h in logging.getLogger().handlers[:]:
        logging.getLogger().removeHandler(h)


def _offline_runs() -> list[str]:
    return sorted(glob.glob(str(Path(os.environ["WANDB_DIR"]) / "wandb" / "offline-run-*")))


def _bundle(folder: Path) -> Path:
    from sklearn.datasets import make_blobs
    from sklearn.linear_model import LogisticRegression

    from src.core.store import sha256_file
    from src.learning.bundles import save_model_bundle

    folder.mkdir(parents=True, exist_ok=True)
    ext = folder / "feature_extractor.pth"
    ext.write_bytes(b"dummy extractor")
    X, y = make_blobs(n_samples=30, centers=3, n_features=4, random_state=0)
    save_model_bundle(folder / "m_model.skops", {
        "algorithm": "label_spreading", "classifier": LogisticRegression(max_iter=200).fit(X, y),
        "class_names": ["apple", "milk", "bread"], "extractor_digest": sha256_file(ext), "preprocessing": {},
        "metrics": {"test_accuracy": 0.9, "f1_score": 0.89}})
    return folder / "m_model.skops"


# -- 6. a command that changes nothing opens no run; an interrupted run is not "finished" -----------
def test_registering_again_with_nothing_new_opens_no_run(tmp_path, capsys):
    from src.model_registry import main

    model = _bundle(tmp_path / "models")
    assert main(["register", str(model), "--name", "m", "--alias", "staging"]) == 0
    assert len(_offline_runs()) == 1
    assert main(["register", str(model), "--name", "m", "--alias", "staging"]) == 0  # the same version, same alias
    assert main(["register-all", "--models-dir", str(tmp_path / "nothing-here")]) == 3  # refused before any run
    assert main(["promote", "m", "--to-alias", "staging"]) == 0  # already there
    assert len(_offline_runs()) == 1
    assert main(["register", str(model), "--name", "m", "--alias", "production"]) == 0  # a real change: a run
    assert len(_offline_runs()) == 2


def test_a_failed_registry_command_marks_its_run_failed(tmp_path, monkeypatch):
    from src.registry import mirror
    from src.model_registry import main

    def boom(*a, **k):
        raise KeyboardInterrupt

    model = _bundle(tmp_path / "models")
    monkeypatch.setattr(mirror, "record_link", boom)  # interrupted once the artifact was logged
    assert main(["register", str(model), "--name", "m"]) == 130
    [run] = _offline_runs()
    assert read_run(run)["exit_code"] == 130


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from helpers import train_tiny_models

    tmp = tmp_path_factory.mktemp("runs")
    data = train_tiny_models(tmp, test_per_class=3)
    return {"data": data, "model": tmp / "models" / "label_spreading_model.skops"}


def test_an_interrupted_monitor_is_not_a_finished_run(trained, monkeypatch, capsys):
    from src.inference_monitor import InferenceMonitor, main

    real, seen = InferenceMonitor.predict, []

    def predict(self, *a, **k):
        if len(seen) == 3:
            raise KeyboardInterrupt
        seen.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(InferenceMonitor, "predict", predict)
    rc = main(["--model-path", str(trained["model"]), "--test-dir", str(trained["data"] / "test"), "--no-progress"])
    assert rc == 130
    [run] = _offline_runs()
    assert read_run(run)["exit_code"] == 130  # W&B shows it failed, not finished with 3 of 12 samples


def test_runs_have_console_output_and_system_metrics_by_default(tmp_path):
    """In a process of its own, as a user's command is (pytest swaps sys.stdout between tests, which W&B's
    console capture does not follow)."""
    import subprocess

    code = ("from src.tracking import Tracker\n"
            "t = Tracker('probe', mode='offline')\n"
            "print('a line for the Logs tab', flush=True)\n"
            "s = t.run.settings\n"
            "print('SETTINGS', s.console, s.x_disable_stats, flush=True)\n"
            "t.finish()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "WANDB_SILENT": "true"})
    assert out.returncode == 0, out.stderr
    [settings] = [line.split()[1:] for line in out.stdout.splitlines() if line.startswith("SETTINGS")]
    assert settings[0] != "off" and settings[1] == "False"
    [run] = _offline_runs()
    record = read_run(run)
    assert record["exit_code"] == 0 and record["record_kinds"].get("stats", 0) >= 1  # the System tab
    assert "a line for the Logs tab" in Path(run, "files", "output.log").read_text()


def test_wandb_console_off_is_honoured(monkeypatch):
    from src.tracking import Tracker

    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("WANDB_X_DISABLE_STATS", "true")
    t = Tracker("probe", mode="offline")
    settings = t.run.settings
    t.finish()
    assert settings.console == "off" and settings.x_disable_stats


# -- 7. noise and silence ----------------------------------------------------------------------
def test_third_party_info_is_shown_only_with_verbose(capsys):
    import argparse

    from src.core.cli import add_common_flags, run_cli

    def command(args):
        logging.getLogger().info("Increased scale[0] for weight `w` by ratio 1.5")  # onnxruntime's way
        logging.getLogger("optuna.study").info("a trial finished")
        logging.getLogger("src.training.pipeline").info("our own progress line")
        logging.getLogger("PIL").warning("a library warning")
        return 0

    p = argparse.ArgumentParser()
    add_common_flags(p)
    assert run_cli(p, [], command) == 0
    err = capsys.readouterr().err
    assert "our own progress line" in err and "a library warning" in err
    assert "Increased scale" not in err and "a trial finished" not in err
    assert run_cli(p, ["-v"], command) == 0
    assert "Increased scale" in capsys.readouterr().err


def test_a_default_training_log_is_readable(tmp_path, capsys):
    """int8 extraction (onnxruntime logs 74 `INFO root: Increased scale…` lines) and one fine-tune epoch."""
    from src.data.synth import generate_dataset
    from src.train_with_wandb import main

    data = generate_dataset(tmp_path / "d", n_classes=3, train_per_class=10, test_per_class=3, image_size=32, seed=1,
                            progress=False)
    assert main(["--data-dir", str(data), "--models-dir", str(tmp_path / "m"), "--algorithms", "label_spreading",
                 "--fine-tune-epochs", "1", "--pseudo-finetune-epochs", "0", "--n-neighbors", "3",
                 "--image-size", "32", "--runtime", "onnx-int8", "--labeled-ratio", "0.5"]) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(("INFO", "DEBUG"))]
    assert lines and all(line.split()[1].startswith("src.") for line in lines), lines
    [epoch] = [line for line in lines if "fine-tune epoch 1/1" in line]
    assert "{" not in epoch and epoch.split("loss ")[1][:6].replace(".", "").isdigit()
    assert len(epoch.split("loss ")[1].split(",")[0]) == 6  # 4 decimals, not 16 digits
    saved = [line for line in err.splitlines() if "offline" in line and "wandb sync" in line]
    assert any("dataset-version run" in line for line in saved) and any("train run" in line for line in saved)


def test_quiet_silences_the_offline_run_line(tmp_path, capsys):
    from src.model_registry import main

    assert main(["register", str(_bundle(tmp_path / "models")), "--name", "m", "-q"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "registered m:v0" in out


def test_progress_bars_are_drawn_in_a_notebook(monkeypatch):
    from src.core.progress import bar_disable, progress_bar

    assert bar_disable() is None  # a terminal decides (pytest: not one)
    kernel = types.SimpleNamespace(kernel=object())
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: kernel))
    assert bar_disable() is False and bar_disable(progress=False) is True
    bar = progress_bar(range(3), progress=True)
    assert not bar.disable
    bar.close()


def test_image_tables_store_photos_as_jpeg_and_keep_other_images_as_they_are(tmp_path):
    """PIL photos (RGB, grey) go to W&B as JPEG (PNG-encoding them was 1.7 s of a training); images with
    transparency stay PNG and a path is copied as the file it is."""
    from PIL import Image

    from src.tracking import Tracker

    Image.new("RGBA", (20, 20), (1, 2, 3, 4)).save(tmp_path / "a.png")
    t = Tracker("probe", mode="offline")
    rows = [["rgb", Image.new("RGB", (20, 20), (200, 10, 10))], ["grey", Image.new("L", (20, 20), 90)],
            ["rgba", Image.new("RGBA", (20, 20), (1, 2, 3, 4))], ["path", str(tmp_path / "a.png")]]
    t.image_table("samples", ["kind", "image"], rows, image_col=1)
    t.finish()
    [run] = _offline_runs()
    [files] = [f for name, f in read_run(run)["artifact_files"].items() if "samples" in name]  # the run table
    media = sorted(Path(f).suffix for f in files if f.startswith("media/images/"))
    assert media == [".jpg", ".jpg", ".png", ".png"], files
