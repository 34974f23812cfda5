"""A command's process leaves its objects to the operating system at exit (no final garbage collection)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CODE = """
import atexit, gc, sys
sys.path.insert(0, sys.argv[1])
# registered before the command runs, so it runs after the command's own exit handlers
atexit.register(lambda: print("frozen at exit:", gc.get_freeze_count() > 0, flush=True))
from src.core.cli import run_cli
import argparse
print("frozen before exit:", gc.get_freeze_count() > 0)
raise SystemExit(run_cli(argparse.ArgumentParser(), [], lambda args: 3))
"""


def test_a_command_skips_the_final_collection_and_keeps_its_exit_code():
    out = subprocess.run([sys.executable, "-c", CODE, str(ROOT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3, out.stderr
    assert out.stdout.splitlines() == ["frozen before exit: False", "frozen at exit: True"]


def test_the_hook_is_registered_once(monkeypatch):
    import argparse

    from src.core import cli

    calls = []
    monkeypatch.setattr(cli.atexit, "register", calls.append)
    monkeypatch.setattr(cli, "_exit_hook", [])
    for _ in range(3):
        assert cli.run_cli(argparse.ArgumentParser(), [], lambda args: None) == 0
    assert calls == [cli._skip_final_collection]
