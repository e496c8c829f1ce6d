"""Choose the inbox's clustering (linkage, distance threshold) and low-confidence rule on data.

The inbox's situation, simulated on labelled corpora: a bot is trained (as `rasa train`
trains MetaIntentClassifier: inner loop, then the head) on 10 examples of half of a corpus's
intents; its traffic is messages of those intents, of ``--missing`` intents it lacks, and
CLINC150's out-of-scope messages. Traffic it does not handle (FallbackClassifier at 0.4 /
0.05, or confidence below the low-confidence bound) is clustered with its encoder, and each
missing intent is scored as in the inbox's target: the share of its messages (all of them,
also those the bot confidently mislabelled) in one cluster of >= 3 texts that is >= 80 % that
intent. The grid is scored on `valid`; the chosen setting is reported on `test`. Thresholds
are fixed, or scaled: a factor times the bot's intent scale (how broad its own intents are).

Selection: the settings within one standard error (over runs) of the best mean coverage on
valid, at the best low-confidence bound, are equally good on the corpora. With
``--bot-model``, example_bot's constructed traffic (tests/data/inbox_traffic.yml) is parsed
by that trained model and clustered at every setting too: among the equally good settings,
the one that keeps its missing intent (loyalty programme) in one cluster best is chosen,
then the one putting the fewest out-of-scope messages into clusters. Its second topic
(price match) is never used to choose, only reported.

    python scripts/inbox_clustering.py --encoder CLINC150=runs/loo/CLINC150 \
        --encoder BANKING77=runs/loo/BANKING77 --encoder TOP=runs/loo/TOP \
        --encoder MULTIDOGO=runs/loo/MULTIDOGO --seeds 0 1 \
        --bot-model example_bot/models/<model>.tar.gz \
        --output docs/results/inbox/inbox_clustering.json

Each corpus is read with an encoder meta-trained without it (the leave-one-out
checkpoints), so that its intents are new to the encoder as a bot's missing intents are.
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rasa_meta.tooling.evaluation import sample_shots  # noqa: E402
from rasa_meta.tooling.inbox_groups import (  # noqa: E402
    DEFAULT_MIN_CLUSTER_SIZE,
    LINKAGES,
    agglomerative,
    intent_scale,
    intent_spread,
    prototypes,
    summarise_clusters,
)
from rasa_meta.training.corpus import data_root, load_split  # noqa: E402
from research.clustering import score_groups  # noqa: E402

THRESHOLDS = [round(t, 2) for t in np.arange(0.30, 0.951, 0.05)]
# thresholds relative to the bot's own intents: factor x their typical spread
FACTORS = [round(f, 2) for f in np.arange(0.8, 2.21, 0.1)]
LOW_CONFIDENCE = [0.0, 0.5, 0.6, 0.7, 0.8]  # 0.0: only what fell back
FALLBACK_THRESHOLD, AMBIGUITY = 0.4, 0.05
IN_SCOPE_PER_INTENT = 5
MAX_OOS = 200
TRAFFIC = Path(__file__).resolve().parent.parent / "tests" / "data" / "inbox_traffic.yml"


def simulate(corpus: str, encoder: str, seed: int, n_missing: int, root: Path) -> Dict:
    """Fit the bot once, parse valid and test traffic; returns per-split predictions and
    embeddings (as lists for JSON-free reuse)."""
    from rasa_meta.runtime.model import FewShotConfig, FewShotIntentModel
    from rasa_meta.training.adapt import adapt

    train = load_split(root / corpus / "train")
    intents = sorted(set(train.labels))
    rng = random.Random(seed)
    rng.shuffle(intents)
    bot_intents = intents[: len(intents) // 2]
    missing = intents[len(intents) // 2:][:n_missing]
    shots = sample_shots(train.subset(bot_intents), 10, seed)
    model = FewShotIntentModel(FewShotConfig(encoder=encoder, device="cpu", random_seed=seed))
    started = time.perf_counter()
    adapt(model, shots.texts, shots.labels)
    fit_seconds = time.perf_counter() - started
    head = model.head
    scale = intent_scale(head.support.numpy(), head.support_targets.numpy(), len(head.labels))
    out: Dict = {"corpus": corpus, "encoder": encoder, "seed": seed,
                 "bot_intents": len(bot_intents), "missing_intents": missing,
                 "fit_seconds": round(fit_seconds, 1), "intent_scale": round(scale, 4),
                 "labels": list(head.labels), "support": head.support.numpy(),
                 "targets": head.support_targets.numpy(), "splits": {}}
    for split in ("valid", "test"):
        data = load_split(root / corpus / split)
        by = data.by_intent()
        texts: List[str] = []
        groups: List = []
        kinds: List[str] = []
        for intent in bot_intents:
            for text in by.get(intent, [])[:IN_SCOPE_PER_INTENT]:
                texts.append(text)
                groups.append(None)
                kinds.append(intent)
        for intent in missing:
            for text in by.get(intent, []):
                texts.append(text)
                groups.append(intent)
                kinds.append("missing")
        oos = load_split(root / "CLINC150" / "oos" / split).texts
        for text in random.Random(seed).sample(oos, min(MAX_OOS, len(oos))):
            texts.append(text)
            groups.append(None)
            kinds.append("oos")
        emb = model.embed(texts)
        probs, _, _ = model.predict_embeddings(emb)
        top2 = probs.topk(2, dim=1)
        out["splits"][split] = {
            "texts": texts, "groups": groups, "kinds": kinds,
            "confidence": top2.values[:, 0].numpy(),
            "margin": (top2.values[:, 0] - top2.values[:, 1]).numpy(),
            "predicted": [model.labels[i] for i in top2.indices[:, 0].tolist()],
            "embeddings": emb.numpy(),
        }
    return out


def unhandled_mask(conf: np.ndarray, margin: np.ndarray, low: float) -> np.ndarray:
    return (conf < max(low, FALLBACK_THRESHOLD)) | (margin < AMBIGUITY)


def reported_clusters(emb: np.ndarray, unhandled: np.ndarray, linkage: str,
                      threshold: float) -> np.ndarray:
    """Cluster id of each message; handled messages and clusters below the report's minimum
    size get ids of their own (they are in no reported cluster)."""
    idx = np.flatnonzero(unhandled)
    ids = np.full(len(unhandled), -1)
    if len(idx):
        ids[idx] = agglomerative(emb[idx], threshold, linkage)
    sizes = np.bincount(ids[idx]) if len(idx) else np.zeros(0, int)
    reported = np.array([i >= 0 and sizes[i] >= DEFAULT_MIN_CLUSTER_SIZE for i in ids])
    return np.where(reported, ids, -2 - np.arange(len(ids)))


def score(split: Dict, low: float, linkage: str, threshold: float) -> Dict:
    """The inbox's target on one simulated split."""
    unhandled = unhandled_mask(split["confidence"], split["margin"], low)
    final = reported_clusters(split["embeddings"], unhandled, linkage, threshold)
    reported = final >= 0
    result = score_groups(final, split["groups"])
    kinds = np.array(split["kinds"])
    in_scope = (kinds != "missing") & (kinds != "oos")
    correct = in_scope & (np.array(split["predicted"]) == kinds)
    oos = kinds == "oos"
    return {
        "mean_coverage": result.mean_coverage,
        "recovered": result.recovered(0.8),
        "clusters": int(len(set(final[reported].tolist()))),
        # the cost of a higher low-confidence bound: correct answers the author re-reads
        "correct_in_scope_flagged": float(unhandled[correct].mean()) if correct.any() else 0.0,
        "oos_in_clusters": float(reported[oos].mean()) if oos.any() else 0.0,
    }


