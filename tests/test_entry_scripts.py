"""`python CHECKOUT/src/x.py` runs that checkout's code, even where the venv's editable install points elsewhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
SCRIPTS = sorted(p.name for p in SRC.glob("*.py") if 'if __name__ == "__main__"' in p.read_text())


@pytest.fixture(scope="module")
def other_checkout(tmp_path_factory) -> Path:
    """A copy of src/ elsewhere whose package announces itself when imported."""
    root = tmp_path_factory.mktemp("other-checkout")
    shutil.copytree(SRC, root / "src", ignore=shutil.ignore_patterns("__pycache__", "grocery_sample"))
    init = root / "src" / "__init__.py"
    init.write_text(init.read_text() + '\nimport sys as _sys\nprint("other-checkout", file=_sys.stderr)\n')
    return root


def test_every_entry_script_is_covered():
    assert len(SCRIPTS) >= 10 and "train_with_wandb.py" in SCRIPTS


@pytest.mark.parametrize("script", ["train_with_wandb.py", "labeling.py", "synth.py"])
def test_a_script_run_from_another_checkout_imports_that_checkouts_package(other_checkout, script, tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, str(other_checkout / "src" / script), "--help"], capture_output=True,
                         text=True, cwd=tmp_path, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "other-checkout" in out.stderr


def test_each_script_puts_its_checkout_first_before_importing_src():
    for name in SCRIPTS:
        text = (SRC / name).read_text()
        guard = text.find("\nif not __package__:")
        assert 0 < guard < re.search(r"(?m)^(from|import) src\b", text).start(), name
