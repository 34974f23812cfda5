"""benchmarks/scarce_labels.py's aggregation: issue 15's done-when read both ways, from saved rows."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "scarce_labels.py"


@pytest.fixture()
def bench(capsys):
    """The script's main(), in process: returns (returncode, stdout, stderr) like a run would."""
    spec = importlib.util.spec_from_file_location("scarce_labels", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(*args):
        rc = module.main([str(a) for a in args])
        out = capsys.readouterr()
        return SimpleNamespace(returncode=rc, stdout=out.out, stderr=out.err)

    return run


def _rows(path: Path, picks, baselines, ratio=0.05, run="on") -> Path:
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines += [json.dumps({"run": run, "ratio": ratio, "seed": i, "best_test": p, "baseline_test": b, "seconds": 10.0})
              for i, (p, b) in enumerate(zip(picks, baselines))]
    lines.append(json.dumps({"aggregate": []}))  # an earlier run's last line is skipped
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_done_when_holds_as_standard_deviations_but_not_as_ranges(tmp_path, bench):
    # gains 0.02 / 0.015 / 0.01: mean 0.015; sd: pick 0.01, baseline 0.005, gain 0.005; range: pick 0.02
    _rows(tmp_path / "rows.jsonl", [0.9, 0.9], [0.9, 0.9], run="strong")  # another run's rows stay apart
    r = bench("--rows", _rows(tmp_path / "rows.jsonl", [0.975, 0.965, 0.955], [0.955, 0.95, 0.945]))
    assert r.returncode == 0, r.stderr
    on, other = json.loads(r.stdout.splitlines()[-1])["aggregate"]
    assert other["run"] == "strong" and other["draws"] == 2 and other["gain"]["mean"] == 0
    agg = on
    assert agg["draws"] == 3 and agg["gain"]["per_draw"] == pytest.approx([0.02, 0.015, 0.01])
    assert agg["best_test"]["sd"] == pytest.approx(0.01) and agg["best_test"]["spread"] == pytest.approx(0.02)
    dw = agg["done_when"]
    assert dw["margin"] == pytest.approx(0.015)
    assert dw["holds_as_sd"] and dw["largest_sd"] == pytest.approx(0.01)
    assert not dw["holds_as_spread"] and dw["largest_spread"] == pytest.approx(0.02)


def test_done_when_fails_both_ways_when_the_gain_is_noise(tmp_path, bench):
    r = bench("--rows", _rows(tmp_path / "rows.jsonl", [0.96, 0.95, 0.97], [0.955, 0.955, 0.96]))
    dw = json.loads(r.stdout.splitlines()[-1])["aggregate"][0]["done_when"]
    assert not dw["holds_as_sd"] and not dw["holds_as_spread"]


@pytest.mark.parametrize("content, why", [
    (None, "cannot read"),
    ("not json\n", "cannot read"),
    ('{"ratio": 0.05}\n', "no rows of this benchmark"),
    ("[1, 2]\n3\n", "no rows of this benchmark"),
    ("", "no rows of this benchmark"),
])
def test_bad_rows_file_is_one_line_error(tmp_path, bench, content, why):
    path = tmp_path / "rows.jsonl"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    r = bench("--rows", path)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and why in r.stderr


def test_data_or_rows_is_required():
    r = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--data is required" in r.stderr
