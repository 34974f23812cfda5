"""The house rules, checked on the source with ``ast`` (no imports run):

- layers run one way: scripts (``src/*.py``) → stage packages (``src/<stage>/``) → ``src/core``;
  no library module imports a script, and core imports nothing above it;
- no import cycle among ``src`` modules (lazy imports inside functions count too);
- exactly one file under ``src/`` imports ``wandb``;
- no file under ``src/`` is over 400 lines;
- no stage package shadows the standard library or an installed distribution (``python src/x.py``
  puts ``src/`` first on ``sys.path``), nor a top-level script.

Each rule is also run on a copy of ``src/`` with a planted violation, so the test can fail.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_LINES = 400
WANDB_MODULE = "src.tracking.wandb_tracker"


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def collect(root: Path) -> dict[str, tuple[Path, ast.Module]]:
    return {module_name(p, root): (p, ast.parse(p.read_text(), str(p))) for p in sorted(root.rglob("*.py"))}


def imports_of(name: str, tree: ast.Module, known: set[str]) -> tuple[set[str], set[str]]:
    """(src modules imported, top-level external names imported) by one module, lazy imports included."""
    own, external = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".")[: len(name.split(".")) - node.level + (1 if name in known and _is_pkg(name, known) else 0)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for t in targets:
            if t == "src" or t.startswith("src."):
                while t and t not in known:
                    t = t.rpartition(".")[0]
                if t and t != "src":
                    own.add(t)
            elif t:
                external.add(t.split(".")[0])
    own.discard(name)
    return own, external


def _is_pkg(name: str, known: set[str]) -> bool:
    return any(k.startswith(name + ".") for k in known)


def check(root: Path) -> list[str]:
    mods = collect(root)
    known = set(mods)
    scripts = {n for n, (p, _) in mods.items() if p.parent == root and p.name != "__init__.py"}
    graph, problems, wandb_users = {}, [], []
    for name, (path, tree) in mods.items():
        own, external = imports_of(name, tree, known)
        graph[name] = own
        if "wandb" in external:
            wandb_users.append(name)
        lines = len(path.read_text().splitlines())
        if lines > MAX_LINES:
            problems.append(f"{name}: {lines} lines (max {MAX_LINES})")
        if name not in scripts and name != "src":
            for target in sorted(own):
                if target in scripts:
                    problems.append(f"library module {name} imports the script {target}")
                elif name.startswith("src.core") and not target.startswith("src.core"):
                    problems.append(f"core module {name} imports {target} from a layer above")
    if wandb_users != [WANDB_MODULE]:
        problems.append(f"wandb must be imported by {WANDB_MODULE} only, found: {', '.join(wandb_users) or 'none'}")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    for pkg in sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        if (root / f"{pkg}.py").exists():
            problems.append(f"package src/{pkg}/ shadows the script src/{pkg}.py")
        if pkg in sys.stdlib_module_names or _installed(pkg):
            problems.append(f"package src/{pkg}/ shadows the importable module {pkg!r} when src/ is on sys.path")
    return problems


def _installed(name: str) -> bool:
    saved = list(sys.path)
    try:
        sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() not in (SRC, SRC.parent)]
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
    finally:
        sys.path[:] = saved


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One example cycle per strongly connected component larger than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp) + [sorted(comp)[0]])

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_main_follows_the_rules():
    assert check(SRC) == []


@pytest.fixture
def copy_of_src(tmp_path) -> Path:
    dst = tmp_path / "src"
    shutil.copytree(SRC, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def plant(root: Path, rel: str, code: str) -> None:
    path = root / rel
    path.write_text(path.read_text() + "\n" + code + "\n")


def test_a_planted_cycle_fails(copy_of_src):
    plant(copy_of_src, "core/errors.py", "def _f():\n    from src.core.store import Store\n")
    assert any(p.startswith("import cycle:") and "src.core.errors" in p for p in check(copy_of_src))


def test_a_planted_library_to_script_import_fails(copy_of_src):
    plant(copy_of_src, "training/pipeline.py", "from src.model_registry import register_model")
    assert "library module src.training.pipeline imports the script src.model_registry" in check(copy_of_src)


def test_a_second_wandb_importer_fails(copy_of_src):
    plant(copy_of_src, "monitoring/monitor.py", "def _f():\n    import wandb\n")
    assert any("wandb must be imported by" in p and "src.monitoring.monitor" in p for p in check(copy_of_src))


def test_core_importing_a_stage_fails(copy_of_src):
    plant(copy_of_src, "core/images.py", "from src.training.config import TrainConfig")
    assert "core module src.core.images imports src.training.config from a layer above" in check(copy_of_src)


def test_a_long_file_and_a_shadowing_package_fail(copy_of_src):
    plant(copy_of_src, "data/scan.py", "\n" * MAX_LINES)
    (copy_of_src / "json").mkdir()
    (copy_of_src / "json" / "__init__.py").write_text("")
    problems = check(copy_of_src)
    assert any(p.startswith("src.data.scan:") and "max 400" in p for p in problems)
    assert "package src/json/ shadows the importable module 'json' when src/ is on sys.path" in problems


def test_documented_imports_work():
    from src.data_versioning import create_dataset_artifact, load_dataset_artifact  # noqa: F401
    from src.inference_monitor import InferenceMonitor  # noqa: F401
    from src.model_registry import load_model_from_registry, register_model  # noqa: F401
    from src.predictor import Predictor  # noqa: F401
    from src.train_with_wandb import train_with_wandb  # noqa: F401
    from src.wandb_config import DEFAULT_CONFIG, SWEEP_CONFIG, WANDB_ENTITY, WANDB_PROJECT, create_sweep  # noqa: F401

    assert WANDB_PROJECT == "grocery-classification-mlops" and WANDB_ENTITY is None
    assert SWEEP_CONFIG["metric"]["name"] and DEFAULT_CONFIG["labeled_ratio"] == 1.0  # every label by default
