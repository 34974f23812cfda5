"""The HTML report rendered by a real browser (headless Chromium; skipped where none can be had).

The store holds one of everything the page shows: a training run, a dataset version, a registered
model, a local grid sweep whose trials are training runs, and a monitoring session with an alert.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import make_image_folder
from sweep_fakes import fake_objective
from test_report import fake_results

from src.core.store import Store
from src.reporting.html import SECTIONS

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: apt-get install chromium; "
                                                          ".ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]? ?(.*)")


def chromium(tmp_path: Path, page: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)


def render(tmp_path: Path, page: Path) -> tuple[Path, str, list[str]]:
    """(screenshot, DOM after scripts ran, console messages) of ``page``."""
    png = tmp_path / f"{page.stem}.png"
    shot = chromium(tmp_path, page, f"--screenshot={png}", "--window-size=1280,2000")
    dom = chromium(tmp_path, page, "--dump-dom")
    assert png.is_file(), shot.stderr[-2000:]
    console = [m.group(1) for line in (shot.stderr + dom.stderr).splitlines() if (m := CONSOLE.search(line))]
    return png, dom.stdout, console


def colours(png: Path) -> int:
    from PIL import Image

    with Image.open(png) as im:
        return len(im.convert("RGB").getcolors(maxcolors=1 << 20) or [])


def full_store(tmp_path: Path) -> Store:
    from test_model_registry import make_bundle, reg

    from src.data_versioning import create_dataset_artifact
    from src.hpo.agent import run_agent
    from src.hpo.study import create_local_sweep
    from src.learning.evaluation import save_confusion_png
    from src.monitoring import records
    from src.training.runs import record_run

    store = Store()
    create_dataset_artifact(make_image_folder(tmp_path / "d"), "groceries", store=store, wandb_mode="disabled")
    models = tmp_path / "models"
    models.mkdir()
    save_confusion_png([0, 1, 1], [0, 1, 0], ["a", "b"], models / "label_spreading_confusion_matrix.png")
    record_run(store, fake_results(models), name="first", files_dir=models)
    (models / "label_spreading_confusion_matrix.png").unlink()  # the page shows the stored copy
    cfg = {"program": "src/train_with_wandb.py", "method": "grid", "name": "ratio grid",
           "metric": {"name": "test_accuracy", "goal": "maximize"},
           "parameters": {"labeled_ratio": {"values": [0.1, 0.2, 0.3]}, "fine_tune_epochs": {"value": 2}}}
    sweep_id = create_local_sweep(cfg, store=store)

    def trial(params, epoch_callback, ctx):  # a trial records a training run, as training does
        value = fake_objective(params, epoch_callback, ctx)
        results = fake_results(models)
        results["run"]["id"] = f"trialrun{ctx.number}"
        record_run(store, results, name=ctx.run_name, group=ctx.sweep_name, tags=["sweep", ctx.sweep_id])
        return value

    run_agent(sweep_id, objective=trial, store=store)
    reg(make_bundle(tmp_path / "m", 0, accuracy=0.9), aliases=["production"])
    st = records.open_monitor_store(store)
    session = records.start_session(st, "label-spreading-classifier:production", "d" * 64)
    records.add_predictions(st, [(session, 1.0, "x.png", "e" * 64, "a", 0.9, 12.0, 10.0, "a", [0.1] * 8)])
    records.finish_session(st, session, {"monitor/samples": 1, "monitor/accuracy": 1.0,
                                         "latency": {"p50_ms": 12.0}, "drift": {"is_drift": False}}, None)
    records.add_alert(st, session, "WARN", "drift", "feature drift 0.31 above 0.25", {})
    return store


def test_report_renders_in_chromium(tmp_path):
    from src.report import build_report

    page = build_report(tmp_path / "report.html", full_store(tmp_path))
    png, dom, console = render(tmp_path, page)
    assert console == []
    assert colours(png) > 50  # text, tables, tinted rows and embedded plots, not a blank page
    for title in SECTIONS:
        assert f">{title}</h2>" in dom
    assert "could not read" not in dom and "No training runs" not in dom and "No local sweeps" not in dom
    assert "Registry is empty" not in dom and "No monitoring sessions" not in dom
    training = dom.split(">Dataset versions</h2>")[0]
    assert "Latest training run #1 (first)" in training and "trialrun" not in training  # trials are not runs
    assert "label_spreading confusion matrix" in training and "data:image/png;base64," in training
    sweeps = dom.split(">Sweeps</h2>")[1].split(">Monitoring</h2>")[0]
    assert "3 complete" in sweeps and all(f"trialrun{n}" in sweeps for n in range(3))
    assert "{" not in re.sub(r"<style>.*?</style>", "", dom, flags=re.S)  # no dict printed raw
    dates = re.findall(r"\d{4}-\d\d-\d\d[ T][\d:]+[^<]*?(?=<)", dom)
    assert dates and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", d) for d in dates), set(dates)


def test_console_errors_and_blank_pages_are_caught(tmp_path):
    """The checks above can fail: a script error is seen, a blank page has one colour."""
    page = tmp_path / "bad.html"
    page.write_text("<!doctype html><title>x</title><script>missingFunction()</script>")
    png, _, console = render(tmp_path, page)
    assert any("missingFunction" in c for c in console)
    assert colours(png) == 1
