"""Library calls leave the process alone: no matplotlib backend switch, no environment writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_confusion_png_keeps_the_callers_matplotlib_backend(tmp_path):
    code = (
        "import matplotlib; matplotlib.use('svg')\n"
        "from src.learning.evaluation import save_confusion_png\n"
        f"save_confusion_png([0, 1, 1], [0, 1, 0], ['a', 'b'], __import__('pathlib').Path(r'{tmp_path}') / 'cm.png')\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (tmp_path / "cm.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_tracked_run_writes_nothing_into_os_environ(monkeypatch):
    from src.tracking import Tracker

    for var in ("WANDB_SILENT", "WANDB_INIT_TIMEOUT", "WANDB_HTTP_TIMEOUT"):
        monkeypatch.delenv(var, raising=False)
    before = dict(os.environ)
    with Tracker("test", {"a": 1}, mode="offline") as t:
        t.log({"x": 1.0})
    after = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}  # wandb's own service handle
    assert after == {k: v for k, v in before.items() if k != "WANDB_SERVICE"}


def test_an_offline_sweep_hints_the_local_agent(capsys):
    from src.wandb_config import SWEEP_CONFIG, create_sweep

    sweep_id = create_sweep(SWEEP_CONFIG, mode="offline")
    said = capsys.readouterr().err  # printed, so a notebook shows it too
    assert f"python src/sweep_runner.py agent {sweep_id} --count" in said
    assert f"wandb agent {sweep_id}" not in said


def test_sweep_plots_keep_the_callers_backend_and_never_touch_pyplot(tmp_path):
    code = (
        "import sys, matplotlib; matplotlib.use('svg')\n"
        "import optuna, pathlib\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "study = optuna.create_study(direction='maximize', sampler=optuna.samplers.RandomSampler(seed=0))\n"
        "study.optimize(lambda t: t.suggest_float('x', 0, 1) + 0.1 * t.suggest_int('n', 1, 3), n_trials=6)\n"
        "from src.hpo.status import _save_plots\n"
        f"plots = _save_plots(study, pathlib.Path(r'{tmp_path}'))\n"
        "assert sorted(plots) == ['optimization_history', 'param_importances'], plots\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    for name in ("optimization_history", "param_importances"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
