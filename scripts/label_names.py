"""Intent names as support: accuracy with and without each intent's name in its prototype.

Two parts, both with the classifier fitted as `rasa train` fits it (inner loop, head):
- ``valid``: the weight ``label_name_weight`` chosen on the valid splits, with the shipped
  encoder, 5 examples per intent, one seed;
- ``test``: the full label set of five corpora at 1, 5 and 10 examples per intent, 3 seeds,
  with the base encoder (all-MiniLM-L6-v2, meta-trained on nothing, so no corpus was seen):
  names off, names on at the chosen weight, names scrambled across intents (names that mislead),
  and zero-shot: a fifth of the intents given no examples, known by their name alone.

    python scripts/label_names.py valid --output docs/results/label_names/valid.json
    python scripts/label_names.py test --weight W --output docs/results/label_names/test.json
    python scripts/label_names.py table --output docs/results/label_names
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List

import torch

from rasa_meta.runtime.label_text import name_text
from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
from rasa_meta.training.adapt import adapt
from rasa_meta.training.corpus import IntentCorpus, data_root, load_split, sample_shots

CORPORA = ("BANKING77", "CLINC150", "SGD", "TOP", "MULTIDOGO")
WEIGHTS = (0.0, 0.5, 1.0, 2.0, 4.0)


def _cap(corpus: IntentCorpus, limit: int, seed: int) -> IntentCorpus:
    if len(corpus) <= limit:
        return corpus
    keep = sorted(random.Random(seed).sample(range(len(corpus)), limit))
    return IntentCorpus(corpus.name, [corpus.texts[i] for i in keep],
                        [corpus.labels[i] for i in keep], corpus.domains)


def _accuracy(model: FewShotIntentModel, emb: torch.Tensor, gold: List[str]) -> float:
    conf, _, _ = model.predict_embeddings(emb)
    pred = [model.labels[i] for i in conf.argmax(1).tolist()]
    return 100.0 * sum(p == g for p, g in zip(pred, gold)) / len(gold)


def _fit(encoder: str, train: IntentCorpus, seed: int) -> tuple:
    config = FewShotConfig(encoder=encoder, device="cpu", random_seed=seed,
                           out_of_scope_detection=False, label_name_weight=0.0)
    model = FewShotIntentModel(config)
    start = time.perf_counter()
    adapt(model, train.texts, train.labels)
    return model, model.embed(train.texts), time.perf_counter() - start


def _with_names(model, train_emb, train, weight, descriptions=None) -> FewShotIntentModel:
    model.config.label_name_weight = weight
    return model.fit_embeddings(train_emb, train.labels, train.texts, descriptions)


def _scrambled(labels: List[str], seed: int) -> Dict[str, str]:
    """Every intent described by another intent's name."""
    names = sorted(set(labels))
    shifted = names[1:] + names[:1]
    random.Random(seed).shuffle(shifted)
    return {a: name_text(b) or b for a, b in zip(names, shifted)}


def valid(args) -> dict:
    out = {}
    for corpus in CORPORA:
        root = data_root() / corpus
        train = sample_shots(load_split(root / "train"), 5, seed=0)
        dev = load_split(root / "valid")
        dev = _cap(dev.subset(sorted(set(train.labels))), args.max_test, 0)
        model, train_emb, seconds = _fit(args.encoder, train, 0)
        dev_emb = model.embed(dev.texts)
        out[corpus] = {str(w): _accuracy(_with_names(model, train_emb, train, w), dev_emb,
                                         dev.labels) for w in WEIGHTS}
        print(corpus, out[corpus], f"{seconds:.0f}s", flush=True)
    means = {str(w): statistics.mean(out[c][str(w)] for c in CORPORA) for w in WEIGHTS}
    return {"per_corpus": out, "mean": means,
            "chosen_weight": float(max(means, key=lambda w: means[w]))}


def test(args) -> dict:
    """Seed by seed over every corpus and shot count, the output rewritten after each row, so
    an interrupted run keeps what it measured."""
    rows: List[dict] = []
    splits = {}
    for corpus in CORPORA:
        root = data_root() / corpus
        full, test_split = load_split(root / "train"), load_split(root / "test")
        splits[corpus] = (full, _cap(test_split.subset(sorted(set(full.labels))),
                                     args.max_test, 0))
    for seed in args.seeds:
        for corpus in CORPORA:
            full, test_split = splits[corpus]
            for shots in args.shots:
                train = sample_shots(full, shots, seed=seed)
                model, train_emb, seconds = _fit(args.encoder, train, seed)
                test_emb = model.embed(test_split.texts)
                row = {"corpus": corpus, "shots": shots, "seed": seed,
                       "adapt_seconds": round(seconds, 1)}
                row["names_off"] = _accuracy(_with_names(model, train_emb, train, 0.0),
                                             test_emb, test_split.labels)
                row["names_on"] = _accuracy(_with_names(model, train_emb, train, args.weight),
                                            test_emb, test_split.labels)
                row["names_scrambled"] = _accuracy(
                    _with_names(model, train_emb, train, args.weight,
                                _scrambled(train.labels, seed)),
                    test_emb, test_split.labels)
                if shots == args.zero_shot_at and seed in args.zero_shot_seeds:
                    row.update(_zero_shot(args, full, train, test_split, seed))
                rows.append(row)
                print(json.dumps(row), flush=True)
                _write(args, {"rows": rows, "weight": args.weight, "encoder": args.encoder})
    return {"rows": rows, "weight": args.weight, "encoder": args.encoder}


