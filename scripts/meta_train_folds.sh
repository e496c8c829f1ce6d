#!/usr/bin/env bash
# Leave-one-dataset-out encoders for the evidence table, then the shipped default.
#
# Each fold leaves one evaluated corpus (and its family; for BANKING77 also CLINC150's banking
# and credit_cards domains) out of meta-training, and picks its best step on that corpus's
# *valid* split. The shipped encoder sees all eight corpora; with no corpus left to validate on,
# it trains for the median best step of the folds and keeps the final state.
#
# Usage: bash scripts/meta_train_folds.sh [RECIPE FLAGS...]   (runs/loo/<DATASET>, runs/all)
# FOLD_ROOT=runs/scorer PROVENANCE=docs/results/meta_training/oos_folds.json SKIP_ALL=1 bash scripts/meta_train_folds.sh ... writes the folds
# elsewhere: the out-of-scope evidence (scripts/oos_evidence.py) uses folds made since the
# in-scope scorer exists, which meta-train trains with each fold (--scorer-episodes).
set -euo pipefail
RECIPE=("$@")
FOLD_ROOT=${FOLD_ROOT:-runs/loo}
EPISODES=${EPISODES:-240}
EVAL_EVERY=${EVAL_EVERY:-40}
FOLDS=${FOLDS:-"BANKING77 CLINC150 SGD TOP MULTIDOGO"}
for D in $FOLDS; do
  if [ -f "$FOLD_ROOT/$D/rasa_meta.json" ]; then echo "== $D: done"; continue; fi
  echo "== fold $D: $(date -u)"
  rasa-meta meta-train --exclude "$D" --valid-corpus "$D" --valid-shots 10 \
    --episodes "$EPISODES" --eval-every "$EVAL_EVERY" --valid-episodes 12 --patience 100 \
    --seed 0 --device cpu --save-delta --output-dir "$FOLD_ROOT/$D" "${RECIPE[@]}"
done
if [ -z "${SKIP_ALL:-}" ]; then
  STEPS=$(python - <<'PY'
import json, statistics, pathlib
steps = [json.loads(p.read_text())["best_step"] for p in pathlib.Path("runs/loo").glob("*/rasa_meta.json")]
print(max(1, int(statistics.median(steps))))
PY
)
  echo "== all corpora, $STEPS episodes: $(date -u)"
  rasa-meta meta-train --episodes "$STEPS" --eval-every "$STEPS" --keep-last \
    --valid-episodes 12 --seed 0 --device cpu --save-delta --output-dir runs/all "${RECIPE[@]}"
fi
# Provenance of every fold (and the shipped run) in one committed file: merged into it, so
# folds made in one call and the shipped run in another all stay recorded.
FOLD_ROOT="$FOLD_ROOT" PROVENANCE="${PROVENANCE:-docs/results/meta_training/meta_training_folds.json}" python - <<'PY'
import json, os, pathlib
out = pathlib.Path(os.environ["PROVENANCE"])
runs = json.loads(out.read_text()) if out.is_file() else {}
root = pathlib.Path(os.environ["FOLD_ROOT"])
for meta_file in sorted(root.glob("*/rasa_meta.json")) + [pathlib.Path("runs/all/rasa_meta.json")]:
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        runs[str(meta_file.parent)] = {k: meta[k] for k in (
            "command", "corpora", "excluded", "best_step", "steps", "selected_on",
            "selection_accuracy", "meta_valid_accuracy", "train_seconds", "history") if k in meta}
        scorer = meta_file.parent / "in_scope_scorer_history.json"
        if scorer.is_file():
            runs[str(meta_file.parent)]["in_scope_scorer"] = json.loads(scorer.read_text())
out.write_text(json.dumps(runs, indent=1) + "\n")
PY
