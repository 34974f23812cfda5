"""``src/data/version_builder.py`` builds a version from a folder; ``src/data/version_store.py`` holds the stored
versions (tables, read back, diff, restore). Their old names, ``versioning`` and ``versions``, told neither
apart; they remain only as aliases for the modules below that still use them, and no new user may appear."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = {"src.data.versioning": "src.data.version_builder", "src.data.versions": "src.data.version_store"}
STILL_ALLOWED = {"src/curation/apply.py", "src/training/config.py", "src/training/lineage.py", "tests/test_labeling.py"}


def old_name_users() -> set[str]:
    users = set()
    for path in [*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("tests").glob("*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("src/data/versioning.py", "src/data/versions.py"):
            continue
        for n in ast.walk(ast.parse(path.read_text(), rel)):
            names = ([a.name for a in n.names] if isinstance(n, ast.Import) else
                     [n.module or ""] + [f"{n.module}.{a.name}" for a in n.names] if isinstance(n, ast.ImportFrom) else [])
            if any(name in OLD for name in names):
                users.add(rel)
    return users


def test_no_new_module_uses_the_old_names():
    assert old_name_users() <= STILL_ALLOWED, sorted(old_name_users() - STILL_ALLOWED)


def test_the_old_names_are_the_same_modules():
    import importlib

    for old, new in OLD.items():
        assert importlib.import_module(old) is importlib.import_module(new)
