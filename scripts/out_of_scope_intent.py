"""A bot's own ``out_of_scope`` intent: as one more intent (option off) or as the out-of-scope
label of the in-scope score (``out_of_scope_intent: out_of_scope``), fitted as `rasa train`
fits them (inner loop, head, in-scope calibration), the shipped default encoder, the default
config otherwise.

- ``bots``: the two real assistants of RASA_BOTS (never seen by the encoder): 10 examples per
  intent for training (``out_of_scope`` included), every other example for testing; seeds 0,
  1, 2.
- ``clinc``: CLINC150's 150 intents at 10 examples each from ``train`` plus an
  ``out_of_scope`` intent of 10 or 50 ``oos`` training examples, scored on the ``valid``
  split (a seeded sample of its in-scope messages) and its ``oos`` messages. The shipped
  encoder saw CLINC150 in meta-training: not held-out evidence.

The inner loop does not read the option, so each task adapts the encoder once and fits the
head and in-scope estimator twice, off and on, from the same embeddings (what `rasa train`
would fit with either setting). Measured per task: intent accuracy over every test message;
for out-of-scope test messages, the share handled as out of scope (top intent
``out_of_scope``, or its confidence under the FallbackClassifier threshold: either way the bot
does not answer an in-scope intent) and the share ranked ``out_of_scope``; in-scope accuracy
at the threshold (right top intent at or above it); AUROC of the in-scope probability between
in-scope and out-of-scope messages; thresholds 0.3 and 0.5.

    nice -n 10 python scripts/out_of_scope_intent.py \\
        --output docs/results/out_of_scope/out_of_scope_intent.json
    python scripts/out_of_scope_intent.py \\
        --markdown docs/results/out_of_scope/out_of_scope_intent.json
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

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the real bots' loader, beside this

from retrieval_bots import real_bot, sample  # noqa: E402

from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel  # noqa: E402
from rasa_meta.training.adapt import adapt  # noqa: E402
from rasa_meta.training.corpus import data_root, load_split, sample_shots  # noqa: E402
from rasa_meta.training.metrics import auroc  # noqa: E402

OOS = "out_of_scope"
BOTS = ("financial-demo", "helpdesk-assistant")
THRESHOLDS = (0.3, 0.5)

Pairs = List[Tuple[str, str]]


def scores(model: FewShotIntentModel, emb: torch.Tensor, texts: Sequence[str],
           gold: Sequence[str]) -> Dict[str, object]:
    """The metrics of one fitted model on embedded test messages (gold ``out_of_scope``: an
    out-of-scope message)."""
    with torch.inference_mode():
        conf, in_scope, _ = model.predict_embeddings(emb)
        conf, in_scope = model.withhold_unreadable(texts, conf, in_scope)
    top = conf.max(1)
    pred = [model.labels[i] for i in top.indices.tolist()]
    top_conf = top.values.tolist()
    p_in = in_scope.tolist()
    # the best in-scope intent's confidence: what an answer rests on, with the option on or
    # off (off, the in-scope probability also counts the out_of_scope intent as in scope)
    in_cols = [i for i, lab in enumerate(model.labels) if lab != OOS]
    best_in = conf[:, in_cols].max(1).values.tolist()
    is_oos = [g == OOS for g in gold]
    n_oos, n_in = sum(is_oos), len(gold) - sum(is_oos)

    def separation(score: List[float]) -> float:
        return auroc([s for s, o in zip(score, is_oos) if not o],
                     [s for s, o in zip(score, is_oos) if o])

    out: Dict[str, object] = {
        "intent_accuracy": sum(p == g for p, g in zip(pred, gold)) / len(gold),
        "in_scope_intent_accuracy": sum(
            p == g for p, g, o in zip(pred, gold, is_oos) if not o) / n_in,
        "oos_ranked_out_of_scope": sum(p == OOS for p, o in zip(pred, is_oos) if o) / n_oos,
        "auroc": separation(p_in),
        "auroc_best_in_scope_confidence": separation(best_in),
        # the rows whose in-scope confidences sum past 1 (the out-of-scope label gets 0)
        "rows_sum_above_1": float((conf.sum(1) > 1 + 1e-5).float().mean()),
        "n_in_scope": n_in, "n_out_of_scope": n_oos,
    }
    for t in THRESHOLDS:
        out[f"in_scope_accuracy@{t}"] = sum(
            p == g and c >= t for p, g, c, o in zip(pred, gold, top_conf, is_oos) if not o) / n_in
        out[f"oos_handled@{t}"] = sum(
            p == OOS or c < t for p, c, o in zip(pred, top_conf, is_oos) if o) / n_oos
    return out


def fitted(train: Pairs, seed: int) -> Tuple[FewShotIntentModel, float]:
    """A model adapted to ``train`` as `rasa train` adapts it, the option off; seconds."""
    config = FewShotConfig(encoder="default", device="cpu", random_seed=seed,
                           out_of_scope_intent=None)
    model = FewShotIntentModel(config)
    start = time.perf_counter()
    adapt(model, [t for t, _ in train], [lab for _, lab in train])
    return model, round(time.perf_counter() - start, 1)


def evaluate(train: Pairs, test: Pairs, seed: int) -> Dict[str, Dict[str, object]]:
    """One inner loop on ``train``; the head and in-scope estimator fitted with the option off
    and on, both scored on ``test``; and, for reference, the bot without its out_of_scope
    intent (its examples left out of training, its own inner loop)."""
    texts, labels = [t for t, _ in train], [lab for _, lab in train]
    test_texts, gold = [t for t, _ in test], [lab for _, lab in test]
    model, seconds = fitted(train, seed)
    with torch.inference_mode():
        train_emb, test_emb = model.embed(texts), model.embed(test_texts)
    rows = {"off": {**scores(model, test_emb, test_texts, gold), "n_train": len(train),
                    "adapt_seconds": seconds}}
    model.config.out_of_scope_intent = OOS
    model.fit_embeddings(train_emb, labels, texts)
    rows["on"] = {**scores(model, test_emb, test_texts, gold), "n_train": len(train)}
    without = [(t, lab) for t, lab in train if lab != OOS]
    model, seconds = fitted(without, seed)
    with torch.inference_mode():
        test_emb = model.embed(test_texts)
    rows["no out_of_scope intent"] = {**scores(model, test_emb, test_texts, gold),
                                      "n_train": len(without), "adapt_seconds": seconds}
    return rows


def bots(seeds: Sequence[int], shots: int) -> List[Dict[str, object]]:
    rows = []
    for bot in BOTS:
        pairs = real_bot(bot)
        for seed in seeds:
            train = sample(pairs, shots, seed)
            taken = set(train)
            test = [pair for pair in pairs if pair not in taken]
            for option, result in evaluate(train, test, seed).items():
                row = {"task": bot, "seed": seed, "shots": shots, "option": option, **result}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def clinc(oos_shots: Sequence[int], shots: int, max_valid: int, seed: int) -> List[Dict]:
    root = data_root() / "CLINC150"
    intents = sample_shots(load_split(root / "train"), shots, seed)
    oos_train = load_split(root / "oos" / "train").texts
    valid = load_split(root / "valid")
    keep = sorted(random.Random(seed).sample(range(len(valid)), min(max_valid, len(valid))))
    test = [(valid.texts[i], valid.labels[i]) for i in keep]
    test += [(t, OOS) for t in load_split(root / "oos" / "valid").texts]
    rows = []
    for k in oos_shots:
        train = list(zip(intents.texts, intents.labels))
        train += [(t, OOS) for t in random.Random(seed).sample(oos_train, k)]
        for option, result in evaluate(train, test, seed).items():
            row = {"task": f"CLINC150 + {k} oos", "seed": seed, "shots": shots,
                   "oos_examples": k, "option": option, **result}
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def markdown(rows: List[Dict]) -> str:
    """Mean over seeds per task and option (min-max over seeds where there are several)."""
    metrics = [("intent_accuracy", "intent acc."),
               ("in_scope_accuracy@0.3", "in-scope acc. @0.3"),
               ("oos_handled@0.3", "OOS handled @0.3"),
               ("in_scope_accuracy@0.5", "in-scope acc. @0.5"),
               ("oos_handled@0.5", "OOS handled @0.5"),
               ("oos_ranked_out_of_scope", "OOS ranked out_of_scope"),
               ("auroc", "AUROC p(in scope)"),
               ("auroc_best_in_scope_confidence", "AUROC best in-scope conf.")]
    out = ["| task | option | " + " | ".join(name for _, name in metrics) + " |",
           "|---|---|" + "---:|" * len(metrics)]
    tasks: Dict[Tuple[str, str], List[Dict]] = {}
    for row in rows:
        tasks.setdefault((row["task"], row["option"]), []).append(row)
    for (task, option), group in tasks.items():
        cells = []
        for key, _ in metrics:
            values = [100 * r[key] for r in group]
            cell = f"{statistics.mean(values):.1f}"
            if len(values) > 1:
                cell += f" ({min(values):.0f}–{max(values):.0f})"
            cells.append(cell)
        seeds = f", {len(group)} seeds" if len(group) > 1 else ""
        out.append(f"| {task}{seeds} | {option} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", nargs="+", default=["bots", "clinc"], choices=["bots", "clinc"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--shots", type=int, default=10)
    p.add_argument("--oos-shots", nargs="+", type=int, default=[10, 50])
    p.add_argument("--max-valid", type=int, default=1500,
                   help="in-scope CLINC150 valid messages scored (a seeded sample)")
    p.add_argument("--output", default="docs/results/out_of_scope/out_of_scope_intent.json")
    p.add_argument("--markdown", metavar="JSON", help="print the table of a finished run")
    ns = p.parse_args()
    if ns.markdown:
        print(markdown(json.loads(Path(ns.markdown).read_text())["rows"]))
        return 0
    torch.manual_seed(0)
    start = time.perf_counter()
    rows: List[Dict] = []
    if "bots" in ns.parts:
        rows += bots(ns.seeds, ns.shots)
    if "clinc" in ns.parts:
        rows += clinc(ns.oos_shots, ns.shots, ns.max_valid, ns.seeds[0])
    out = Path(ns.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": "python " + " ".join(sys.argv), "cpu_cores": os.cpu_count(),
              "torch_threads": torch.get_num_threads(),
              "seconds": round(time.perf_counter() - start, 1), "rows": rows}
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
