"""Each project default is written once under ``src/`` and imported everywhere else (issue 26).

Read with ``ast`` (docstrings and comments may still mention a value; code and help texts may not):
the dataset folder name, the extractor's file name, the ``--store`` help and the W&B modes each have
one definition; drift's ``window`` and ``alpha`` get a literal default only in
:mod:`src.monitoring.settings`, from which batch monitoring, the live monitor, the server and the
``inference_monitor.py`` parsers take theirs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
TREES = {p.relative_to(SRC.parent).as_posix(): ast.parse(p.read_text(), str(p)) for p in sorted(SRC.rglob("*.py"))}


def _docstrings(tree: ast.Module) -> set[int]:
    nodes = (n for n in ast.walk(tree) if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)))
    return {id(n.body[0].value) for n in nodes
            if n.body and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def string_sites(text: str) -> list[str]:
    """``path:line`` of every string in code (docstrings left out) that contains ``text``."""
    out = []
    for path, tree in TREES.items():
        docs = _docstrings(tree)
        out += [f"{path}:{n.lineno}" for n in ast.walk(tree)
                if isinstance(n, ast.Constant) and isinstance(n.value, str) and text in n.value and id(n) not in docs]
    return out


@pytest.mark.parametrize("text,home", [
    ("DS2GROCERIES", "src/core/paths.py"),
    ("feature_extractor.pth", "src/core/paths.py"),
    ("local store directory", "src/core/cli.py"),  # STORE_HELP
])
def test_each_literal_is_written_once(text, home):
    sites = string_sites(text)
    assert len(sites) == 1 and sites[0].startswith(home + ":"), sites


def test_the_wandb_modes_are_listed_once():
    modes = {"online", "offline", "disabled"}
    sites = [f"{path}:{n.lineno}" for path, tree in TREES.items() for n in ast.walk(tree)
             if isinstance(n, (ast.Tuple, ast.List, ast.Set)) and len(n.elts) == len(modes)
             and {getattr(e, "value", None) for e in n.elts} == modes]
    assert len(sites) == 1 and sites[0].startswith("src/tracking/wandb_tracker.py:"), sites


def _literal(node) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


# where drift is configured (elsewhere ``alpha`` is a plot's transparency or label spreading's clamping)
DRIFT_CODE = ("src/monitoring/", "src/serving/", "src/inference_monitor.py")


def literal_defaults(name: str) -> list[str]:
    """``path:line`` where ``name`` (``window``, ``alpha``) gets a literal number as its default or value in
    :data:`DRIFT_CODE`: a parameter default, a class field, a ``name=`` keyword, or
    ``add_argument("--name", default=...)``."""
    out = []
    for path, tree in TREES.items():
        if not path.startswith(DRIFT_CODE):
            continue
        for n in ast.walk(tree):
            hits = []
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                a = n.args
                pos = a.posonlyargs + a.args
                hits += [d for arg, d in zip(pos[len(pos) - len(a.defaults):], a.defaults) if arg.arg == name]
                hits += [d for arg, d in zip(a.kwonlyargs, a.kw_defaults) if arg.arg == name and d is not None]
            elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name) and n.target.id == name:
                hits.append(n.value)
            elif isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in n.targets):
                hits.append(n.value)
            elif isinstance(n, ast.Call):
                hits += [k.value for k in n.keywords if k.arg == name]
                if any(isinstance(a, ast.Constant) and a.value == f"--{name}" for a in n.args):
                    hits += [k.value for k in n.keywords if k.arg == "default"]
            out += [f"{path}:{h.lineno}" for h in hits if _literal(h)]
    return out


@pytest.mark.parametrize("name", ["window", "alpha"])
def test_drift_defaults_are_written_once_in_the_monitoring_settings(name):
    sites = literal_defaults(name)
    assert len(sites) == 1 and sites[0].startswith("src/monitoring/settings.py:"), sites


def test_the_parsers_and_options_take_the_settings():
    from src.inference_monitor import build_parser, build_serve_parser
    from src.monitoring.batch import BatchOptions
    from src.monitoring.settings import DEFAULTS

    batch, serve = build_parser().parse_args([]), build_serve_parser().parse_args([])
    o = BatchOptions(model="m")
    assert (batch.window, batch.alpha) == (serve.window, serve.alpha) == (o.window, o.alpha) \
        == (DEFAULTS.window, DEFAULTS.alpha)
    assert (batch.test_dir, batch.n_samples) == (o.test_dir, o.n_samples)


def test_the_serve_flags_are_the_serve_options():
    import dataclasses

    from src.inference_monitor import build_serve_parser
    from src.serving.options import ServeOptions

    parser = build_serve_parser()
    parsed = vars(parser.parse_args([]))
    helps = {a.dest: a.help for a in parser._actions}
    for f in dataclasses.fields(ServeOptions):
        if f.name != "model":  # required in Python; the flag falls back to the last training's best model
            assert parsed[f.name] == f.default, f.name
        assert helps[f.name] == f.metadata["help"], f.name
    # and a run with every flag given builds the options it names
    o = ServeOptions(model="m", port=0, window=300, workers=2, access_log=True)
    args = ["--model", "m", "--port", "0", "--window", "300", "--workers", "2", "--access-log"]
    assert vars(parser.parse_args(args)) == {**parsed, **{k: getattr(o, k) for k in ("model", "port", "window",
                                                                                        "workers", "access_log")}}


def test_the_serve_parser_loads_no_web_framework():
    import subprocess
    import sys

    code = ("import sys; from src.inference_monitor import build_serve_parser; build_serve_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=SRC.parent, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_serve_options_keep_their_old_import_path():
    from src.serving.options import ServeOptions
    from src.serving.server import ServeOptions as old

    assert old is ServeOptions


def test_labeling_cli_default_strategy_is_suggests():
    """labeling.py spells its strategy choices itself (it imports the library lazily, so `--help` is instant);
    its default must still be the library's."""
    from src.curation.suggest import DEFAULT_STRATEGY, STRATEGIES
    from src.labeling import build_parser

    sub = next(a for a in build_parser()._actions if a.choices and "suggest" in a.choices)
    strategy = next(a for a in sub.choices["suggest"]._actions if a.dest == "strategy")
    assert strategy.default == DEFAULT_STRATEGY and sorted(strategy.choices) == sorted(STRATEGIES)
