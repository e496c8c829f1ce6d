"""Serving imports only the runtime: loading the component pulls in no training or tooling code."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


def test_torch_core_does_not_import_rasa() -> None:
    probe = (
        "import sys, rasa_meta.runtime.model, rasa_meta.training.meta_train; "
        "print(any(m == 'rasa' or m.startswith('rasa.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
