"""Few-shot accuracy, leave-one-dataset-out: frozen base vs meta-trained, head vs inner loop.

Usage:
    python scripts/few_shot_table.py --encoder BANKING77=runs/loo/BANKING77 \\
        --encoder SGD=runs/loo/SGD [--split test] [--shots 5 10] [--seeds 0 1 2] \\
        [--inner-epochs 2] [--out docs/results/few_shot/few_shot_test.json]

Each dataset is evaluated with the encoder named for it, which must not have seen that
dataset's family in meta-training (checked against the checkpoint's metadata). Corpora with
DialoGLUE splits use the fixed ``train_5`` / ``train_10`` (one split, so one seed); the others
draw their shots from ``train`` per seed (:func:`rasa_meta.tooling.evaluation.few_shot_task`).

Rows: frozen base + logistic regression; frozen base + the component's default head;
meta-trained + default head; meta-trained + the encoder inner loop (``--inner-epochs``), all
with intent names off; with ``--name-weight W`` also the three heads with each intent's name
as support at ``label_name_weight`` W (the inner-loop row with names is the shipped recipe).
Shot counts without a fixed split (1-shot on BANKING77 / CLINC150) are drawn per seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Dict, List

from rasa_meta.runtime.encoder import BASE_ENCODER, SentenceEncoder, read_metadata, resolve_encoder
from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.tooling.evaluation import (
    accuracy,
    cached_encode,
    few_shot_task,
    inner_loop_accuracy,
    logistic_regression_predict,
)
from rasa_meta.training.corpus import corpus_family, registered


def default_head_accuracy(encoder, train, train_emb, test_emb, test_labels,
                          name_weight: float = 0.0) -> float:
    """The component's default head (refined prototypes) over ready-made embeddings, intent
    names as support at ``name_weight`` (0: off)."""
    config = FewShotConfig(encoder=encoder.name_or_path, device="cpu",
                           label_name_weight=name_weight)
    model = FewShotIntentModel(config, encoder).fit_embeddings(train_emb, train.labels,
                                                               train.texts)
    probs, _, _ = model.predict_embeddings(test_emb)
    return accuracy(test_labels, [model.labels[i] for i in probs.argmax(1).tolist()])


def summary(values: List[float]) -> Dict[str, float]:
    return {"mean": statistics.mean(values),
            "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoder", action="append", default=[], help="DATASET=encoder")
    ap.add_argument("--base", default=BASE_ENCODER)
    ap.add_argument("--split", default="test")
    ap.add_argument("--shots", nargs="+", default=["5", "10"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--inner-epochs", type=int, default=0,
                    help="Also run the encoder inner loop with this many epochs.")
    ap.add_argument("--inner-layers", type=int, default=None)
    ap.add_argument("--inner-learning-rate", type=float, default=None)
    ap.add_argument("--inner-objective", default=None)
    ap.add_argument("--name-weight", type=float, default=0.0,
                    help="Also the rows with intent names as support at this "
                         "label_name_weight (0: names off everywhere, the rows before names).")
    ap.add_argument("--cache", default="runs/embeddings")
    ap.add_argument("--out", default=None)
    ap.add_argument("--markdown-from", default=None,
                    help="Only print the markdown table of an earlier --out file.")
    ns = ap.parse_args()
    if ns.markdown_from:
        print(markdown(json.loads(Path(ns.markdown_from).read_text())["rows"]))
        return
    overrides = {}
    if ns.inner_layers is not None:
        overrides["finetune_layers"] = ns.inner_layers
    if ns.inner_learning_rate is not None:
        overrides["finetune_learning_rate"] = ns.inner_learning_rate
    if ns.inner_objective is not None:
        overrides["finetune_objective"] = ns.inner_objective
    rows: List[Dict] = []
    base = SentenceEncoder.from_pretrained(ns.base)
    for spec in ns.encoder:
        dataset, name = spec.split("=", 1)
        meta = read_metadata(resolve_encoder(name))
        seen = {corpus_family(c) for c in meta.get("corpora", [])}
        if corpus_family(dataset) in seen:
            raise SystemExit(f"{name} was meta-trained on {dataset}'s family: not a held-out "
                             f"evaluation.")
        meta_enc = SentenceEncoder.from_pretrained(name)
        info = registered(dataset)
        for shots in ns.shots:
            fixed = info is not None and info.few_shot_splits and shots in ("5", "10")
            seeds = [0] if fixed else ns.seeds
            cells: Dict[str, List[float]] = {}
            seconds: List[float] = []
            for seed in seeds:
                train, test = few_shot_task(dataset, shots, seed, test_split=ns.split)
                base_test = cached_encode(base, test.texts, ns.cache)
                meta_test = cached_encode(meta_enc, test.texts, ns.cache)
                base_train = cached_encode(base, train.texts, ns.cache)
                meta_train_emb = cached_encode(meta_enc, train.texts, ns.cache)
                cells.setdefault("base+logreg", []).append(accuracy(
                    test.labels, logistic_regression_predict(base_train, train.labels,
                                                             base_test)))
                cells.setdefault("base+head", []).append(default_head_accuracy(
                    base, train, base_train, base_test, test.labels))
                cells.setdefault("meta+head", []).append(default_head_accuracy(
                    meta_enc, train, meta_train_emb, meta_test, test.labels))
                if ns.name_weight:
                    cells.setdefault("base+head+names", []).append(default_head_accuracy(
                        base, train, base_train, base_test, test.labels, ns.name_weight))
                    cells.setdefault("meta+head+names", []).append(default_head_accuracy(
                        meta_enc, train, meta_train_emb, meta_test, test.labels,
                        ns.name_weight))
                if ns.inner_epochs:
                    weights = [ns.name_weight] if ns.name_weight else []
                    result = inner_loop_accuracy(
                        name, train, test, ns.inner_epochs, seed, name_weights=weights,
                        out_of_scope_detection=True, label_name_weight=0.0, **overrides)
                    cells.setdefault("meta+inner(encoder)", []).append(result["accuracy"])
                    if weights:
                        cells.setdefault("meta+inner+names", []).append(
                            result[f"accuracy_names_{ns.name_weight:g}"])
                    seconds.append(result["adapt_seconds"])
            row = {"dataset": dataset, "shots": shots, "split": ns.split, "encoder": name,
                   "seeds": seeds, "n_test": len(test), "n_intents": len(set(train.labels)),
                   "meta_trained_on": meta.get("corpora", []),
                   **{k: summary(v) for k, v in cells.items()}}
            if seconds:
                row["inner_loop_seconds"] = statistics.mean(seconds)
            rows.append(row)
            print(json.dumps({k: (v["mean"] if isinstance(v, dict) else v)
                              for k, v in row.items() if k != "meta_trained_on"}), flush=True)
            if ns.out:
                Path(ns.out).parent.mkdir(parents=True, exist_ok=True)
                Path(ns.out).write_text(json.dumps({
                    "command": "python scripts/few_shot_table.py " + " ".join(
                        f"--encoder {e}" for e in ns.encoder) + f" --split {ns.split} "
                        f"--shots {' '.join(ns.shots)} --seeds {' '.join(map(str, ns.seeds))}"
                        + (f" --inner-epochs {ns.inner_epochs}" if ns.inner_epochs else "")
                        + (f" --name-weight {ns.name_weight:g}" if ns.name_weight else ""),
                    "inner_loop_overrides": overrides,
                    "rows": rows}, indent=1))
    print(markdown(rows))


METHODS = [
    ("base+logreg", "frozen base + LR"),
    ("base+head", "frozen base + default head"),
    ("meta+head", "meta-trained + default head"),
    ("meta+inner(encoder)", "meta-trained + encoder inner loop (names off)"),
    ("base+head+names", "frozen base + default head + names"),
    ("meta+head+names", "meta-trained + default head + names"),
    ("meta+inner+names", "meta-trained + encoder inner loop + names"),
]
# The shipped recipe: the last of these a table has (names on since label_name_weight).
SHIPPED = ("meta+inner+names", "meta+inner(encoder)")


def markdown(rows: List[Dict]) -> str:
    """One line per dataset and shot count, one column per method: mean (± std over seeds) in
    %, and the shipped recipe's margin over the strongest floor (frozen base + LR)."""
    methods = [(k, label) for k, label in METHODS if any(k in r for r in rows)]
    shipped = next((k for k in SHIPPED if any(k in r for r in rows)), SHIPPED[-1])
    lines = ["| corpus | shots | intents | " + " | ".join(
                 f"{label} (**shipped**)" if key == shipped else label for key, label in methods)
             + " | shipped − frozen base + LR |",
             "|---|---:|---:|" + "---:|" * (len(methods) + 1)]
    for row in rows:
        cells = []
        for key, _ in methods:
            cell = row.get(key)
            if cell is None:
                cells.append("–")
            elif len(cell["runs"]) > 1:
                cells.append(f"{100 * cell['mean']:.1f} ± {100 * cell['std']:.1f}")
            else:
                cells.append(f"{100 * cell['mean']:.1f}")
        best, floor = row.get(shipped), row.get("base+logreg")
        margin = f"{100 * (best['mean'] - floor['mean']):+.1f}" if best and floor else "–"
        lines.append(f"| {row['dataset']} | {row['shots']} | {row['n_intents']} | "
                     + " | ".join(cells) + f" | {margin} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
