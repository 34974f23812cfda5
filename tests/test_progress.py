"""Progress bars draw only on a terminal, and --no-progress / -q silence them everywhere."""

from __future__ import annotations

import fcntl
import importlib
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from src.core.progress import bar_disable, progress_bar

ROOT = Path(__file__).resolve().parents[1]
SYNTH = ["src/synth.py", "--classes", "2", "--train-per-class", "100", "--test-per-class", "0",
         "--image-size", "8"]  # 200 images: enough for a bar


def _synth(out: Path, *extra: str, tty: bool) -> bytes:
    """Run synth.py; return what it wrote on stderr (a pipe, or a pseudo-terminal)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, *SYNTH, "--out", str(out), *extra]
    if not tty:
        r = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        return r.stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    try:
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=follower)
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert p.wait(timeout=120) == 0
        return b"".join(chunks)
    finally:
        os.close(leader)


def redraws(err: bytes) -> int:
    """Carriage returns that redraw a line (a terminal turns every newline into \\r\\n)."""
    return err.replace(b"\r\n", b"\n").count(b"\r")


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path):
    err = _synth(tmp_path / "d", tty=False)
    assert b"\r" not in err and b"generating images" not in err
    assert len(list((tmp_path / "d").rglob("*.jpg"))) == 200


def test_a_terminal_gets_a_bar_unless_asked_not_to(tmp_path):
    assert redraws(_synth(tmp_path / "a", tty=True)) > 0  # the bar is alive where someone watches it
    assert redraws(_synth(tmp_path / "b", "--no-progress", tty=True)) == 0
    assert redraws(_synth(tmp_path / "c", "-q", tty=True)) == 0


def test_bar_disable_rules():
    assert bar_disable(False) is True
    assert bar_disable(True, total=10, minimum=50) is True
    assert bar_disable(True, total=50, minimum=50) is None  # None: tqdm draws only on a terminal
    with progress_bar(range(3), progress=True) as bar:  # pytest's stderr is not a terminal
        assert bar.disable and list(bar) == [0, 1, 2]


SCRIPTS = {  # a cheap, valid command line for each script
    "synth": ["--classes", "1", "--train-per-class", "1", "--test-per-class", "1", "--image-size", "8", "--out", "{tmp}/d"],
    "data_versioning": ["--list"],
    "inference_monitor": ["--alerts"],
    "model_registry": ["list"],
    "report": ["--out", "{tmp}/r.html"],
    "sweep_config": [str(ROOT / "sweep_config.yaml")],
    "sweep_runner": ["status", "no-such-sweep"],
    "train_with_wandb": ["--labeled-ratio", "7"],  # refused after parsing, before any work
    "labeling": ["issues", "--data-dir", "{tmp}/no-such-data"],
    "housekeeping": ["du", "--store", "{tmp}/no-such-store"],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_script_accepts_no_progress(script, tmp_path, capsys):
    main = importlib.import_module(f"src.{script}").main
    argv = [a.replace("{tmp}", str(tmp_path)) for a in SCRIPTS[script]]
    main([*argv, "--no-such-flag"])
    assert "unrecognized arguments" in capsys.readouterr().err  # the check below can fail
    main([*argv, "--no-progress"])
    assert "unrecognized arguments" not in capsys.readouterr().err


def test_every_script_is_covered():
    scripts = {p.stem for p in (ROOT / "src").glob("*.py")} - {"__init__", "predictor", "wandb_config"}
    assert scripts == set(SCRIPTS)