def bot_traffic(model_path: str) -> Dict:
    """example_bot's constructed traffic parsed by a trained model, as the inbox parses it."""
    import yaml

    from rasa_meta.tooling.inbox import load_bot_model

    traffic = yaml.safe_load(TRAFFIC.read_text(encoding="utf-8"))
    oos_file = TRAFFIC.parents[2] / "example_bot" / "tests" / "oos_messages.txt"
    parts = [(traffic["missing_intent_name"], traffic["missing_intent"]),
             (traffic["check_intent_name"], traffic["check_intent"]),
             ("oos", traffic["out_of_scope"]
              + [t for t in oos_file.read_text(encoding="utf-8").splitlines() if t.strip()]),
             ("in_scope", traffic["in_scope"] + traffic["openers"] + traffic["closers"])]
    texts = [t for _, group in parts for t in group]
    kinds = [k for k, group in parts for _ in group]
    bot = load_bot_model(model_path)
    parsed = bot.parse(texts, progress=False)
    head = bot.classifier.model.head
    return {
        "model": model_path, "texts": texts, "kinds": kinds,
        "unhandled_at_fallback": parsed.fell_back,
        "confidence": parsed.confidence, "embeddings": parsed.embeddings,
        "intent_scale": intent_scale(head.support.numpy(), head.support_targets.numpy(),
                                     len(head.labels)),
        "topics": [traffic["missing_intent_name"], traffic["check_intent_name"]],
    }