def _write(args, result: dict) -> None:
    result["command"] = "python scripts/label_names.py " + " ".join(sys.argv[1:])
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1), encoding="utf-8")


def _zero_shot(args, full, train, test_split, seed) -> dict:
    """A fifth of the intents without examples: accuracy on their test messages (their name
    alone) and on all, against chance and the names-off model (which cannot predict them)."""
    intents = sorted(set(full.labels))
    unseen = set(random.Random(100 + seed).sample(intents, max(1, len(intents) // 5)))
    seen_train = IntentCorpus(train.name,
                              [t for t, lab in zip(train.texts, train.labels) if lab not in unseen],
                              [lab for lab in train.labels if lab not in unseen])
    model, emb, _ = _fit(args.encoder, seen_train, seed)
    test_emb = model.embed(test_split.texts)
    descriptions = {lab: name_text(lab) or lab for lab in unseen}
    model = _with_names(model, emb, seen_train, args.weight, descriptions)
    conf, _, _ = model.predict_embeddings(test_emb)
    pred = [model.labels[i] for i in conf.argmax(1).tolist()]
    idx = [i for i, g in enumerate(test_split.labels) if g in unseen]
    return {
        "zero_shot_intents": len(unseen),
        "zero_shot_accuracy_unseen": 100.0 * sum(pred[i] == test_split.labels[i] for i in idx)
        / max(len(idx), 1),
        "zero_shot_accuracy_all": 100.0 * sum(p == g for p, g in zip(pred, test_split.labels))
        / len(pred),
        "zero_shot_chance_unseen": 100.0 / len(intents),
    }


def table(valid_file: Path, test_file: Path) -> str:
    """Markdown tables of both parts: mean ± std over the seeds measured."""
    valid_result = json.loads(valid_file.read_text(encoding="utf-8"))
    lines = ["| corpus (valid, 5-shot) | " + " | ".join(f"w={w}" for w in WEIGHTS) + " |",
             "|---" * (len(WEIGHTS) + 1) + "|"]
    for corpus, by_weight in valid_result["per_corpus"].items():
        lines.append(f"| {corpus} | " + " | ".join(f"{by_weight[str(w)]:.1f}" for w in WEIGHTS)
                     + " |")
    lines.append("| mean | " + " | ".join(f"{valid_result['mean'][str(w)]:.2f}" for w in WEIGHTS)
                 + " |")
    rows = json.loads(test_file.read_text(encoding="utf-8"))["rows"]
    lines += ["", "| corpus | shots | seeds | names off | names on | names scrambled |",
              "|---|---:|---:|---:|---:|---:|"]

    def cell(values: List[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    for corpus in CORPORA:
        for shots in sorted({r["shots"] for r in rows}):
            group = [r for r in rows if r["corpus"] == corpus and r["shots"] == shots]
            if group:
                lines.append(f"| {corpus} | {shots} | {len(group)} | " + " | ".join(
                    cell([r[k] for r in group])
                    for k in ("names_off", "names_on", "names_scrambled")) + " |")
    zero = [r for r in rows if "zero_shot_accuracy_unseen" in r]
    if zero:
        lines += ["", "| corpus | intents without examples | their messages right "
                  "(name alone) | chance | all messages right |", "|---|---:|---:|---:|---:|"]
        for r in zero:
            lines.append(f"| {r['corpus']} (seed {r['seed']}) | {r['zero_shot_intents']} | "
                         f"{r['zero_shot_accuracy_unseen']:.1f} | "
                         f"{r['zero_shot_chance_unseen']:.1f} | "
                         f"{r['zero_shot_accuracy_all']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("valid", "test", "table"))
    parser.add_argument("--output", required=True)
    parser.add_argument("--encoder", default=None)
    parser.add_argument("--weight", type=float, default=1.0)
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--zero-shot-at", type=int, default=5)
    parser.add_argument("--zero-shot-seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--max-test", type=int, default=1000)
    args = parser.parse_args()
    if args.part == "table":  # --output: the folder holding valid.json and test.json
        folder = Path(args.output)
        print(table(folder / "valid.json", folder / "test.json"))
        return 0
    if args.encoder is None:
        args.encoder = "default" if args.part == "valid" else "minilm"
    torch.manual_seed(0)
    result = valid(args) if args.part == "valid" else test(args)
    _write(args, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
