"""`max_length` 64 vs 128 tokens: accuracy on valid splits and per-message latency.

Usage: python scripts/max_length_check.py --encoder BANKING77=runs/loo/BANKING77 \\
    --encoder CLINC150=runs/loo/CLINC150 --out docs/results/few_shot/max_length.json

Head-only models (``epochs: 0``) so that only the encoding differs; latency is the p50 of
single-message predictions over the first 200 valid messages, after 20 warm-up calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.tooling.evaluation import accuracy, few_shot_task
from rasa_meta.training.adapt import adapt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", action="append", required=True, help="DATASET=encoder")
    ap.add_argument("--lengths", nargs="+", type=int, default=[64, 128])
    ap.add_argument("--out", default="docs/results/few_shot/max_length.json")
    ns = ap.parse_args()
    rows = []
    for spec in ns.encoder:
        dataset, name = spec.split("=", 1)
        train, valid = few_shot_task(dataset, "10", 0, test_split="valid")
        for length in ns.lengths:
            model = FewShotIntentModel(FewShotConfig(encoder=name, device="cpu", epochs=0,
                                                     max_length=length))
            adapt(model, train.texts, train.labels)
            probs, _, _ = model.predict(valid.texts)
            acc = accuracy(valid.labels, [model.labels[i] for i in probs.argmax(1).tolist()])
            tokens = [len(model.encoder.tokenizer(t)["input_ids"]) for t in valid.texts]
            for text in valid.texts[:20]:
                model.predict([text])
            times = []
            for text in valid.texts[:200]:
                start = time.perf_counter()
                model.predict([text])
                times.append(1000 * (time.perf_counter() - start))
            rows.append({"dataset": dataset, "encoder": name, "max_length": length,
                         "valid_accuracy": acc, "p50_ms": statistics.median(times),
                         "messages_over_64_tokens": sum(t > 64 for t in tokens),
                         "longest_tokens": max(tokens), "n_valid": len(valid)})
            print(json.dumps(rows[-1]), flush=True)
    Path(ns.out).write_text(json.dumps({
        "command": "python scripts/max_length_check.py " + " ".join(
            f"--encoder {e}" for e in ns.encoder), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
