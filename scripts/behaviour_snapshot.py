"""What a fitted model predicts, written to JSON, to show a change of code changed no behaviour.

Fits the model as `rasa train` does (inner loop, head, in-scope calibration) on seeded small
bots drawn from BANKING77 and CLINC150 with several option sets, and records confidences,
in-scope probabilities and the saved-then-loaded model's confidences on test messages.
``--compare OTHER.json`` checks a new snapshot against an older one within a tolerance.

    python scripts/behaviour_snapshot.py --output docs/results/house/before.json
    python scripts/behaviour_snapshot.py --output docs/results/house/after.json \
        --compare docs/results/house/before.json
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

import torch

from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.training.corpus import data_root, load_split, sample_shots

CASES = {
    "banking_default": ("BANKING77", {}),
    "banking_matching_held_out": ("BANKING77", {"head": "matching", "oos_calibration": "held_out"}),
    "clinc_similarity": ("CLINC150", {"out_of_scope_detection": "similarity"}),
    "clinc_no_inner_loop": ("CLINC150", {"epochs": 0}),
}


def fit_and_predict(corpus: str, options: dict, intents: int, shots: int, tests: int) -> dict:
    root = data_root() / corpus
    train, test = load_split(root / "train"), load_split(root / "test")
    chosen = sorted(random.Random(0).sample(sorted(set(train.labels) - {"oos"}), intents))
    train = sample_shots(train.subset(chosen), shots, seed=0)
    test = test.subset(chosen)
    keep = sorted(random.Random(1).sample(range(len(test)), tests))
    texts = [test.texts[i] for i in keep] + ["what is the weather on mars", "😡", "asdf qwer"]
    if "label_name_weight" in FewShotConfig.__dataclass_fields__:
        options = {"label_name_weight": 0.0, **options}  # names did not exist before
    model = FewShotIntentModel(FewShotConfig(device="cpu", **options))
    try:
        from rasa_meta.training.adapt import adapt
    except ImportError:  # before adaptation moved out of the runtime model
        model.fit(train.texts, train.labels)
    else:
        adapt(model, train.texts, train.labels)
    conf, in_scope, _ = model.predict(texts)
    with tempfile.TemporaryDirectory() as tmp:
        model.save(tmp)
        loaded, _, _ = FewShotIntentModel.load(tmp).predict(texts)
    return {
        "labels": model.labels,
        "confidences": conf.tolist(),
        "in_scope": in_scope.tolist(),
        "loaded_confidences": loaded.tolist(),
    }


def compare(new: dict, old: dict, atol: float) -> list:
    problems = []
    for case, result in old.items():
        other = new.get(case)
        if other is None or other["labels"] != result["labels"]:
            problems.append(f"{case}: labels differ")
            continue
        for key in ("confidences", "in_scope", "loaded_confidences"):
            diff = (torch.tensor(other[key]) - torch.tensor(result[key])).abs().max().item()
            print(f"{case:28s} {key:20s} max |diff| {diff:.2e}")
            if diff > atol:
                problems.append(f"{case}: {key} differs by {diff:.2e}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--compare")
    parser.add_argument("--atol", type=float, default=1e-4)
    parser.add_argument("--intents", type=int, default=12)
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--tests", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = {}
    for case, (corpus, options) in CASES.items():
        print(f"fitting {case}", flush=True)
        results[case] = fit_and_predict(corpus, options, args.intents, args.shots, args.tests)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results), encoding="utf-8")
    if args.compare:
        problems = compare(results, json.loads(Path(args.compare).read_text()), args.atol)
        print("\n".join(problems) if problems else f"all within {args.atol}")
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
