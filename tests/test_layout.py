"""Serving imports only the runtime: loading the component pulls in no training or tooling code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import List

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


def _module_level_imports(path: Path) -> List[str]:
    """The rasa_meta modules a file imports when it is itself imported (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return [name for name in found if name.startswith("rasa_meta.")]


# What each unit may import at module level (docs/architecture.md): the runtime only itself,
# training the runtime, tooling everything but the Rasa component.
ALLOWED = {
    "runtime": ("rasa_meta.runtime",),
    "training": ("rasa_meta.runtime", "rasa_meta.training"),
    "tooling": ("rasa_meta.runtime", "rasa_meta.training", "rasa_meta.tooling"),
}


@pytest.mark.parametrize("unit", sorted(ALLOWED))
def test_units_import_only_what_the_architecture_allows(unit: str) -> None:
    wrong = [
        f"{path.relative_to(PACKAGE)}: {name}"
        for path in sorted((PACKAGE / unit).rglob("*.py"))
        for name in _module_level_imports(path)
        if not name.startswith(ALLOWED[unit])
    ]
    assert wrong == []