def score_bot(bot: Dict, low: float, linkage: str, threshold: float) -> Dict:
    """Coverage of each constructed topic (all its messages), and out-of-scope messages put
    into reported clusters."""
    unhandled = bot["unhandled_at_fallback"] | (bot["confidence"] < low)
    final = reported_clusters(bot["embeddings"], unhandled, linkage, threshold)
    kinds = np.array(bot["kinds"])
    groups = [k if k in bot["topics"] else None for k in bot["kinds"]]
    result = score_groups(final, groups)
    out = {topic: round(result.coverage[topic], 4) for topic in bot["topics"]}
    out["oos_in_clusters"] = round(float((final[kinds == "oos"] >= 0).mean()), 4)
    return out


# Which clusters the report offers as more examples of an existing intent: the mean
# similarity of their messages to the intent's prototype must reach this quantile of the
# intent's own leave-one-out similarities ("centroid": the centroid against the lowest).
EXISTING_RULES = ["centroid", 0.0, 0.1, 0.25, 0.5]


def score_existing(runs: List[Dict], split: str, low: float, linkage: str, factor: float,
                   rule) -> Dict:
    """Precision and recall of the existing-intent suggestion at one clustering setting. A
    cluster truly belongs to a bot intent when at least half its messages are that intent's;
    a suggestion is right when it names that intent."""
    right = wrong = positives = 0
    for r in runs:
        sp = r["splits"][split]
        idx = np.flatnonzero(unhandled_mask(sp["confidence"], sp["margin"], low))
        if len(idx) == 0:
            continue
        ids = agglomerative(sp["embeddings"][idx], factor * r["intent_scale"], linkage)
        labels = r["labels"]
        protos = prototypes(r["support"], r["targets"], len(labels))
        spread = intent_spread(r["support"], r["targets"], len(labels),
                               0.0 if rule == "centroid" else float(rule))
        clusters, _ = summarise_clusters(sp["embeddings"][idx], ids, [1] * len(idx),
                                         [[str(i)] for i in idx], protos, spread, labels)
        for c in clusters:
            kinds = Counter(sp["kinds"][idx[m]] for m in c.members)
            top, n = kinds.most_common(1)[0]
            truth = top if top not in ("missing", "oos") and 2 * n >= len(c.members) else None
            positives += truth is not None
            k = labels.index(c.nearest_intent)
            suggested = c.similarity >= spread[k] if rule == "centroid" else c.near_existing
            if suggested:
                right += truth == c.nearest_intent
                wrong += truth != c.nearest_intent
    precision = right / (right + wrong) if right + wrong else 0.0
    recall = right / positives if positives else 0.0
    f05 = (1.25 * precision * recall / (0.25 * precision + recall)) if precision + recall else 0.0
    return {"suggested": right + wrong, "right": right, "in_scope_clusters": positives,
            "precision": round(precision, 4), "recall": round(recall, 4), "f0.5": round(f05, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", action="append", default=[], metavar="CORPUS=ENCODER",
                        help="A corpus and the encoder its bot uses (repeatable).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--missing", type=int, default=8,
                        help="Intents the simulated bot lacks (its traffic's new topics).")
    parser.add_argument("--bot-model", default=None,
                        help="A trained example_bot model: also score its constructed traffic.")
    parser.add_argument("--cache", default=None,
                        help="Keep the simulated bots' parses here (pickle) and reuse them.")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--output", default="docs/results/inbox/inbox_clustering.json")
    ns = parser.parse_args()
    root = Path(ns.data_root) if ns.data_root else data_root()
    specs = [s.split("=", 1) for s in ns.encoder] or [["CLINC150", "default"]]
    cache = Path(ns.cache) if ns.cache else None
    key = [specs, ns.seeds, ns.missing, "v2"]
    runs: List[Dict] = []
    if cache is not None and cache.is_file():
        stored = pickle.loads(cache.read_bytes())
        if stored["key"] == key:
            runs = stored["runs"]
    if not runs:
        for corpus, encoder in specs:
            for seed in ns.seeds:
                print(f"{corpus} seed {seed}: fitting the bot ({encoder})", flush=True)
                runs.append(simulate(corpus, encoder, seed, ns.missing, root))
        if cache is not None:
            cache.write_bytes(pickle.dumps({"key": key, "runs": runs}))
    bot = bot_traffic(ns.bot_model) if ns.bot_model else None
    rules = [("fixed", t) for t in THRESHOLDS] + [("scaled", f) for f in FACTORS]
    grid = []
    for low in LOW_CONFIDENCE:
        for linkage in LINKAGES:
            for rule, value in rules:
                row: Dict = {"low_confidence": low, "linkage": linkage, "rule": rule,
                             "value": value}
                for split in ("valid", "test"):
                    scores = [
                        score(r["splits"][split], low, linkage,
                              value if rule == "fixed" else value * r["intent_scale"])
                        for r in runs
                    ]
                    row[split] = {k: round(float(np.mean([s[k] for s in scores])), 4)
                                  for k in scores[0]}
                    per_run = [s["mean_coverage"] for s in scores]
                    row[split]["per_run"] = [round(c, 4) for c in per_run]
                    row[split]["standard_error"] = round(
                        float(np.std(per_run, ddof=1) / np.sqrt(len(per_run))), 4
                    ) if len(per_run) > 1 else 0.0
                if bot is not None:
                    row["example_bot"] = score_bot(
                        bot, low, linkage,
                        value if rule == "fixed" else min(value * bot["intent_scale"], 1.5))
                grid.append(row)
    best = max(grid, key=lambda r: (round(r["valid"]["mean_coverage"], 3),
                                    -r["low_confidence"], -r["value"]))
    bar = best["valid"]["mean_coverage"] - best["valid"]["standard_error"]
    plateau = [r for r in grid if r["low_confidence"] == best["low_confidence"]
               and r["valid"]["mean_coverage"] >= bar]
    if bot is not None:
        topic = bot["topics"][0]
        chosen = max(plateau, key=lambda r: (r["example_bot"][topic],
                                             -r["valid"]["oos_in_clusters"]))
    else:
        chosen = min(plateau, key=lambda r: r["valid"]["oos_in_clusters"])
    best_of = {
        f"{rule}/{linkage}": max(
            (r for r in grid if r["rule"] == rule and r["linkage"] == linkage
             and r["low_confidence"] == best["low_confidence"]),
            key=lambda r: r["valid"]["mean_coverage"])
        for rule in ("fixed", "scaled") for linkage in LINKAGES
    }
    existing = []
    if chosen["rule"] == "scaled":
        for rule in EXISTING_RULES:
            existing.append({"rule": rule, **{
                split: score_existing(runs, split, chosen["low_confidence"], chosen["linkage"],
                                      chosen["value"], rule) for split in ("valid", "test")}})
    # a wrong suggestion puts foreign examples into an intent: precision weighs double (F0.5)
    existing_chosen = max(existing, key=lambda e: e["valid"]["f0.5"]) if existing else None
    report = {
        "command": "python " + " ".join(sys.argv),
        "protocol": " ".join(__doc__.split("\n\n")[1].split()),
        "selection": " ".join(__doc__.split("\n\n")[2].split()),
        "fallback": {"threshold": FALLBACK_THRESHOLD, "ambiguity_threshold": AMBIGUITY},
        "min_cluster_size": DEFAULT_MIN_CLUSTER_SIZE,
        "runs": [{k: v for k, v in r.items() if k not in ("splits", "support", "targets")}
                 for r in runs],
        "example_bot": ({"model": bot["model"], "intent_scale": round(bot["intent_scale"], 4),
                         "topics": bot["topics"]} if bot is not None else None),
        "best_on_valid": best,
        "one_standard_error_bar": round(bar, 4),
        "equally_good_settings": len(plateau),
        "chosen": chosen,
        "best_per_rule_and_linkage": best_of,
        "existing_intent_rule": {"candidates": existing, "chosen": existing_chosen},
        "grid": grid,
    }
    Path(ns.output).parent.mkdir(parents=True, exist_ok=True)
    Path(ns.output).write_text(json.dumps(report, indent=1), encoding="utf-8")
    fields = ("low_confidence", "linkage", "rule", "value")
    print("best on valid:", json.dumps({k: best[k] for k in fields}), best["valid"])
    print(f"{len(plateau)} settings within one standard error (>= {bar:.3f})")
    print("chosen:", json.dumps({k: chosen[k] for k in fields}))
    for split in ("valid", "test"):
        print(f"  {split}", {k: v for k, v in chosen[split].items() if k != "per_run"})
    if bot is not None:
        print("  example_bot", chosen["example_bot"])
    for e in existing:
        print(f"existing-intent rule {e['rule']!s:<8} valid {e['valid']}  test {e['test']}")
    for name, row in best_of.items():
        print(f"{name:<18} {row['value']:.2f}  valid {row['valid']['mean_coverage']:.3f}  "
              f"test {row['test']['mean_coverage']:.3f}  "
              f"oos in clusters {row['valid']['oos_in_clusters']:.2f}")

if __name__ == "__main__":
    main()
