"""A package's ``__init__`` re-exports its submodules and is never imported back by them: a submodule
that imports its own package (``from phototag.query import fields``) closes an import cycle through
the ``__init__`` (query → query.service → query.parse → query)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def imports_of_own_package(package: str, repo: Path = REPO) -> list[str]:
    """``file:line`` of every import, module-level or inside a function, of ``package`` itself (not of
    one of its submodules) by a module of that package."""
    folder = repo.joinpath(*package.split("."))
    found: list[str] = []
    for path in sorted(folder.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.ImportFrom) and node.level == 1 and not node.module:
                names = [package]  # from . import x
            if package in names:
                found.append(f"{path.relative_to(repo)}:{node.lineno}")
    return found


@pytest.mark.parametrize("package", ["phototag.query", "phototag.search", "phototag.config"])
def test_no_submodule_imports_its_own_package(package):
    assert imports_of_own_package(package) == []


def test_the_check_sees_such_an_import(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.a import x\n")
    (package / "a.py").write_text("def f():\n    from pkg import b\n")
    (package / "b.py").write_text("import pkg.a\nfrom pkg.a import x\n")  # submodules: fine
    assert imports_of_own_package("pkg", tmp_path) == ["pkg/a.py:2"]
