"""Serving imports only the runtime: loading the component pulls in no training or tooling code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rasa_meta"

PROBE = """
import json, sys
import rasa_meta
rasa_meta.MetaIntentClassifier  # what Rasa resolves from config.yml
from rasa_meta.runtime.model import FewShotIntentModel  # what load() uses
print(json.dumps(sorted(m for m in sys.modules if m.startswith("rasa_meta"))))
"""


@pytest.mark.slow
def test_serving_imports_only_runtime() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out.strip().splitlines()[-1])
    assert "rasa_meta.component" in loaded and "rasa_meta.runtime.model" in loaded
    leaked = [m for m in loaded if m.startswith(("rasa_meta.training", "rasa_meta.tooling"))]
    assert leaked == [], f"serving imported {leaked}"


@pytest.mark.slow
def test_torch_core_does_not_import_rasa() -> None:
    probe = (
        "import sys, rasa_meta.runtime.model, rasa_meta.training.meta_train; "
        "print(any(m == 'rasa' or m.startswith('rasa.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


ARCHITECTURE = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"
# The files of each unit named in the table of docs/architecture.md.
UNIT_FILES = {
    "runtime": lambda: sorted((PACKAGE / "runtime").rglob("*.py")),
    "training": lambda: sorted((PACKAGE / "training").rglob("*.py")),
    "tooling": lambda: sorted((PACKAGE / "tooling").rglob("*.py")),
    "component": lambda: [PACKAGE / "__init__.py", PACKAGE / "component.py",
                          PACKAGE / "selector.py"],
}
UNIT_MODULES = {
    "runtime": ("rasa_meta.runtime",),
    "training": ("rasa_meta.training",),
    "tooling": ("rasa_meta.tooling",),
    "component": ("rasa_meta.component", "rasa_meta.selector"),
}


def architecture_table() -> Dict[str, Tuple[Set[str], Set[str]]]:
    """What each unit may import, at module level and inside functions, as the table under
    'What may import what' in docs/architecture.md says."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## What may import what", 1)[1]
    table: Dict[str, Tuple[Set[str], Set[str]]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in UNIT_FILES:
            module_level = {u.strip() for u in cells[1].split(",")}
            in_functions = {u.strip() for u in cells[2].split(",")} | module_level
            table[cells[0]] = (module_level, in_functions)
    return table


def imports_of(path: Path) -> Tuple[List[str], List[str]]:
    """The rasa_meta modules a file imports at module level, and inside functions (or any
    nested block: classes, ``if TYPE_CHECKING:`` included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = set(map(id, tree.body))
    module_level, nested = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        else:
            continue
        names = [n for n in names if n.startswith("rasa_meta.")]
        (module_level if id(node) in top else nested).extend(names)
    return module_level, nested


def unit_of(module: str) -> str:
    for unit, prefixes in UNIT_MODULES.items():
        if module.startswith(prefixes):
            return unit
    return "?"


def allowed(module: str, entries: Set[str]) -> bool:
    """Whether ``module`` is one of the table's entries: a unit, or a module path within one
    (``tooling.overlap``)."""
    return unit_of(module) in entries or any(
        "." in e and (module == f"rasa_meta.{e}" or module.startswith(f"rasa_meta.{e}."))
        for e in entries
    )


def test_the_architecture_table_names_every_unit() -> None:
    assert sorted(architecture_table()) == sorted(UNIT_FILES)


@pytest.mark.parametrize("unit", sorted(UNIT_FILES))
def test_units_import_only_what_the_architecture_table_allows(unit: str) -> None:
    module_level, in_functions = architecture_table()[unit]
    wrong = []
    for path in UNIT_FILES[unit]():
        top, nested = imports_of(path)
        wrong += [f"{path.relative_to(PACKAGE)}: {m} (module level)" for m in top
                  if unit_of(m) not in module_level]
        wrong += [f"{path.relative_to(PACKAGE)}: {m} (in a function)" for m in nested
                  if not allowed(m, in_functions)]
    assert wrong == []


def test_import_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from rasa_meta.runtime import heads\n"
        "def f():\n    from rasa_meta.training.adapt import adapt\n",
        encoding="utf-8",
    )
    assert imports_of(source) == (["rasa_meta.runtime"], ["rasa_meta.training.adapt"])
