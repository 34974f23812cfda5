"""The house rules, checked on the source with ``ast`` (no imports run):

- layers run one way: scripts (``src/*.py``) → stage packages (``src/<stage>/``) → ``src/core``;
  no library module imports a script, and core imports nothing above it;
- no import cycle among ``src`` modules (lazy imports inside functions count too);
- no loop among packages either (``src/<stage>/`` as one node, each script as its own): if any module
  of ``serving`` imports ``monitoring``, no module of ``monitoring`` may import ``serving``, even lazily;
- no module imports another module's private name (``from src.x.y import _z``), whether across packages or
  inside one: what a module shares gets a public name;
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


def private_imports(name: str, path: Path, tree: ast.Module) -> list[str]:
    """``from src.x.y import _z`` (lazy ones included) in one module: each a private name of another module."""
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            parts = name.split(".")
            pkg = parts[: len(parts) - node.level + (1 if path.name == "__init__.py" else 0)]
            base = ".".join(pkg + ([base] if base else []))
        if base != "src" and not base.startswith("src."):
            continue
        out += [f"{name} imports the private name {a.name} from {base}" for a in node.names
                if a.name.startswith("_") and not (a.name.startswith("__") and a.name.endswith("__"))]
    return out


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
        problems += private_imports(name, path, tree)
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
    problems += package_loops(graph, root)
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


def package_of(name: str, root: Path) -> str:
    """``src.<stage>`` for a module of a stage package; a script (or ``src``) is its own node."""
    parts = name.split(".")
    return f"src.{parts[1]}" if len(parts) > 1 and (root / parts[1] / "__init__.py").is_file() else name


def package_loops(graph: dict[str, set[str]], root: Path) -> list[str]:
    """One loop per strongly connected group of packages, each arrow shown with a module import that makes it."""
    edges: dict[tuple[str, str], tuple[str, str]] = {}
    for mod, targets in sorted(graph.items()):
        for target in sorted(targets):
            arrow = (package_of(mod, root), package_of(target, root))
            if arrow[0] != arrow[1]:
                edges.setdefault(arrow, (mod, target))
    pkgs: dict[str, set[str]] = {}
    for a, b in edges:
        pkgs.setdefault(a, set()).add(b)
    out = []
    for comp in cycles(pkgs):
        members = set(comp)
        path = _loop_through(comp[0], pkgs, members)
        shown = "; ".join(f"{edges[(a, b)][0]} imports {edges[(a, b)][1]}" for a, b in zip(path, path[1:]))
        out.append(f"package loop: {' -> '.join(path)} ({shown})")
    return out


def _loop_through(start: str, graph: dict[str, set[str]], members: set[str]) -> list[str]:
    """A shortest path start -> ... -> start inside one strongly connected group (breadth first)."""
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph.get(v, ()) & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return path[::-1] + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"{start} is in no loop")


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


def test_a_planted_package_loop_fails(copy_of_src):
    # serving imports monitoring; a lazy import back from monitoring closes a package loop
    plant(copy_of_src, "monitoring/records.py", "def _f():\n    from src.serving.metrics import ServerMetrics\n")
    problems = check(copy_of_src)
    assert any(p.startswith("package loop: src.monitoring -> src.serving -> src.monitoring")
               and "src.monitoring.records imports src.serving.metrics" in p for p in problems), problems


def test_a_package_loop_without_a_module_cycle_is_caught(tmp_path):
    # a.x -> b.y -> a.z: no module imports itself back, yet the packages a and b depend on each other
    tree = {"__init__.py": "", "stage_a/__init__.py": "", "stage_b/__init__.py": "", "stage_a/z.py": "",
            "stage_a/x.py": "def f():\n    from src.stage_b.y import g\n",
            "stage_b/y.py": "from src.stage_a.z import *\n\ndef g():\n    pass\n"}
    for rel, text in tree.items():
        (tmp_path / "src" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "src" / rel).write_text(text)
    problems = check(tmp_path / "src")
    assert not any(p.startswith("import cycle") for p in problems)
    assert ("package loop: src.stage_a -> src.stage_b -> src.stage_a (src.stage_a.x imports src.stage_b.y; "
            "src.stage_b.y imports src.stage_a.z)") in problems


def test_a_planted_library_to_script_import_fails(copy_of_src):
    plant(copy_of_src, "training/pipeline.py", "from src.model_registry import register_model")
    assert "library module src.training.pipeline imports the script src.model_registry" in check(copy_of_src)


def test_importing_a_private_name_fails(copy_of_src):
    # across packages, lazily, and inside one package (relative import too)
    plant(copy_of_src, "serving/http.py", "def _f():\n    from src.monitoring.settings import _hidden\n")
    plant(copy_of_src, "registry/api.py", "from .mirror import _tracker")
    problems = check(copy_of_src)
    assert "src.serving.http imports the private name _hidden from src.monitoring.settings" in problems
    assert "src.registry.api imports the private name _tracker from src.registry.mirror" in problems


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


def test_the_sweep_table_is_read_through_hpo_only():
    # the report lists sweeps with src.hpo.study.list_sweeps, not with its own SQL over hpo's table
    users = sorted({name for name, (path, tree) in collect(SRC).items() for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and isinstance(n.value, str) and "sweep_sweeps" in n.value})
    assert users and all(u.startswith("src.hpo.") for u in users), users


def test_documented_imports_work():
    from src.data_versioning import create_dataset_artifact, load_dataset_artifact  # noqa: F401
    from src.inference_monitor import InferenceMonitor  # noqa: F401
    from src.model_registry import load_model_from_registry, register_model  # noqa: F401
    from src.predictor import Predictor  # noqa: F401
    from src.train_with_wandb import train_with_wandb  # noqa: F401
    from src.wandb_config import DEFAULT_CONFIG, SWEEP_CONFIG, WANDB_ENTITY, WANDB_PROJECT, create_sweep  # noqa: F401

    assert WANDB_PROJECT == "grocery-classification-mlops" and WANDB_ENTITY is None
    assert SWEEP_CONFIG["metric"]["name"] and DEFAULT_CONFIG["labeled_ratio"] == 1.0  # every label by default
