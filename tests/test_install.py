"""A user's install path: the wheel, installed with Rasa in one pip call into a fresh virtual
environment outside the repository, trains a `rasa init` bot switched to the plugin.

Run with `make test-install` (CI runs it after `make test`); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Dict, List

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.install

RECIPE = REPO / "docs" / "recipes" / "fallback"


def run(cmd: List[str], cwd: Path, env: Dict[str, str], timeout: int = 1800) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{cmd}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def locked_versions() -> Dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if "==" in line and not line.startswith("#")]
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_wheel_installs_with_rasa_and_trains_a_rasa_init_bot(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(RASA_TELEMETRY_ENABLED="false", RASA_CACHE_DIRECTORY=str(tmp_path / "cache"))

    # 1. the wheel, with the default encoder and its in-scope scorer inside
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", dist,
         REPO], tmp_path, env)
    (wheel,) = dist.glob("rasa_meta-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("delta.safetensors", "rasa_meta.json", "in_scope_scorer.json"):
        assert f"rasa_meta/default_encoder/{shipped}" in names, shipped
    # the product only: no research/, scripts/ or tests/ module
    assert all(n.startswith(("rasa_meta/", "rasa_meta-")) for n in names), sorted(names)

    # 2. a fresh environment, one resolver call, the tested versions
    venv = tmp_path / "venv"
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv], tmp_path, env)
    bin_dir = venv / "bin"
    run([bin_dir / "pip", "install", "--quiet", "-c", REPO / "constraints.txt", wheel],
        tmp_path, env)
    installed = json.loads(run([bin_dir / "pip", "list", "--format", "json"], tmp_path, env))
    versions = {p["name"].lower().replace("_", "-"): p["version"] for p in installed}
    locked = locked_versions()
    differ = {n: (v, locked[n]) for n, v in versions.items() if n in locked and locked[n] != v}
    assert not differ, f"installed versions differ from constraints.txt: {differ}"
    assert versions["rasa"] == "3.6.21"

    # 3. `rasa init`, switched to the README's fallback recipe (config, rule, response)
    project = tmp_path / "bot"
    project.mkdir()
    run([bin_dir / "rasa", "init", "--no-prompt"], project, env)
    shutil.copy(RECIPE / "config.yml", project / "config.yml")
    shutil.copy(RECIPE / "rules.yml", project / "data" / "fallback_rules.yml")
    domain = yaml.safe_load((project / "domain.yml").read_text())
    domain["responses"].update(yaml.safe_load((RECIPE / "domain.yml").read_text())["responses"])
    (project / "domain.yml").write_text(yaml.safe_dump(domain, sort_keys=False))
    shutil.rmtree(project / "models")
    run([bin_dir / "rasa", "train", "--fixed-model-name", "bot"], project, env)

    # 4. parse and converse with the installed package, outside the repository
    probe = (
        "import asyncio, json; from rasa.core.agent import Agent; import rasa_meta; "
        "agent = Agent.load('models/bot.tar.gz'); "
        "parsed = asyncio.run(agent.parse_message('hello there')); "
        "sent = asyncio.run(agent.handle_text('\U0001F621', sender_id='u')); "
        "print(json.dumps({'intent': parsed['intent'], 'file': rasa_meta.__file__, "
        "'replies': [m.get('text') for m in sent]}))"
    )
    out = json.loads(run([bin_dir / "python", "-c", probe], project, env).splitlines()[-1])
    assert out["intent"]["name"] == "greet" and out["intent"]["confidence"] > 0.5
    assert str(venv) in out["file"] and str(REPO) not in out["file"]
    assert out["replies"] == ["Sorry, I didn't get that. Could you rephrase?"]
