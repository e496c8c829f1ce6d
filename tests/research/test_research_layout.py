"""Research code stays out of the product: the wheel packages ``rasa_meta`` only, nothing in
``rasa_meta`` imports ``research``, and no test imports from ``scripts/``."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import List

import tomli
from setuptools import find_packages

from tests.conftest import REPO


def imported_modules(path: Path) -> List[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_the_wheel_packages_rasa_meta_and_not_research() -> None:
    config = tomli.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["rasa_meta*"]
    packages = find_packages(where=str(REPO), include=include)
    assert "rasa_meta" in packages and "rasa_meta.tooling" in packages
    assert not [p for p in packages if not p.startswith("rasa_meta")], packages
    # what the same rules would find without the include: research is a package of its own
    assert "research" in find_packages(where=str(REPO))


def test_the_product_never_imports_research() -> None:
    wrong = [f"{path.relative_to(REPO)}: {name}"
             for path in sorted((REPO / "rasa_meta").rglob("*.py"))
             for name in imported_modules(path)
             if name == "research" or name.startswith("research.")]
    assert wrong == []


def test_no_test_imports_from_scripts() -> None:
    wrong = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        wrong += [f"{path.relative_to(REPO)}: {name}" for name in imported_modules(path)
                  if name == "scripts" or name.startswith("scripts.")]
        # nor loads a script by its path (importlib.util.spec_from_file_location)
        if re.search(r"""["']scripts["']\s*/""", path.read_text(encoding="utf-8")):
            wrong.append(f"{path.relative_to(REPO)}: a path into scripts/")
    assert wrong == []
