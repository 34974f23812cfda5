"""``src/data/version_builder.py`` builds a version from a folder; ``src/data/version_store.py`` holds the stored
versions (tables, read back, diff, restore). Their old names, ``versioning`` and ``versions``, told neither
apart; they are gone, and no module may import them again."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD = {"src.data.versioning", "src.data.versions"}


def old_name_users() -> set[str]:
    users = set()
    for path in [*ROOT.joinpath("src").rglob("*.py"), *ROOT.joinpath("tests").glob("*.py"),
                 *ROOT.joinpath("benchmarks").glob("*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        for n in ast.walk(ast.parse(path.read_text(), rel)):
            names = ([a.name for a in n.names] if isinstance(n, ast.Import) else
                     [n.module or ""] + [f"{n.module}.{a.name}" for a in n.names] if isinstance(n, ast.ImportFrom) else [])
            if any(name in OLD for name in names):
                users.add(rel)
    return users


def test_no_module_uses_the_old_names():
    assert not old_name_users(), sorted(old_name_users())
    assert not any((ROOT / "src" / "data" / f"{name}.py").exists() for name in ("versioning", "versions"))
