#!/usr/bin/env bash
# `rasa train` time and held-out paraphrase accuracy of example_bot, with rasa-meta and with
# Rasa's default DIET pipeline, on the same machine in one run.
# Usage: bash scripts/compare_bot_training.sh  (from the repository root, with .venv installed)
set -euo pipefail
ROOT=$(pwd)
BIN="$ROOT/.venv/bin"
WORK=$(mktemp -d)
export RASA_TELEMETRY_ENABLED=false RASA_CACHE_DIRECTORY="$WORK/cache"
cp -r example_bot/{domain.yml,data} "$WORK/"
cp example_bot/config.yml "$WORK/config_meta.yml"
"$BIN/python" - "$WORK/config_meta.yml" "$WORK/config_diet.yml" <<'PY'
import sys
from rasa_meta.tooling.benchmark import DIET_PIPELINE  # the one DIET definition the benchmark uses
meta = open(sys.argv[1]).read()
start = meta.index("pipeline:")
end = meta.index("  - name: FallbackClassifier")
open(sys.argv[2], "w").write(meta[:start] + "pipeline:\n" + DIET_PIPELINE + meta[end:])
PY
cd "$WORK"
for name in meta diet; do
  rm -rf cache
  start=$(date +%s.%N)
  "$BIN/rasa" train --config "config_$name.yml" --fixed-model-name "$name" --out models >"train_$name.log" 2>&1
  end=$(date +%s.%N)
  echo "$name rasa_train_seconds $(python3 -c "print(round($end - $start, 1))")"
done
"$BIN/python" - "$ROOT/example_bot/tests/nlu_paraphrases.yml" "$ROOT/example_bot/tests/oos_messages.txt" <<'PY'
import asyncio, logging, sys
from rasa.core.agent import Agent
from rasa.utils.common import configure_logging_and_warnings
from rasa.utils.log_utils import configure_structlog
configure_logging_and_warnings(logging.WARNING)
configure_structlog(logging.WARNING)
from rasa_meta.training.corpus import load_rasa_nlu
held = load_rasa_nlu(sys.argv[1])
oos = [l for l in open(sys.argv[2]).read().splitlines() if l.strip()]
for name in ("meta", "diet"):
    agent = Agent.load(f"models/{name}.tar.gz")
    pred = [asyncio.run(agent.parse_message(t))["intent"]["name"] for t in held.texts]
    acc = sum(p == g for p, g in zip(pred, held.labels)) / len(held)
    fb = [asyncio.run(agent.parse_message(t))["intent"]["name"] for t in oos]
    print(f"{name} paraphrase_accuracy {acc:.3f} ({len(held)} messages) "
          f"oos_to_fallback {fb.count('nlu_fallback')}/{len(oos)}")
PY
