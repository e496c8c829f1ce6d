"""The encoder inner loop at `rasa train`, measured on `valid` splits against the head alone.

For each dataset (with an encoder that never saw it) and each inner-loop setting, a fresh
component model is fitted on the few-shot examples (exactly what `rasa train` does) and scored
on the dataset's `valid` split, full label set; `epochs 0` is the head-only default.

Usage:
    python scripts/inner_loop_valid.py --encoder BANKING77=runs/loo/BANKING77 \\
        --encoder CLINC150=runs/loo/CLINC150 --shots 10 --epochs 0 1 3 --layers 2 -1 \\
        --learning-rates 3e-5 1e-4 --out docs/results/inner_loop/inner_loop_valid.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path
from typing import Dict, List

import torch

from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.tooling.evaluation import accuracy, few_shot_task
from rasa_meta.training.adapt import adapt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", action="append", required=True, help="DATASET=encoder")
    ap.add_argument("--shots", nargs="+", default=["10"])
    ap.add_argument("--epochs", nargs="+", type=int, default=[0, 1, 3])
    ap.add_argument("--layers", nargs="+", type=int, default=[2, -1])
    ap.add_argument("--learning-rates", nargs="+", type=float, default=[3e-5, 1e-4])
    ap.add_argument("--objectives", nargs="+", default=["both"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/results/inner_loop/inner_loop_valid.json")
    ns = ap.parse_args()
    out = Path(ns.out)
    rows: List[Dict] = []
    for spec in ns.encoder:
        dataset, name = spec.split("=", 1)
        for shots in ns.shots:
            train, valid = few_shot_task(dataset, shots, ns.seed, test_split="valid")
            grid = [(0, 2, 0.0, "both")] + [
                g for g in itertools.product(ns.epochs, ns.layers, ns.learning_rates,
                                             ns.objectives) if g[0]
            ]
            for epochs, layers, lr, objective in grid:
                config = FewShotConfig(
                    encoder=name, device="cpu", epochs=epochs, finetune_layers=layers,
                    finetune_learning_rate=lr, finetune_objective=objective,
                    random_seed=ns.seed,
                )
                start = time.perf_counter()
                model = adapt(FewShotIntentModel(config), train.texts, train.labels)
                seconds = time.perf_counter() - start
                probs, _, _ = model.predict(valid.texts)
                acc = accuracy(valid.labels, [model.labels[i] for i in probs.argmax(1).tolist()])
                rows.append({
                    "dataset": dataset, "shots": shots, "encoder": name, "epochs": epochs,
                    "finetune_layers": layers, "finetune_learning_rate": lr,
                    "finetune_objective": objective,
                    "valid_accuracy": acc, "fit_seconds": round(seconds, 1),
                    "n_train": len(train), "n_valid": len(valid),
                    "threads": torch.get_num_threads(),
                })
                print(json.dumps(rows[-1]), flush=True)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps({
                    "command": "python scripts/inner_loop_valid.py " + " ".join(
                        f"--encoder {e}" for e in ns.encoder)
                    + f" --shots {' '.join(ns.shots)} --epochs {' '.join(map(str, ns.epochs))}"
                    f" --layers {' '.join(map(str, ns.layers))} --learning-rates "
                    f"{' '.join(map(str, ns.learning_rates))} --objectives "
                    f"{' '.join(ns.objectives)} --seed {ns.seed}",
                    "rows": rows,
                }, indent=1))


if __name__ == "__main__":
    main()
