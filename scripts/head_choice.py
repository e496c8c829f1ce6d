"""Heads compared: ``prototype``, ``matching`` and ``mixture``, each fitted as `rasa train` fits it.

One inner loop per training set (the shipped encoder, the default options; the inner loop does
not depend on the head), then each head built and refined on the adapted embeddings, as
:meth:`FewShotIntentModel.fit_embeddings` does at the end of `rasa train`. Intent accuracy with
``out_of_scope_detection`` off (the in-scope score multiplies every intent of a message by the
same factor, so it does not reorder them).

- ``valid`` (selection): the ``valid`` splits of five corpora, 5 and 10 examples per intent
  from ``train`` (seed 0), up to ``--max-valid`` valid messages (a seeded sample). The shipped
  encoder saw these corpora in meta-training, so this part chooses, it is no evidence.
- ``bots``: the two real assistants of ``RASA_BOTS`` (no encoder saw them), 10 examples per
  intent for training, all their other examples for testing (the split of
  ``scripts/retrieval_bots.py``), seeds 0, 1, 2; accuracy and per-intent F1.

The output is rewritten after every row, so an interrupted run keeps what it measured.

    nice -n 10 python scripts/head_choice.py --output docs/results/heads/head_choice.json
    python scripts/head_choice.py --table docs/results/heads/head_choice.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the real bots' loader, beside this

from retrieval_bots import real_bot, sample  # noqa: E402

from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel  # noqa: E402
from rasa_meta.training.adapt import adapt  # noqa: E402
from rasa_meta.training.corpus import IntentCorpus, data_root, load_split, sample_shots  # noqa: E402

HEADS = ("prototype", "matching", "mixture")
CORPORA = ("BANKING77", "CLINC150", "SGD", "TOP", "MULTIDOGO")
BOTS = ("financial-demo", "helpdesk-assistant")
# Catch-all intents reported by name on every bot that has them; intents the mixture head
# splits into groups are reported besides.
CATCH_ALLS = ("inform", "out_of_scope")


def cap(corpus: IntentCorpus, limit: int, seed: int) -> IntentCorpus:
    """At most ``limit`` messages of ``corpus``, a seeded sample kept in file order."""
    if len(corpus) <= limit:
        return corpus
    keep = sorted(random.Random(seed).sample(range(len(corpus)), limit))
    return IntentCorpus(corpus.name, [corpus.texts[i] for i in keep],
                        [corpus.labels[i] for i in keep], corpus.domains)


def bot_split(pairs: List[Tuple[str, str]], shots: int, seed: int) -> Tuple[list, list]:
    """``shots`` examples per intent (seeded) for training, every other example for testing:
    the draw of scripts/retrieval_bots.py, so seed 0 is the split of its real-bot table."""
    train = sample(pairs, shots, seed)
    taken = set(train)
    return train, [pair for pair in pairs if pair not in taken]


def per_intent_f1(gold: Sequence[str], pred: Sequence[str]) -> Dict[str, float]:
    """F1 (percent) of every gold intent."""
    out = {}
    for intent in sorted(set(gold)):
        tp = sum(g == intent and p == intent for g, p in zip(gold, pred))
        fp = sum(g != intent and p == intent for g, p in zip(gold, pred))
        fn = sum(g == intent and p != intent for g, p in zip(gold, pred))
        out[intent] = 100.0 * 2 * tp / max(2 * tp + fp + fn, 1)
    return out


def compare_heads(train_texts: List[str], train_labels: List[str], test_texts: List[str],
                  test_labels: List[str], f1: bool = False) -> Dict[str, object]:
    """Adapt once (the inner loop), then fit each head on the adapted embeddings; accuracy
    (and per-intent F1) of each on the test messages."""
    model = FewShotIntentModel(FewShotConfig(device="cpu", out_of_scope_detection=False))
    start = time.perf_counter()
    adapt(model, train_texts, train_labels)
    row: Dict[str, object] = {"adapt_seconds": round(time.perf_counter() - start, 1),
                              "n_train": len(train_texts), "n_test": len(test_texts)}
    train_emb = model.head.support  # the adapted embeddings of the examples, in their order
    test_emb = model.embed(test_texts)
    for kind in HEADS:
        model.config.head = kind
        start = time.perf_counter()
        model.fit_embeddings(train_emb, train_labels, train_texts)
        fit_seconds = time.perf_counter() - start
        conf, _, _ = model.predict_embeddings(test_emb)
        pred = [model.labels[i] for i in conf.argmax(1).tolist()]
        result: Dict[str, object] = {
            "accuracy": 100.0 * sum(p == g for p, g in zip(pred, test_labels)) / len(pred),
            "head_fit_seconds": round(fit_seconds, 2)}
        if kind == "mixture":
            result["split_intents"] = {k: n for k, n in model.head.n_components.items() if n > 1}
        if f1:
            result["f1"] = per_intent_f1(test_labels, pred)
        row[kind] = result
    return row


def run(ns: argparse.Namespace) -> Dict[str, object]:
    out = Path(ns.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    record: Dict[str, object] = {
        "command": "python scripts/head_choice.py " + " ".join(sys.argv[1:]),
        "cpu_cores": os.cpu_count(), "encoder": "default", "max_valid": ns.max_valid,
        "bots": [], "valid": []}

    def save() -> None:
        out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    if "bots" in ns.parts:
        for seed in ns.seeds:
            for bot in BOTS:
                train, test = bot_split(real_bot(bot), ns.bot_shots, seed)
                row = {"bot": bot, "shots": ns.bot_shots, "seed": seed, **compare_heads(
                    [t for t, _ in train], [lab for _, lab in train],
                    [t for t, _ in test], [lab for _, lab in test], f1=True)}
                record["bots"].append(row)
                save()
                print(json.dumps({k: row[k] for k in ("bot", "seed")}),
                      {h: round(row[h]["accuracy"], 1) for h in HEADS}, flush=True)
    if "valid" in ns.parts:
        for shots in ns.shots:
            for corpus in ns.corpora:
                root = data_root() / corpus
                train = sample_shots(load_split(root / "train"), shots, seed=0)
                dev = cap(load_split(root / "valid").subset(sorted(set(train.labels))),
                          ns.max_valid, 0)
                row = {"corpus": corpus, "shots": shots, "seed": 0,
                       **compare_heads(train.texts, train.labels, dev.texts, dev.labels)}
                record["valid"].append(row)
                save()
                print(corpus, shots, {h: round(row[h]["accuracy"], 1) for h in HEADS},
                      f"{row['adapt_seconds']}s", flush=True)
    return record


def table(record: Dict) -> str:
    """Markdown tables: valid accuracy per corpus and shots; the bots' accuracy and the F1 of
    their catch-all intents, mean ± std over the seeds."""
    def cell(values: List[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.1f}"
        return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"

    lines = ["| corpus (valid) | shots | " + " | ".join(HEADS) + " | intents split by mixture |",
             "|---|---:|" + "---:|" * len(HEADS) + "---:|"]
    valid = record.get("valid", [])
    for row in valid:
        split = len(row["mixture"]["split_intents"])
        lines.append(f"| {row['corpus']} | {row['shots']} | " + " | ".join(
            f"{row[h]['accuracy']:.1f}" for h in HEADS) + f" | {split} |")
    for shots in sorted({r["shots"] for r in valid}):
        group = [r for r in valid if r["shots"] == shots]
        lines.append(f"| mean of {len(group)} | {shots} | " + " | ".join(
            f"{statistics.mean(r[h]['accuracy'] for r in group):.2f}" for h in HEADS) + " | |")
    bots = record.get("bots", [])
    if bots:
        lines += ["", "| bot | seeds | test messages | " + " | ".join(HEADS) + " |",
                  "|---|---:|---:|" + "---:|" * len(HEADS)]
        for bot in BOTS:
            group = [r for r in bots if r["bot"] == bot]
            if group:
                lines.append(f"| {bot} | {len(group)} | {group[0]['n_test']} | " + " | ".join(
                    cell([r[h]["accuracy"] for r in group]) for h in HEADS) + " |")
        lines += ["", "| bot | intent | mixture components (per seed) | F1 " +
                  " | F1 ".join(HEADS) + " |", "|---|---|---|" + "---:|" * len(HEADS)]
        for bot in BOTS:
            group = [r for r in bots if r["bot"] == bot]
            split = {i for r in group for i in r["mixture"]["split_intents"]}
            known = group[0]["prototype"]["f1"]
            intents = [i for i in sorted(set(CATCH_ALLS) | split) if i in known]
            for intent in intents:
                ks = ", ".join(str(r["mixture"]["split_intents"].get(intent, 1)) for r in group)
                lines.append(f"| {bot} | `{intent}` | {ks} | " + " | ".join(
                    cell([r[h]["f1"][intent] for r in group]) for h in HEADS) + " |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--output", default="docs/results/heads/head_choice.json")
    p.add_argument("--parts", nargs="+", choices=("bots", "valid"), default=["bots", "valid"])
    p.add_argument("--corpora", nargs="+", default=list(CORPORA))
    p.add_argument("--shots", nargs="+", type=int, default=[5, 10])
    p.add_argument("--max-valid", type=int, default=600)
    p.add_argument("--bot-shots", type=int, default=10)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--table", metavar="JSON", help="print the tables of a finished run")
    ns = p.parse_args()
    if ns.table:
        print(table(json.loads(Path(ns.table).read_text(encoding="utf-8"))))
        return 0
    run(ns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
